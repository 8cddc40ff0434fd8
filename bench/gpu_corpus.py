"""The corpus through the product's own engine on a GPU box, scored black-box, CPU backend beside it.

    python bench/gpu_corpus.py --pack DIR [--only SUBSTR ...]         # here: clips, gts, photos -> DIR
    python bench/gpu_corpus.py --run DIR --out rows.json [--backend auto --backend onnxruntime] [--live]

`bench/suite.py` runs `blurcast run` processes and needs FFmpeg for its copies and recordings; a GPU box
without network has neither FFmpeg nor the shared data. So `--pack` writes what the suite would feed the engine
(the prepared H.264 copies, the blur-all and enrolled ground truths, the enrolment photo, the scorer) into one
folder to carry there, and `--run` feeds each clip to the engine `blurcast run` builds (`build_engine`:
source, pipeline, facebank identifier; `backend auto` is torch on CUDA), records it losslessly (FFV1) and
scores it with `score_video.py`. Each clip runs once per `--backend`, in the same process and run, so the
GPU's figures sit beside the CPU backend's on the same machine. `--live` adds a live run per clip on the first
backend (`Engine.run_live`, the file played at its rate; dropped frames filled as the recording sink does):
fps, p50/p95 added latency, leak.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.stages.anonymize import SafeFrame  # noqa: E402

log = logging.getLogger("gpu_corpus")
ROW_KEYS = ("leak_rate", "worst_leak_run", "allow_visible", "bystander_face_frames", "bystander_visible",
            "allow_face_frames", "allow_visible_frames", "frames_input", "frames_output")


class LosslessRecorder:
    """A sink that records SafeFrames to FFV1 (lossless: the score is the engine's, not an encoder's). Live, the
    frames the engine dropped are filled with the last one written, as the file sink does, so the recording
    keeps the source's frame count and the scorer compares frame for frame."""

    name = "file"

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        self.path = path
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
        if not self._writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write FFV1 to {path}")
        self.frames = 0
        self._next: int | None = None
        self._last: np.ndarray | None = None

    def write(self, frame: SafeFrame) -> None:
        if not isinstance(frame, SafeFrame):
            raise TypeError(f"a sink takes only SafeFrame, got {type(frame).__name__}")
        self._writer.write(frame.image)
        self.frames += 1

    def write_live(self, frame: SafeFrame, position: int, source_index: int | None = None) -> None:
        if self._next is not None and self._last is not None:
            for _ in range(max(0, position - self._next)):
                self._writer.write(self._last)
                self.frames += 1
        self.write(frame)
        self._next = max(position + 1, self._next or 0)
        self._last = frame.image.copy()

    def close(self) -> None:
        self._writer.release()


# --- here: what travels ---------------------------------------------------------------------------------------
def pack(folder: Path, only: list[str] | None) -> int:
    from bench import suite

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(suite.SCORER, folder / "score_video.py")
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in suite.corpus(only):
            video = suite.prepared(clip, suite.CACHE)
            key = "".join(c if c.isalnum() or c in "-_" else "_" for c in clip.name)
            shutil.copy(video, folder / f"{key}.mp4")
            shutil.copy(suite.blur_all_gt(clip, Path(tmp)), folder / f"{key}.all.gt.json")
            entry = {"name": clip.name, "video": f"{key}.mp4", "gt_all": f"{key}.all.gt.json"}
            photo = suite.enrol_photo(clip, video, Path(tmp))
            if photo is not None:
                shutil.copy(clip.gt, folder / f"{key}.gt.json")
                shutil.copy(photo, folder / f"{key}.enrol{photo.suffix}")
                entry.update(gt=f"{key}.gt.json", photo=f"{key}.enrol{photo.suffix}")
            entries.append(entry)
            log.info("packed %s", clip.name)
    for entry in [e for e in entries if e["name"].startswith("hamilton")]:  # the dev clip at 1080p, made there
        entries.append({**entry, "name": f"{entry['name']} 1080p", "upscale": [1920, 1080]})
    (folder / "clips.json").write_text(json.dumps(entries, indent=1))
    size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    log.info("%d clips, %.1f MiB in %s", len(entries), size, folder)
    return 0


# --- there: run and score -------------------------------------------------------------------------------------
def upscaled(folder: Path, entry: dict, work: Path) -> dict:
    """`entry` scaled to entry["upscale"] (lossless FFV1, boxes scaled alike): a 1080p clip made on the GPU box,
    so it need not travel."""
    width, height = entry["upscale"]
    stem = f"{Path(entry['video']).stem}_{height}p"
    video = work / f"{stem}.mkv"
    cap = cv2.VideoCapture(str(folder / entry["video"]))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR))
    writer.release()
    made = {**entry, "video": str(video)}
    for key in ("gt", "gt_all"):
        if key in entry:
            gt = json.loads((folder / entry[key]).read_text())
            sx, sy = width / gt["width"], height / gt["height"]
            for face in gt["faces"]:
                x1, y1, x2, y2 = face["box"]
                face["box"] = [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
            gt.update(width=width, height=height, video=video.name)
            (work / f"{stem}.{key}.json").write_text(json.dumps(gt))
            made[key] = str(work / f"{stem}.{key}.json")
    return made


def one(folder: Path, entry: dict, backend: str, enrolled: bool, live: bool, work: Path) -> dict:
    from blurcast.assemble import build_engine
    from engine.config import Settings
    from engine.service import ServeOptions

    video = folder / entry["video"]
    gt = folder / (entry["gt"] if enrolled else entry["gt_all"])
    allow = [str(folder / entry["photo"])] if enrolled else []
    settings = Settings().updated({"backend": backend})
    engine = build_engine(ServeOptions(source=str(video)), settings, use_facebank=False, allow=allow).engine
    info = engine.source.info
    out = work / "out.mkv"
    recorder = LosslessRecorder(out, info.width, info.height, info.fps or 25.0)
    engine.sinks.append(recorder)
    started = time.perf_counter()
    try:
        engine.run_live() if live else engine.run_file()
        seconds = time.perf_counter() - started
        telemetry = engine.telemetry()
    finally:
        engine.close()
    report = work / "score.json"
    subprocess.run([sys.executable, str(folder / "score_video.py"), "--input", str(video), "--output", str(out),
                    "--gt", str(gt), "--json", str(report)], stdout=subprocess.DEVNULL, check=False)
    scored = json.loads(report.read_text()) if report.exists() else {}
    report.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return {"clip": entry["name"], "backend": backend, "runner": engine.pipeline.detector.runner_name,
            "mode": "enrolled" if enrolled else "blur-all", "live": live, "size": f"{info.width}x{info.height}",
            "frames_written": recorder.frames, "fps": round(recorder.frames / seconds, 2),
            **{k: telemetry.get(k) for k in ("latency_p50_ms", "latency_p95_ms", "dropped", "coasted_frames",
                                             "whole_frames")},
            **{k: scored.get(k) for k in ROW_KEYS}}


def run(folder: Path, backends: list[str], live: bool, out: Path, only: list[str] | None,
        skip: list[str] | None) -> int:
    entries = [e for e in json.loads((folder / "clips.json").read_text())
               if (not only or any(o in e["name"] for o in only)) and not any(o in e["name"] for o in skip or [])]
    rows: list[dict] = []
    plan = [(e["name"], b, enrolled, False) for e in entries for b in backends
            for enrolled in ((False, True) if "photo" in e else (False,))]
    if live:  # the enrolled run where there is one: privacy and the streamer shown, live
        plan += [(e["name"], backends[0], "photo" in e, True) for e in entries]
    with tempfile.TemporaryDirectory(prefix="gpu-corpus-") as tmp:
        by_name = {e["name"]: upscaled(folder, e, Path(tmp)) if "upscale" in e else e for e in entries}
        for name, backend, enrolled, is_live in plan:
            try:
                rows.append(one(folder, by_name[name], backend, enrolled, is_live, Path(tmp)))
            except Exception as exc:  # one clip's failure must not lose the others' rows
                log.exception("%s %s failed", name, backend)
                rows.append({"clip": name, "backend": backend, "live": is_live,
                             "error": f"{type(exc).__name__}: {exc}"})
            else:
                log.info("%s", line(rows[-1]))
            out.write_text(json.dumps(rows, indent=1))  # after every row: a timeout keeps what was done
    print(table(rows))
    return 0


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def line(r: dict) -> str:
    if "error" in r:
        return f"{r['clip'][:36]:36s} {r['backend']:11s} ERROR {r['error'][:80]}"
    return (f"{r['clip'][:36]:36s} {r['backend']:11s} {r['mode']:8s} {'live' if r['live'] else 'file':4s} "
            f"leak {_pct(r['leak_rate']):>7s} ({r['bystander_visible']}/{r['bystander_face_frames']}) "
            f"run {r['worst_leak_run']!s:>2s} allow {_pct(r['allow_visible']):>7s} {r['fps']:6.1f} fps "
            f"p95 {r['latency_p95_ms']} ms"
            + ("" if r["frames_input"] == r["frames_output"] else f" FRAMES {r['frames_output']}/{r['frames_input']}"))


def table(rows: list[dict]) -> str:
    return "\n".join(line(r) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--pack", type=Path, metavar="DIR", help="write the clips, gts, photos and scorer here")
    what.add_argument("--run", type=Path, metavar="DIR", help="run and score the clips packed in DIR")
    parser.add_argument("--only", action="append", help="only clips whose name contains this (repeatable)")
    parser.add_argument("--skip", action="append", help="not the clips whose name contains this (repeatable)")
    parser.add_argument("--backend", action="append", help="engine backend, repeatable (default: auto, onnxruntime)")
    parser.add_argument("--live", action="store_true", help="also one live run per clip on the first backend")
    parser.add_argument("--out", type=Path, default=Path("gpu_corpus.json"), help="rows as JSON (with --run)")
    parser.add_argument("--cuda-shapes", action="store_true",
                        help="on a CPU backend, feed the detector the crop canvases CUDA uses (engine/models/"
                             "cuda_plans.py), to measure what they change without a GPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.pack:
        return pack(args.pack, args.only)
    if args.cuda_shapes:
        from engine.models.backends import OnnxRuntimeRunner

        OnnxRuntimeRunner.plans_per_shape = True  # the detector then letterboxes crops as on CUDA
        OnnxRuntimeRunner.warm = lambda self, batches, what: None  # nothing to plan on the CPU
    return run(args.run, args.backend or ["auto", "onnxruntime"], args.live, args.out, args.only, args.skip)


if __name__ == "__main__":
    raise SystemExit(main())
