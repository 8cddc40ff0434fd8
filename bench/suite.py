"""The evaluation corpus: every annotated video through Blurcast (and deface), scored black-box, one table.

    python bench/suite.py [--only SUBSTR] [--deface] [--set NAME=VALUE ...] [--photo-far FROM TO] [--json out.json]
    blurcast eval --suite [same options]

Videos: the dev clip (`video_hamilton`), every `bench/corpus/*.gt.json` (real clips from
`video_unannotated`, annotated by `bench/annotate.py`; group photos from `detection_unannotated`, annotated
the same way and rendered like WIDER) and the WIDER FACE photos rendered into 1080p pan-and-zoom clips
(`bench/widerface_clips.py`). Every video is first copied without audio into a cache
folder (GIFs and partly annotated clips cut to their annotated frames as H.264, CRF 12), so every tool
reads the same file.

Each video is run as a fresh `blurcast run` process (model load included, like deface) and scored by
`../shared/tools/score_video.py`, twice where it has an allowlisted person:
- `blur-all`: empty facebank, the allowlisted person counted as a bystander: every face must be hidden.
  This is the detection figure.
- `enrolled`: the person enrolled from the frame and box the gt names (a crop made at run time) or from the
  dev clip's photo: bystander leak and allowlisted visibility.
deface (its defaults) runs on the blur-all rows when installed (`pip install deface==1.5.0`, the `bench` extra).

`--degrade KIND` runs every clip as IRL footage reaches a rig instead, same frames: a check that the figures hold
for footage worse than the corpus's, not a figure to tune on. `DEGRADATIONS` keep the boxes: `lowrate` (a phone's
cellular uplink at 0.04 bit a pixel), `dark` (a dark street with sensor noise), `motion` (a fast pan's horizontal
smear on every frame), `pans` (the same smear in half-second bursts, sharp in between), `gray` (no colour: an
infrared night camera, a black-and-white filter). `tilt` turns every frame by TILT_DEGREES (a phone held askew) and
the boxes with it (`tilted`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import widerface_clips  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
SCORER = DATA.parent / "tools" / "score_video.py"
CORPUS = REPO / "bench" / "corpus"
CACHE = widerface_clips.CACHE
log = logging.getLogger("suite")


@dataclass
class Clip:
    name: str
    video: Path
    gt: Path
    allow_photo: Path | None = None  # a photo to enrol the allowlisted person from
    enrol: dict | None = None  # or: the gt's frame + box to crop them from


def corpus(only: list[str] | None = None, far: tuple[float, float] | None = None) -> list[Clip]:
    """Every annotated video that is present; missing data is logged, not fatal. `far`: the corpus photos are
    rendered at this scale range without filling the frame (see widerface_clips.corpus_photo)."""
    clips: list[Clip] = []
    ham = DATA / "video_hamilton"
    if (ham / "gt.json").exists():
        photo = DATA / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"
        clips.append(Clip("hamilton (dev clip)", ham / "short_hamilton_clip.mp4", ham / "gt.json",
                          photo if photo.exists() else None))
    for gt_path in sorted(CORPUS.glob("*.gt.json")):
        gt = json.loads(gt_path.read_text())
        name = gt_path.name.removesuffix(".gt.json")
        if "image" in gt:  # a photo: rendered into a pan-and-zoom clip like the WIDER photos
            if not (DATA / gt["image"]).exists():
                log.warning("skipping %s: %s is absent", gt_path.name, DATA / gt["image"])
            elif not only or any(o in f"{name}_" for o in only):  # its clip is NAME_<digest>_48f
                video, rendered = widerface_clips.corpus_photo(gt, name, far=far)
                clips.append(Clip(video.stem, video, rendered))
            continue
        video = DATA / "video_unannotated" / gt["video"]
        if video.exists():
            clips.append(Clip(name, video, gt_path, enrol=gt.get("enrol")))
        else:
            log.warning("skipping %s: %s is absent", gt_path.name, video)
    wanted = lambda name: not only or any(o in name for o in only)  # noqa: E731
    if (widerface_clips.WIDER / "wider_face_val_gt_subset.json").exists():
        for image in widerface_clips.images():
            if wanted(widerface_clips.clip_name(image)):
                video, gt_path = widerface_clips.render(image)
                clips.append(Clip(video.stem, video, gt_path))
    return [c for c in clips if wanted(c.name)]


def prepared(clip: Clip, cache: Path) -> Path:
    """The clip as an H.264 file holding exactly its annotated frames (the original when it already is)."""
    gt = json.loads(clip.gt.read_text())
    frames = int(gt.get("frames", 0))
    whole = clip.video.suffix == ".mp4" and (not frames or frames >= _count(clip.video))
    out = cache / f"{clip.name}_{frames}f.mp4"
    if not out.exists():
        cache.mkdir(parents=True, exist_ok=True)
        # Without audio: deface pads the video to a longer audio track (the dev clip: 300 frames out of 275).
        codec = ["-c:v", "copy"] if whole else ["-frames:v", str(frames), "-r", str(gt.get("fps", 25)),
                                                "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p"]
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip.video), *codec, "-an", str(out)], check=True)
    return out


# What IRL footage goes through before it reaches the rig, as FFmpeg output options (same frames, same size):
DEGRADATIONS = {
    # 0.04 bit a pixel: 2.5 Mbit/s at 1080p30, a phone's SRT uplink over a cellular link (blocky, smeared detail)
    "lowrate": lambda w, h, fps: ["-c:v", "libx264", "-preset", "veryfast", "-b:v", _rate(w, h, fps),
                                  "-maxrate", _rate(w, h, fps), "-bufsize", _rate(w, h, fps)],
    # a street at dusk: darker, flatter, with a phone sensor's grain
    "dark": lambda w, h, fps: ["-vf", "eq=brightness=-0.12:contrast=0.75:gamma=0.75,noise=alls=14:allf=t+u",
                               "-c:v", "libx264", "-crf", "18", "-preset", "veryfast"],
    # a fast pan: every frame smeared sideways over 12 px at 1080p (scaled with the width), as a phone's
    # exposure does when the streamer turns
    "motion": lambda w, h, fps: ["-vf", f"dblur=angle=0:radius={max(1, round(12 * w / 1920))}",
                                 "-c:v", "libx264", "-crf", "14", "-preset", "veryfast"],
    # monochrome: a night camera's infrared picture, a black-and-white filter or old footage (no colour at all)
    "gray": lambda w, h, fps: ["-vf", "format=gray,format=yuv420p", "-c:v", "libx264", "-crf", "14", "-preset",
                               "veryfast"],
    # a walk with turns: the same smear in a half-second burst every two seconds (frames 0-14 of every 60),
    # sharp in between, as IRL footage mostly is
    "pans": lambda w, h, fps: ["-vf", f"dblur=angle=0:radius={max(1, round(12 * w / 1920))}"
                                      ":enable='lt(mod(n\\,60)\\,15)'",
                               "-c:v", "libx264", "-crf", "14", "-preset", "veryfast"],
}
TILT_DEGREES = 20.0  # `tilt`: frames turned this far counter-clockwise, a handheld phone held askew


def _rate(width: int, height: int, fps: float, bits_a_pixel: float = 0.04) -> str:
    return str(int(bits_a_pixel * width * height * fps))


def degraded(video: Path, kind: str, cache: Path) -> Path:
    """`video` as it would arrive degraded by `kind` (DEGRADATIONS), cached beside the suite's copies."""
    out = cache / f"{video.stem}.{kind}.mp4"
    if not out.exists():
        cap = cv2.VideoCapture(str(video))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        staged = out.with_name(f".{out.stem}.partial.mp4")  # an interrupted encode never passes for a whole clip
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), *DEGRADATIONS[kind](w, h, fps or 25.0),
                        "-pix_fmt", "yuv420p", "-an", str(staged)], check=True)
        os.replace(staged, out)
    return out


def tilted(clip: Clip, video: Path, cache: Path, degrees: float = TILT_DEGREES) -> tuple[Path, Clip]:
    """`video` turned by `degrees` about its centre (same size, black corners), and `clip` with its boxes turned
    along: each face's box becomes the upright box of the same shape that fits inside the turned one, around the
    turned centre, so that it holds face and not background; one that leaves the frame is ignored."""
    cap = cv2.VideoCapture(str(video))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out = cache / f"{video.stem}.tilt{degrees:g}.mp4"
    if not out.exists():
        staged = out.with_name(f".{out.stem}.partial.mp4")
        encoder = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
                                    f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-crf", "12",
                                    "-pix_fmt", "yuv420p", str(staged)], stdin=subprocess.PIPE)
        while (frame := cap.read())[0]:
            encoder.stdin.write(cv2.warpAffine(frame[1], turn, (w, h)).tobytes())
        encoder.stdin.close()
        if encoder.wait() != 0:
            raise RuntimeError(f"could not encode {out.name}")
        os.replace(staged, out)
    cap.release()
    theta = np.radians(degrees)
    inside = 1.0 / (abs(np.cos(theta)) + abs(np.sin(theta)))  # a square's upright square inside it, turned

    def turned(box: list[float]) -> list[float]:
        cx, cy = turn @ [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 1.0]
        half_w, half_h = inside * (box[2] - box[0]) / 2, inside * (box[3] - box[1]) / 2
        return [float(cx - half_w), float(cy - half_h), float(cx + half_w), float(cy + half_h)]

    gt = json.loads(clip.gt.read_text())
    for face in gt["faces"]:
        face["box"] = turned(face["box"])
        x1, y1, x2, y2 = face["box"]
        face["ignore"] = bool(face.get("ignore")) or x1 < 0 or y1 < 0 or x2 > w or y2 > h
    gt_out = cache / f"{video.stem}.tilt{degrees:g}.gt.json"
    gt_out.write_text(json.dumps(gt))
    enrol = None if clip.enrol is None else {**clip.enrol, "box": turned(clip.enrol["box"])}
    return out, Clip(clip.name, out, gt_out, clip.allow_photo, enrol)


def _count(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.grab():
        n += 1
    return n


def blur_all_gt(clip: Clip, tmp: Path) -> Path:
    """The gt with the allowlisted person counted as a bystander (nobody enrolled: all must be hidden)."""
    gt = json.loads(clip.gt.read_text())
    for face in gt["faces"]:
        face["label"] = "bystander" if face["label"] == "allow" else face["label"]
    out = tmp / f"{clip.name}.all.gt.json"
    out.write_text(json.dumps(gt))
    return out


def enrol_photo(clip: Clip, video: Path, tmp: Path) -> Path | None:
    """The photo to enrol the allowlisted person from: given, or cropped from the gt's named frame."""
    if clip.allow_photo is not None or clip.enrol is None:
        return clip.allow_photo
    cap = cv2.VideoCapture(str(video))
    for _ in range(int(clip.enrol["frame"]) + 1):
        ok, frame = cap.read()
    cap.release()
    if not ok:
        return None
    x1, y1, x2, y2 = clip.enrol["box"]
    w, h = x2 - x1, y2 - y1
    crop = frame[max(0, int(y1 - 0.6 * h)): int(y2 + 0.6 * h), max(0, int(x1 - 0.6 * w)): int(x2 + 0.6 * w)]
    scale = max(1.0, 160 / max(w, 1))  # photos on the facebank need a face large enough to embed
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale > 1 else crop
    out = tmp / f"{clip.name}.enrol.png"
    cv2.imwrite(str(out), crop)
    return out


def run_blurcast(video: Path, out: Path, options: list[str], home: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "BLURCAST_HOME": str(home)}
    cmd = [sys.executable, "-m", "blurcast", "run", str(video), "-o", str(out), *options]
    return _timed(cmd, env)


def run_deface(video: Path, out: Path) -> float | None:
    deface = shutil.which("deface") or str(Path(sys.executable).with_name("deface"))
    if not Path(deface).exists():
        return None
    return _timed([deface, str(video), "-o", str(out)], dict(os.environ))


def _timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} {' '.join(cmd[1:4])} failed: {done.stderr[-800:]}")
    return time.perf_counter() - started


def score(video: Path, out: Path, gt: Path, tmp: Path) -> dict:
    report = tmp / "score.json"
    done = subprocess.run([sys.executable, str(SCORER), "--input", str(video), "--output", str(out), "--gt",
                           str(gt), "--json", str(report)], stdout=subprocess.DEVNULL)
    if done.returncode not in (0, 2):  # 2: scored, but frames were dropped or added (reported, not hidden)
        raise RuntimeError(f"the scorer failed on {out}")
    return json.loads(report.read_text())


def evaluate(clip: Clip, options: list[str], deface: bool, enrolled: bool, tmp: Path,
             keep: Path | None = None, degrade: str | None = None, enrolled_only: bool = False) -> list[dict]:
    video = prepared(clip, CACHE)
    # The enrolment photo is the streamer's own, taken apart from the stream: always cropped from the clip as it
    # was filmed, never from its degraded copy (until stop 33 it was: under `pans`, 8 of the 10 enrolled clips were
    # enrolled from a frame of the first smear, under `motion` all of them).
    photo = enrol_photo(clip, video, tmp) if enrolled else None
    if degrade == "tilt":
        video, clip = tilted(clip, video, CACHE)
    elif degrade:
        video = degraded(video, degrade, CACHE)
    frames = json.loads(clip.gt.read_text()).get("frames") or _count(video)
    rows = []
    gt_all = blur_all_gt(clip, tmp)
    runs = [] if enrolled_only else [("blur-all", "blurcast", gt_all, ["--no-facebank"])]
    if deface and not enrolled_only:
        runs.append(("blur-all", "deface", gt_all, None))
    if photo is not None:
        runs.append(("enrolled", "blurcast", clip.gt, ["--no-facebank", "--allow", str(photo)]))
    for mode, tool, gt, extra in runs:
        out = tmp / f"{clip.name}.{mode}.{tool}.mp4"
        home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp))  # no saved settings, empty facebank
        try:
            seconds = run_deface(video, out) if extra is None else run_blurcast(video, out, options + extra, home)
        except RuntimeError as exc:
            log.error("%s %s %s: %s", clip.name, mode, tool, exc)
            continue
        if seconds is None:
            continue
        r = score(video, out, gt, tmp)
        rows.append({"clip": clip.name, "mode": mode, "tool": tool, "frames": frames, "fps": frames / seconds,
                     **{k: r.get(k) for k in ("leak_rate", "worst_leak_run", "allow_visible",
                                              "bystander_face_frames", "bystander_visible",
                                              "allow_face_frames", "leak_rate_by_width", "worst_leak_track",
                                              "frames_input", "frames_output")}})
        log.info("%s", _line(rows[-1]))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.move(out, keep / out.name)
        out.unlink(missing_ok=True)
    return rows


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def _line(r: dict) -> str:
    return (f"{r['clip'][:44]:44s} {r['mode']:8s} {r['tool']:8s} "
            f"{_pct(r['leak_rate']):>8s} ({r['bystander_visible']}/{r['bystander_face_frames']}) "
            f"run {r['worst_leak_run']!s:>3s}  allow {_pct(r['allow_visible']):>8s}  {r['fps']:6.1f} fps"
            + ("" if r["frames_input"] == r["frames_output"] else f"  FRAMES {r['frames_output']}/{r['frames_input']}"))


def table(rows: list[dict]) -> str:
    head = f"{'clip':44s} {'mode':8s} {'tool':8s} {'leak':>8s} (visible/scored) worst run, allowlisted visible, fps"
    lines = [head] + [_line(r) for r in rows]
    for tool in sorted({r["tool"] for r in rows}):
        mine = [r for r in rows if r["tool"] == tool and r["leak_rate"] is not None]
        if mine:
            worst = max(mine, key=lambda r: r["leak_rate"])
            lines.append(f"worst {tool}: leak {_pct(worst['leak_rate'])} ({worst['clip']}, {worst['mode']}), "
                         f"longest leak run {max(r['worst_leak_run'] or 0 for r in mine)} frames")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append",
                        help="only clips whose name contains this (repeatable; imgs_1_ is photo 1 alone, not 10-19)")
    parser.add_argument("--deface", action="store_true", help="also run deface (when installed) on blur-all rows")
    parser.add_argument("--no-enrol", action="store_true", help="skip the enrolled runs")
    parser.add_argument("--enrolled-only", action="store_true", help="only the enrolled runs (and clips with one)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="engine setting")
    parser.add_argument("--photo-far", nargs=2, type=float, metavar=("FROM", "TO"),
                        help="render the corpus photos at this scale (e.g. 1.0 1.3: their faces keep about their "
                             "size in the photo) with black around them, instead of filling the frame")
    parser.add_argument("--degrade", choices=sorted([*DEGRADATIONS, "tilt"]),
                        help="run every clip degraded like IRL footage (low uplink bitrate, dark and noisy, smeared "
                             "by a pan, or turned 20 degrees)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--keep", type=Path, help="keep the anonymized videos in this folder")
    args, engine_options = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not SCORER.exists():
        log.error("the scorer %s is absent (set BLURCAST_DATA)", SCORER)
        return 2
    options = [a for s in args.set for a in ("--set", s)] + engine_options
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="blurcast-suite-") as tmp:
        for clip in corpus(args.only, tuple(args.photo_far) if args.photo_far else None):
            rows += evaluate(clip, options, args.deface, not args.no_enrol, Path(tmp), args.keep, args.degrade,
                             args.enrolled_only)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"options": options, "degrade": args.degrade, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
