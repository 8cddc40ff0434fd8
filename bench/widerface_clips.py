"""Real annotated group photos (WIDER FACE val) rendered into 1080p pan-and-zoom clips with exact boxes.

    python bench/widerface_clips.py [--out DIR] [--frames 48]

Each photo is scaled by 1.9x -> 2.5x over the clip (just enough to fill 1920x1080, then zooming in) while
the view pans from its top-left to its bottom-right, so faces of 5-40 px in the photo are 10-100 px at
1080p, move, and enter or leave at the frame's edges. The boxes are the official WIDER FACE ones, mapped
through the same affine transform as the pixels (warpAffine convention: pixel centres at integers), so the
ground truth is exact, not detected. Faces WIDER marks invalid, and faces with under half their box in
the picture, are `ignore`; the rest are `bystander`. Videos go to a cache folder, never into the repo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np

DATA = Path(os.environ.get("BLURCAST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WIDER = DATA / "detection_widerface_val"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "blurcast" / "corpus"
SIZE = (1920, 1080)
FPS = 30
ZOOM = (1.9, 2.5)
METHOD = ("WIDER FACE val photo {image} (official boxes) rendered by bench/widerface_clips.py: {frames} frames "
          "at 1920x1080, {fps} fps, scale {z0}x -> {z1}x, view panning top-left -> bottom-right; every box mapped "
          "through the frame's affine transform; WIDER-invalid faces and faces under half inside the frame are "
          "ignore=true. Encoded with libx264 CRF 16.")

log = logging.getLogger("widerface_clips")


def transforms(width: int, height: int, frames: int, zoom: tuple[float, float] = ZOOM,
               fill: bool = True) -> list[tuple[float, float, float]]:
    """(scale, offset x, offset y) per frame: dst = scale * src - offset (pixel-centre coordinates). `fill`:
    never less than what fills the frame; without it a small scale leaves black around the photo (a far view)."""
    cover = max(SIZE[0] / width, SIZE[1] / height) * 1.01 if fill else 0.0
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        s = max(cover, zoom[0] + (zoom[1] - zoom[0]) * t)
        ox = t * (width * s - SIZE[0])
        oy = t * (height * s - SIZE[1])
        out.append((s, ox, oy))
    return out


def map_box(box_xywh: list[float], s: float, ox: float, oy: float) -> tuple[float, ...]:
    """A box in pixel-edge coordinates through dst = s * (e - 0.5) + 0.5 - offset."""
    x, y, w, h = box_xywh
    return tuple(s * (e - 0.5) + 0.5 - o for e, o in ((x, ox), (y, oy), (x + w, ox), (y + h, oy)))


def faces_in_frame(meta: dict, index: int, s: float, ox: float, oy: float) -> list[dict]:
    faces = []
    for k, (box, invalid) in enumerate(zip(meta["boxes_xywh"], meta["invalid"], strict=True)):
        x1, y1, x2, y2 = map_box(box, s, ox, oy)
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(SIZE[0], x2), min(SIZE[1], y2)
        if cx2 - cx1 < 1 or cy2 - cy1 < 1:
            continue  # out of the picture
        inside = (cx2 - cx1) * (cy2 - cy1) / max((x2 - x1) * (y2 - y1), 1e-9)
        faces.append({"frame": index, "track": k + 1, "box": [round(v, 2) for v in (cx1, cy1, cx2, cy2)],
                      "label": "bystander", "ignore": bool(invalid) or inside < 0.5})
    return faces


def render(image_name: str, frames: int = 48, out_dir: Path = CACHE) -> tuple[Path, Path]:
    """The clip and its gt.json for one WIDER image (cached: rendered once per parameters)."""
    meta = json.loads((WIDER / "wider_face_val_gt_subset.json").read_text())[image_name]
    method = METHOD.format(image=image_name, frames=frames, fps=FPS, z0=ZOOM[0], z1=ZOOM[1])
    return render_photo(WIDER / "images" / image_name, meta, clip_name(image_name, frames), method, frames, out_dir)


def render_photo(path: Path, meta: dict, stem: str, method: str, frames: int = 48, out_dir: Path = CACHE,
                 zoom: tuple[float, float] = ZOOM, fill: bool = True) -> tuple[Path, Path]:
    """Any photo with checked boxes (`meta`: boxes_xywh, invalid) as a pan-and-zoom clip and its gt.json."""
    video, gt_path = out_dir / f"{stem}.mp4", out_dir / f"{stem}.gt.json"
    if video.exists() and gt_path.exists():
        return video, gt_path
    out_dir.mkdir(parents=True, exist_ok=True)
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"cannot read the photo {path}")
    h, w = image.shape[:2]
    faces = []
    encoder = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{SIZE[0]}x{SIZE[1]}",
         "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-crf", "16", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         str(video) + ".part.mp4"], stdin=subprocess.PIPE)
    for i, (s, ox, oy) in enumerate(transforms(w, h, frames, zoom, fill)):
        m = np.float32([[s, 0, -ox], [0, s, -oy]])
        encoder.stdin.write(cv2.warpAffine(image, m, SIZE, flags=cv2.INTER_LINEAR).tobytes())
        faces += faces_in_frame(meta, i, s, ox, oy)
    encoder.stdin.close()
    if encoder.wait() != 0:
        raise RuntimeError(f"ffmpeg failed rendering {stem}")
    os.replace(str(video) + ".part.mp4", video)
    gt = {"video": video.name, "width": SIZE[0], "height": SIZE[1], "fps": FPS, "frames": frames,
          "method": method, "faces": faces}
    gt_path.write_text(json.dumps(gt))
    return video, gt_path


def corpus_photo(gt: dict, name: str, frames: int = 48, out_dir: Path = CACHE,
                 far: tuple[float, float] | None = None) -> tuple[Path, Path]:
    """A photo of bench/corpus (its boxes annotated by bench/annotate.py and checked by eye) rendered like the
    WIDER photos; the clip's name carries a digest of the boxes, so a corrected gt is rendered anew. `far`: a
    scale range that does not fill the frame (black around the photo), so that its faces keep about their
    size in the photo at 1080p (the held-out street video's faces are 21-38 px; the fill zoom doubles them)."""
    boxes = [f["box"] for f in gt["faces"]]
    meta = {"boxes_xywh": [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes],
            "invalid": [bool(f["ignore"]) for f in gt["faces"]]}
    digest = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:8]
    zoom = far or ZOOM
    view = "view panning top-left -> bottom-right" if far is None else "the photo sliding, black around it"
    method = (f"{gt['method']} Rendered by bench/widerface_clips.py like the WIDER clips: {frames} frames at "
              f"1920x1080, {FPS} fps, scale {zoom[0]:g}x -> {zoom[1]:g}x, {view}; every "
              "box mapped through the frame's affine transform; ignore faces and faces under half inside the frame "
              "are ignore=true.")
    stem = f"{name}_{digest}_{frames}f" + ("" if far is None else f"_far{zoom[0]:g}-{zoom[1]:g}")
    return render_photo(DATA / gt["image"], meta, stem, method, frames, out_dir, zoom, fill=far is None)


def clip_name(image_name: str, frames: int = 48) -> str:
    return f"wider_{Path(image_name).stem}_{frames}f"


def images() -> list[str]:
    return sorted(json.loads((WIDER / "wider_face_val_gt_subset.json").read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=CACHE)
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in images():
        video, gt = render(name, args.frames, args.out)
        log.info("%s + %s", video, gt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
