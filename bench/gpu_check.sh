#!/usr/bin/env bash
# The GPU check, for a GPU machine with no network whose own Python has a CUDA torch, onnxruntime and OpenCV.
#
#   bash bench/gpu_check.sh [gpu_check.py options]     # on the GPU machine; figures in $OUT/gpu_check.json
#   bash bench/gpu_check.sh --pack                     # beforehand, on a networked machine: fills bench/wheels
#
# What travels with the tree: the model files (weights/, git-ignored: carry them), the wheels the machine's
# Python may lack (bench/wheels, git-ignored: carry it), and the test data (BLURCAST_DATA; default
# ../shared/data). Steps: (1) the test suite with CUDA required (BLURCAST_REQUIRE_CUDA=1: the CUDA cases fail
# instead of skipping; backend auto = torch on CUDA), junit XML kept; (2) bench/gpu_check.py: parity, 1080p
# and 4K single stream, 1080p30 streams held; one JSON with the test summary folded in.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=bench/wheels
# Pure-Python packages the project imports that a CUDA image's Python usually lacks.
NEEDED="tinydb textual rich onnx pytest pyvirtualcam"

if [ "${1:-}" = "--pack" ]; then
  mkdir -p "$WHEELS"
  $PY -m pip download -q --only-binary=:all: --python-version "${PACK_PYTHON:-3.11}" -d "$WHEELS" $NEEDED
  ls "$WHEELS"
  exit 0
fi

OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
missing=""
for pkg in $NEEDED; do $PY -c "import $pkg" 2>/dev/null || missing="$missing $pkg"; done
if [ -n "$missing" ]; then
  if [ -d "$WHEELS" ]; then
    echo "installing from $WHEELS:$missing"
    $PY -m pip install -q --no-index --find-links "$WHEELS" $missing || echo "warning: could not install$missing"
  else
    echo "warning: missing$missing and no $WHEELS (run 'bash bench/gpu_check.sh --pack' where there is network)"
  fi
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name(0))" \
  || echo "warning: no CUDA here: the figures will be the CPU's"

export BLURCAST_WEIGHTS=${BLURCAST_WEIGHTS:-$PWD/weights}
export BLURCAST_DATA=${BLURCAST_DATA:-$PWD/../shared/data}
export BLURCAST_HOME=$(mktemp -d)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# 1. The suite on CUDA. The UI tests need a terminal and tmux that a GPU box may lack: TESTS narrows it.
BLURCAST_REQUIRE_CUDA=1 timeout "${TEST_TIMEOUT:-300}" $PY -m pytest -q -p no:cacheprovider \
  --junitxml="$OUT/pytest.xml" ${TESTS:-tests} 2>&1 | tail -25
echo "pytest exit: ${PIPESTATUS[0]}"

# 2. The figures (written after each section, so a timeout keeps what was measured).
timeout "${CHECK_TIMEOUT:-420}" $PY bench/gpu_check.py --out "$OUT/gpu_check.json" --junit "$OUT/pytest.xml" "$@"
echo "figures: $OUT/gpu_check.json"
