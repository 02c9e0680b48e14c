#!/usr/bin/env bash
# buf breaking against main: on a branch, against main; on main itself (CI),
# against the previous commit. A baseline without protos is nothing to break.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo "")
if [ -n "${BUF_BREAKING_AGAINST:-}" ]; then
  ref="$BUF_BREAKING_AGAINST"
elif [ "$branch" != "main" ] && git rev-parse --verify -q main >/dev/null; then
  ref=main
else
  ref=HEAD~1
fi
if ! git rev-parse --verify -q "$ref" >/dev/null || ! git cat-file -e "$ref:buf.yaml" 2>/dev/null; then
  echo "buf breaking: $ref has no buf module yet; nothing to compare"
  exit 0
fi
echo "buf breaking: against $ref"
"$BUF" breaking --against ".git#ref=$(git rev-parse "$ref")"
