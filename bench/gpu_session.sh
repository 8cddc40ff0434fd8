#!/usr/bin/env bash
# One GPU-box session in one call (a box with a CUDA torch, onnxruntime and OpenCV, but no network, no FFmpeg and
# no shared data): the CUDA tests, network parity and single-stream figures (bench/gpu_check.py), the corpus
# through the product's engine on the GPU (file and live) with the CPU backend beside it (bench/gpu_corpus.py),
# a 1080p crowd's file-mode stages (bench/profile_file.py) and the 1080p30 streams one GPU holds.
#
#   bash bench/gpu_session.sh --pack    # here, with network and ../shared: fills .devcarry/ (~55 MiB, git-ignored)
#   bash bench/gpu_session.sh           # there, with .devcarry carried; everything lands in $OUT (or /tmp/gpu_out)
#
# Each step has its own timeout (T_TESTS, T_CHECK, T_CORPUS, T_CPU, T_PROFILE, T_STREAMS; 565 s in all, under one
# call's 600 s) and writes its figures as it goes, so a step that runs long loses only itself. docs/gpu.md has each
# run's figures and what they led to.
set -u
cd "$(dirname "$0")/.."
CARRY=.devcarry
DATA=${BLURCAST_DATA:-../shared/data}

if [ "${1:-}" = "--pack" ]; then
  set -e
  rm -rf "$CARRY" && mkdir -p "$CARRY"/{weights,whl,tools} "$CARRY"/data/{video_hamilton,recognition_face_recognition/examples}
  cp weights/*.onnx weights/manifest.json "$CARRY/weights/"   # the pinned files (`blurcast weights`), not .dynamic
  cp "$DATA"/video_hamilton/{short_hamilton_clip.mp4,gt.json} "$CARRY/data/video_hamilton/"
  cp "$DATA"/recognition_face_recognition/examples/lin-manuel-miranda.png "$CARRY/data/recognition_face_recognition/examples/"
  cp -r "$DATA"/recognition_faceapi_bbt "$CARRY/data/"
  mkdir -p "$CARRY/data/detection_widerface_val" && cp -r "$DATA"/detection_widerface_val/images "$CARRY/data/detection_widerface_val/"
  cp "$DATA"/../tools/score_video.py "$CARRY/tools/"
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$CARRY/whl" "tinydb==$(python -c "import tinydb; print(tinydb.__version__)")"
  # A corpus that fits the 64 MiB a call carries: the dev clip, crowds, one-person and walking clips.
  BLURCAST_DATA=$DATA python bench/gpu_corpus.py --pack "$CARRY/pack" --only hamilton --only Meeting_11_26 \
    --only Parade_0_873 --only interview --only intel_classroom --only intel_head-pose --only head_motion_d14 \
    --only imgs_24
  du -sh "$CARRY"
  exit 0
fi

O=${OUT:-/tmp/gpu_out}; mkdir -p "$O"
exec > >(tee "$O/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1   # no network there: a model that did not travel fails at once
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$CARRY"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD BLURCAST_WEIGHTS=$PWD/$CARRY/weights BLURCAST_DATA=$PWD/$CARRY/data
export BLURCAST_HOME=$(mktemp -d)
T0=$(date +%s); step() { echo "=== $1 at $(( $(date +%s) - T0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch,cv2,numpy,onnxruntime;print('torch',torch.__version__,torch.version.cuda,torch.cuda.is_available(),'cv2',cv2.__version__,'numpy',numpy.__version__,'ort',onnxruntime.__version__)"
nproc; which ffmpeg || echo "no ffmpeg (the tests that record skip)"
SMOKE=${QUICK:+--smoke}; ONLY=${QUICK:+--only interview}
step tests
BLURCAST_REQUIRE_CUDA=1 timeout "${T_TESTS:-100}" python3 -m pytest -q -p no:cacheprovider -rfE --junitxml="$O/pytest.xml" \
  ${TESTS:-tests/test_gpu_ops.py tests/test_cuda_plans.py tests/test_multistream.py tests/test_backends.py tests/test_pipeline.py} 2>&1 | tail -30
step check
timeout "${T_CHECK:-90}" python3 bench/gpu_check.py $SMOKE --out "$O/gpu_check.json" --junit "$O/pytest.xml" \
  --sections environment,parity,single_stream 2>&1 | grep "gpu_check \|planned\|Error" | tail -12
step corpus-gpu
timeout "${T_CORPUS:-150}" python3 bench/gpu_corpus.py --run "$CARRY/pack" --backend auto --live $ONLY \
  --out "$O/corpus_gpu.json" 2>&1 | grep -E "gpu_corpus |planned|Error|Traceback" | tail -40
step corpus-cpu
timeout "${T_CPU:-45}" python3 bench/gpu_corpus.py --run "$CARRY/pack" --backend onnxruntime --skip 1080p $ONLY \
  --out "$O/corpus_cpu.json" 2>&1 | grep -E "gpu_corpus |Error|Traceback" | tail -20
step profile
timeout "${T_PROFILE:-30}" python3 bench/profile_file.py --clip "$CARRY"/pack/wider_0_Parade_Parade_0_873_48f.mp4 --as-is \
  --discard --backend auto --json "$O/profile_crowd.json" > /dev/null 2>&1 \
  && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if k != 'stages_ms_per_frame'})" \
  "$O/profile_crowd.json"
step streams
timeout "${T_STREAMS:-150}" python3 bench/gpu_check.py $SMOKE --out "$O/streams.json" --sections streams --seconds 4 \
  --max-streams 16 2>&1 | grep "streams:" | tail -12
step done
