#!/usr/bin/env bash
# Sets up a fresh machine for memos: system packages, .venv with every Python
# dependency, node tools (buf), and the source tree on the venv's path.
# Safe to run again; each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# Debian packages the suite needs (services, test tooling).
# libdeflate0: the fast crc32 actmem checks caches with (zlib otherwise).
APT_PACKAGES=(ca-certificates redis-server openjdk-17-jre-headless maven libdeflate0)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: installing Python dependencies (first run downloads torch: a few minutes)"
.venv/bin/python -m pip install -q -r requirements/dev.txt

# The repository is the package root: gen/python holds the generated stubs
# (namespace package memos.*), sdk/python the client and MemOS facade.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n%s\n%s\n' "$PWD" "$PWD/gen/python" "$PWD/sdk/python" > "$site/memos-dev.pth"
ln -sf ../../tools/memos .venv/bin/memos   # the memos CLI (docs/cli.md)

if command -v npm >/dev/null 2>&1; then
  echo "setup: installing node tools (buf)"
  npm ci --silent --no-audit --no-fund
else
  echo "setup: npm not found; installing nodejs and npm"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
  npm ci --silent --no-audit --no-fund
fi
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "setup: go not found; installing golang-go (older Go fetches the toolchain clients/go/go.mod asks for)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go
fi
echo "setup: installing client tools (protoc-gen-go, protoc-gen-go-grpc, Go modules, clients/ts npm packages)"
tools/gen_clients.sh --tools
echo "setup: helm (built with go install) and kubernetes-validate for the chart test"
tools/chart_test.sh --install-only
echo "setup: exporting the bundled embedder to ONNX once (shared by every data directory; textmem would do it at its first start)"
.venv/bin/python -c "from services.textmem.embedders import OnnxEmbedder; print('setup: ONNX embedder at', OnnxEmbedder(quantize='int8').onnx_path)" \
  || echo "setup: ONNX export failed; textmem will run the embedder on torch"
echo "setup: done"
