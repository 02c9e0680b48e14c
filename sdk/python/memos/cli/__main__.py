"""``python -m memos.cli``."""

import sys

from memos.cli.app import main

sys.exit(main())
