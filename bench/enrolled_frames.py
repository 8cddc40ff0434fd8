"""Why an allowlisted person is blurred: their gt track frame by frame, through the engine's pipeline.

    python bench/enrolled_frames.py bench/corpus/CLIP.gt.json [--set NAME=VALUE ...] [--frames]
    python bench/enrolled_frames.py ../shared/data/video_hamilton/gt.json --photo PHOTO   (the dev clip)

The person is embedded from the gt's `enrol` frame and box exactly as a photo is (the `Landmarker`'s
alignment, the facebank's embedder) but without enrolment's photo checks: low-resolution clips (GIFs at
480x270) fail the sharpness bar that a streamer's own photo must pass, yet what happens to their face in the
stream is still worth knowing. Prints the share of their face-frames shown, the bystanders' face-frames shown
(must stay 0), and with --frames each frame's similarity and reason (FrameReport.faces). Not a privacy score:
`bench/suite.py` and the black-box scorer are.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.config import Settings  # noqa: E402
from engine.faces import box_iou  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from engine.recognition.gallery import Gallery  # noqa: E402
from engine.recognition.identify_facebank import FacebankIdentifier, Policy  # noqa: E402
from engine.recognition.recognize import create_embedder, create_landmarker  # noqa: E402
from engine.stages.lookahead import FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES, Lookahead  # noqa: E402
from facebank.enrol import Enroller  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
log = logging.getLogger("enrolled_frames")


def frames_of(gt: dict, folder: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(folder / gt["video"]))
    frames = []
    while len(frames) < gt["frames"] and (grabbed := capture.read())[0]:
        frames.append(grabbed[1])
    return frames


def gallery_from_enrol(frames: list[np.ndarray], gt: dict, settings: Settings) -> Gallery:
    """The gt's enrol face, aligned and embedded as the photo path does it."""
    enrol = gt["enrol"]
    landmarker = create_landmarker(settings)
    frame, box = frames[enrol["frame"]], np.asarray(enrol["box"], np.float32)
    found = landmarker.detector.refine(frame, box, face_px=160)
    if not len(found):
        raise SystemExit("the enrol face is not found again in its frame")
    face = landmarker.align(frame, found.xyxy[0], found.landmarks[0])
    return Gallery.from_people({"allow": create_embedder(settings).embed_aligned(face[None])})


def run(gt: dict, folder: Path, settings: Settings, per_frame: bool, photo: Path | None = None,
        policy: Policy | None = None, reveal: bool = True) -> dict:
    frames = frames_of(gt, folder)
    if photo is not None:  # a real photo: enrolled as the facebank does it, checks included
        gallery = Gallery.from_people({"allow": Enroller(settings).enrol(photo).embedding[None]})
    else:
        gallery = gallery_from_enrol(frames, gt, settings)
    pipeline = Pipeline(settings, identifier=FacebankIdentifier(create_embedder(settings), lambda: gallery, policy))
    pipeline.offline = True  # every frame, as `blurcast run` does: a busy machine must not change the figures
    by_frame: dict[int, list[dict]] = {}
    for face in gt["faces"]:
        by_frame.setdefault(face["frame"], []).append(face)
    allow = {"frames": 0, "shown": 0}
    bystander = {"frames": 0, "shown": 0}
    reasons: Counter = Counter()
    # As `blurcast run` does: the look-ahead may still show a face in the frames before it was recognised.
    pipeline.reveal_later(reveal)
    lookahead = Lookahead(FILE_LOOKAHEAD_FRAMES, weak_frames=WEAK_BACK_FRAMES)
    released = []
    for index, frame in enumerate(frames):
        safe, report = pipeline.process(frame.copy(), index, 1 / float(gt.get("fps", 25)))
        released += [tag for _, tag in lookahead.push(safe, report, pipeline.anonymizer, tag=report)]
    released += [tag for _, tag in lookahead.flush()]
    for report in released:
        index = report.index
        for face in by_frame.get(index, []):
            if face["ignore"]:
                continue
            state = max(report.faces, key=lambda s: box_iou(s.xyxy, face["box"]), default=None)
            hit = state is not None and box_iou(state.xyxy, face["box"]) >= 0.3
            shown = hit and state.visible
            tally = allow if face["label"] == "allow" else bystander
            tally["frames"] += 1
            tally["shown"] += int(shown)
            if hit and state.similarity is not None and face["label"] != "allow":
                bystander["best_similarity"] = max(bystander.get("best_similarity", -1.0), state.similarity)
            if face["label"] == "allow":
                why = "visible" if shown else (state.reason if hit else "no track")
                reasons[why] += 1
                if per_frame:
                    sim = None if not hit or state.similarity is None else round(state.similarity, 3)
                    print(f"{index:4d} {face['box'][2] - face['box'][0]:5.0f}px sim {sim!s:>6s} {why}"
                          f"{' (revealed)' if hit and state.visible and report.revealed else ''}"
                          f"  {state.continuity if hit else ''}")
    pipeline.close()
    return {"allow_shown": allow, "bystander_shown": bystander, "allow_reasons": dict(reasons)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gt", type=Path, nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--frames", action="store_true", help="print every allowlisted face-frame")
    parser.add_argument("--policy", action="append", default=[], metavar="NAME=VALUE",
                        help="a recognition Policy field, to compare keep/matching rules")
    parser.add_argument("--photo", type=Path, help="enrol from this photo instead of the gt's enrol frame")
    parser.add_argument("--no-reveal", action="store_true",
                        help="the look-ahead does not show faces recognised later in the frames before (as before)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings().updated({k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)})
    policy = Policy(**{k: json.loads(v) for k, v in (s.split("=", 1) for s in args.policy)})
    for path in args.gt:
        gt = json.loads(path.read_text())
        if "enrol" not in gt and args.photo is None:
            continue
        folder = path.parent if (path.parent / gt["video"]).exists() else DATA / "video_unannotated"
        result = run(gt, folder, settings, args.frames, args.photo, policy, not args.no_reveal)
        a, b = result["allow_shown"], result["bystander_shown"]
        share = 100 * a["shown"] / max(a["frames"], 1)
        best = b.get("best_similarity", float("nan"))
        print(f"{path.name[:48]:48s} allow {a['shown']}/{a['frames']} ({share:.1f} %)  bystanders shown "
              f"{b['shown']}/{b['frames']} (best similarity {best:.2f})  {result['allow_reasons']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
