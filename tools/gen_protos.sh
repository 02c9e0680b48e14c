#!/usr/bin/env bash
# Generates the Python stubs of protos/ into OUT (default gen/python).
# The vendored google/rpc protos are imported from googleapis-common-protos, not generated.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gen/python}
rm -rf "$OUT/memos"
mkdir -p "$OUT"
.venv/bin/python -m grpc_tools.protoc -I protos -I third_party/googleapis \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  $(cd protos && find memos -name '*.proto' | sort)
