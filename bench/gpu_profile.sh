#!/usr/bin/env bash
# Where a GPU box's file-mode frame goes, in one call (after bench/gpu_session.sh showed the GPU no faster than the
# box's own CPU backend on 1080p crowds): each stage's wall ms and calls per frame (bench/profile_file.py) for a
# 1080p crowd, the dev clip at 1080p and at 640x360, on torch-CUDA and on the box's onnxruntime in the same run;
# `blurcast run` on a photo on each; the device pipeline's single-stream 1080p figures (bench/gpu_check.py);
# with CUDNN_AB=1, cuDNN against PyTorch's own kernels (bench/cudnn_ab.py); BLURCAST_CUDNN=0 runs it all without cuDNN.
#
#   bash bench/gpu_profile.sh --pack    # here, with ../shared and a 1080p dev clip: fills .devprof/ (~50 MiB, ignored)
#   bash bench/gpu_profile.sh           # there, .devprof carried; figures land in $OUT (or /tmp/gpu_out)
set -u
cd "$(dirname "$0")/.."
CARRY=.devprof
DATA=${BLURCAST_DATA:-../shared/data}

if [ "${1:-}" = "--pack" ]; then
  set -e
  rm -rf "$CARRY" && mkdir -p "$CARRY"/{weights,whl,clips}
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  cp weights/face_detection_yunet_2023mar.onnx weights/sface_2021dec.onnx weights/manifest.json "$CARRY/weights/"
  # The 1080p crowd as bench/gpu_corpus.py packs it (a WIDER photo rendered to a pan-and-zoom clip)
  BLURCAST_DATA=$DATA python bench/gpu_corpus.py --pack "$CARRY/crowd" --only Parade_0_873
  mv "$CARRY"/crowd/wider_0_Parade_Parade_0_873_48f.mp4 "$CARRY/clips/crowd1080.mp4" && rm -rf "$CARRY/crowd"
  cp "$DATA"/video_hamilton/short_hamilton_clip.mp4 "$CARRY/clips/dev360.mp4"
  ffmpeg -v error -y -i "$DATA"/video_hamilton/short_hamilton_clip.mp4 -vf scale=1920:1080 -frames:v 120 \
    -c:v libx264 -crf 18 -preset veryfast -an "$CARRY/clips/dev1080.mp4"
  cp "$(ls "$DATA"/detection_widerface_val/images/*.jpg | head -1)" "$CARRY/clips/photo.jpg"
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$CARRY/whl" \
    "tinydb==$(python -c "import tinydb; print(tinydb.__version__)")"
  du -sh "$CARRY"
  exit 0
fi

O=${OUT:-/tmp/gpu_out}; mkdir -p "$O/parts"
exec > >(tee "$O/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$CARRY"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD BLURCAST_WEIGHTS=$PWD/$CARRY/weights BLURCAST_HOME=$(mktemp -d)
T0=$(date +%s); step() { echo "=== $1 at $(( $(date +%s) - T0 )) s"; }
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader; nproc
if [ -n "${CUDNN_AB:-}" ]; then
  step cudnn-ab
  timeout "${T_AB:-120}" python3 bench/cudnn_ab.py --out "$O/parts/cudnn_ab.json" 2>&1 | cut -c1-600
fi
for backend in ${BACKENDS:-auto onnxruntime}; do
  for clip in ${CLIPS:-crowd1080 dev1080 dev360}; do
    step "profile $backend $clip"
    timeout "${T_PROFILE:-60}" python3 bench/profile_file.py --clip "$CARRY/clips/$clip.mp4" --as-is --discard \
      --backend "$backend" --json "$O/parts/profile_${backend}_$clip.json" > /dev/null 2> "$O/parts/err.txt" \
      || tail -5 "$O/parts/err.txt"
  done
done
for backend in ${PHOTOS:-torch onnxruntime}; do  # auto keeps a photo on the CPU since stop 28
  step "photo $backend"
  /usr/bin/time -f "photo $backend: %e s wall, %M KiB" timeout "${T_PHOTO:-60}" python3 -m blurcast run \
    "$CARRY/clips/photo.jpg" -o "/tmp/photo_$backend.png" --no-facebank --backend "$backend" 2>&1 | tail -3
done
step single-stream
[ "${SINGLE:-1}" = 0 ] || timeout "${T_SINGLE:-120}" python3 bench/gpu_check.py --sections single_stream --sizes 1920x1080 \
  --out "$O/parts/single.json" 2>&1 | grep -E "gpu_check |Error" | tail -4
step done
python3 - "$O" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
merged = {p.stem: json.loads(p.read_text()) for p in sorted((out / "parts").glob("*.json"))}
(out / "profile.json").write_text(json.dumps(merged, indent=1))
for name, d in merged.items():
    if name.startswith("profile_"):
        stages = d["stages_ms_per_frame"]
        print(f"{name:32s} {d['runner']:16s} {d['fps']:6.2f} fps ({d['fps_after_warm_up']:6.2f} after a "
              f"{d['warm_up_s']:.1f} s warm-up), {d['wall_ms_per_frame']:6.1f} ms/frame, "
              f"CPU {d['process_cpu_ms_per_frame']:6.1f} ms/frame")
        for k, v in sorted(stages.items(), key=lambda kv: -kv[1]["wall"])[:9]:
            print(f"    {k:50s} wall {v['wall']:7.1f}  cpu {v['cpu']:7.1f}  calls {v['calls']:5.2f}")
print(json.dumps(merged.get("single", {}), indent=1)[:1500])
EOF
rm -rf "$O/parts"
