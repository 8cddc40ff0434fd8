"""File mode's extra looks for the faces YuNet misses: the mirrored main pass and the second look at small weak
boxes (engine/stages/detectors/yunet.py, second_look.py), on real WIDER FACE crowds as the corpus shows them."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import Detections
from engine.pipeline import Pipeline
from engine.stages.detect import create_detector
from engine.stages.detectors import second_look, yunet
from engine.stages.lookahead import FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES, Lookahead
from tests.conftest import REPO
from tests.helpers import pairwise_iou

sys.path.insert(0, str(REPO))
from bench import widerface_clips


def _wider_frame(name: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Frame 0 of the corpus's 1080p clip of a WIDER FACE val photo, and its faces' exact boxes by track."""
    gt_file = widerface_clips.WIDER / "wider_face_val_gt_subset.json"
    if not gt_file.exists():
        pytest.skip(f"WIDER FACE val subset absent ({gt_file}): set BLURCAST_DATA")
    meta = json.loads(gt_file.read_text())[name]
    image = cv2.imread(str(widerface_clips.WIDER / "images" / name))
    s, ox, oy = widerface_clips.transforms(image.shape[1], image.shape[0], 48)[0]
    frame = cv2.warpAffine(image, np.float32([[s, 0, -ox], [0, s, -oy]]), widerface_clips.SIZE)
    faces = widerface_clips.faces_in_frame(meta, 0, s, ox, oy)
    return frame, {f["track"]: np.array(f["box"], np.float32) for f in faces if not f["ignore"]}


def _file_mode_detector(second: bool):
    detector = create_detector(Settings(backend="onnxruntime"))
    detector.tiles, detector.tile_cycle, detector.second_look = True, 1, second  # as the pipeline sets them
    return detector


def _found(detections: Detections, box: np.ndarray) -> bool:
    strong = detections.xyxy[detections.score >= 0.5]  # the default confidence: starts a face at once
    return bool(len(strong)) and float(pairwise_iou(box[None], strong).max()) >= 0.4


@pytest.mark.parametrize(("photo", "track", "why"), [
    ("0_Parade_Parade_0_873.jpg", 22, "a 100 px profile: YuNet finds it on the mirrored frame"),
    ("0_Parade_Parade_0_873.jpg", 67, "a 19 px face half hidden: found on the enlarged second look"),
])
def test_a_crowd_face_the_plain_passes_miss_is_found(photo, track, why):
    frame, boxes = _wider_frame(photo)
    box = boxes[track]
    assert not _found(_file_mode_detector(False).detect(frame, 0.2), box), f"main's passes now find it: {why}"
    assert _found(_file_mode_detector(True).detect(frame, 0.2), box), why


def test_the_extra_looks_only_add_faces_on_a_crowd():
    frame, boxes = _wider_frame("0_Parade_Parade_0_873.jpg")
    gt = np.stack(list(boxes.values()))
    plain, more = _file_mode_detector(False).detect(frame, 0.2), _file_mode_detector(True).detect(frame, 0.2)

    def hits(dets: Detections) -> np.ndarray:
        return pairwise_iou(gt, dets.xyxy[dets.score >= 0.5]).max(axis=1) >= 0.3

    # Measured: 107 of 133 faces at IoU >= 0.4 with both looks, 103 without (6 new, 2 of them moved boxes).
    assert hits(more).sum() >= hits(plain).sum() + 4
    assert not (hits(plain) & ~hits(more)).any(), "a face the plain passes found was lost"


def test_the_second_look_maps_the_mosaic_back_to_the_frame():
    frame, boxes = _wider_frame("11_Meeting_Meeting_11_Meeting_Meeting_11_26.jpg")
    chosen = np.stack([boxes[t] for t in sorted(boxes)[:6]])
    weak = Detections(chosen, np.full(len(chosen), 0.2, np.float32), np.zeros((len(chosen), 5, 2), np.float32))
    detector = _file_mode_detector(True)
    again = second_look.second_look(frame, weak, lambda image: detector._detect_at(image, 1.0, 0.1),
                                    yunet.SECOND_LOOK_PX, yunet.SECOND_LOOK_SCALE, yunet.SECOND_LOOK_CONTEXT, 200)
    rescued = again.score >= 0.5
    assert rescued.sum() >= 4  # clear faces, looked at closer
    ious = np.diag(pairwise_iou(chosen, again.xyxy))[rescued]
    assert (ious >= 0.4).all(), ious  # each cell's boxes come back where that face is, mirrored ones too
    inside = ((again.landmarks[rescued] >= chosen[rescued, None, :2] - 2)
              & (again.landmarks[rescued] <= chosen[rescued, None, 2:] + 2)).all()
    assert inside


def test_a_failing_second_look_blurs_the_whole_frame(monkeypatch):
    frame, _ = _wider_frame("11_Meeting_Meeting_11_Meeting_Meeting_11_26.jpg")
    pipeline = Pipeline(Settings(backend="onnxruntime"))
    pipeline.offline = True  # file mode: the extra looks run
    assert pipeline.detector.second_look
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("injected failure in the second look")

    monkeypatch.setattr(yunet, "second_look", broken)
    try:
        safe, report = pipeline.process(frame.copy(), 0, 1 / 30)
    finally:
        pipeline.close()
    assert calls, "the crowd frame had weak small boxes to look at again"
    assert report.whole_frame == "detector-error" and safe.whole_frame
    assert np.abs(safe.image.astype(np.int16) - frame).mean() > 10  # the picture is blurred, not passed through


def test_a_frame_without_faces_after_a_vain_second_look_is_not_a_detector_error():
    """A box looked at in vain is remembered for a few frames; an empty frame then (a scene cut) must come out
    as an empty frame, not as a fault that blurs the whole picture."""
    frame, boxes = _wider_frame("11_Meeting_Meeting_11_Meeting_Meeting_11_26.jpg")
    detector = _file_mode_detector(True)
    vain = next(iter(boxes.values()))
    detector._rejected = [(vain, detector._calls)]
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    assert len(detector._look_again(frame, empty, 0.5)) == 0
    assert len(detector.detect(np.zeros_like(frame), 0.5)) == 0


def test_mirrored_looks_keep_the_eyes_in_image_order():
    """Landmarks found on a mirrored image come back with the right eye (image left) first, as YuNet gives them:
    the aligner would otherwise warp a face onto its mirror template."""
    frame, _ = _wider_frame("0_Parade_Parade_0_873.jpg")
    detector = _file_mode_detector(True)
    flipped = yunet.mirror(detector._detect_at(yunet._derived(frame[:, ::-1]), 0.56, 0.5), frame.shape[1])
    assert len(flipped) >= 5
    frontal = np.abs(flipped.landmarks[:, 0, 1] - flipped.landmarks[:, 1, 1]) < 0.2 * (
        flipped.xyxy[:, 2] - flipped.xyxy[:, 0])
    assert frontal.sum() >= 3
    assert (flipped.landmarks[frontal, 0, 0] < flipped.landmarks[frontal, 1, 0]).all()
    assert (flipped.landmarks[frontal, 3, 0] < flipped.landmarks[frontal, 4, 0]).all()


def _through_file_mode(frame: np.ndarray, frames: int, corroborated: bool, monkeypatch) -> list[np.ndarray]:
    """`frames` copies of `frame` through the file-mode pipeline and its look-ahead, as `blurcast run` does."""
    from engine import pipeline as pipeline_module
    from engine.stages.lookahead import FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES, Lookahead

    monkeypatch.setattr(pipeline_module, "FILE_CORROBORATED_STARTS", int(corroborated))
    pipeline = Pipeline(Settings(backend="onnxruntime"))
    pipeline.offline = True
    lookahead, out = Lookahead(FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES), []
    for index in range(frames):
        safe, report = pipeline.process(frame.copy(), index, 1 / 30)
        out += [s.image for s, _ in lookahead.push(safe, report, pipeline.anonymizer)]
    pipeline.close()
    return out + [s.image for s, _ in lookahead.flush()]


@pytest.mark.parametrize("track", [36, 137])
def test_a_face_scoring_under_the_weak_start_is_hidden_from_its_first_frame_once_seen_thrice(track, monkeypatch):
    """A real 25-32 px WIDER face that every file-mode pass scores 0.2-0.3 (Parade, measured 0.22-0.24): under
    the 0.3 a weak face needed to start, so it stayed visible in every frame. Seen at one place in 3 frames, it
    starts a face, and the look-ahead hides it back to its first frame."""
    from evaluation.video import VISIBLE_AT, face_visibility

    frame, boxes = _wider_frame("0_Parade_Parade_0_873.jpg")
    x1, y1, x2, y2 = (round(float(v)) for v in boxes[track])
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2]

    def visible(images: list[np.ndarray]) -> list[bool]:
        return [face_visibility(grey, cv2.cvtColor(i, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2]) >= VISIBLE_AT
                for i in images]

    assert all(visible(_through_file_mode(frame, 4, False, monkeypatch))), "now found without corroboration"
    assert not any(visible(_through_file_mode(frame, 4, True, monkeypatch)))


def _corpus_clip(name: str, frames: int) -> tuple[list[np.ndarray], list[dict[int, np.ndarray]]]:
    """The first `frames` frames of a corpus clip as the suite plays it (its cached H.264 copy), with the boxes."""
    from bench import suite

    clips = suite.corpus([name])
    if not clips:
        pytest.skip(f"corpus clip {name} absent: set BLURCAST_DATA")
    cap = cv2.VideoCapture(str(suite.prepared(clips[0], suite.CACHE)))
    images = [cap.read()[1] for _ in range(frames)]
    boxes: list[dict[int, np.ndarray]] = [{} for _ in range(frames)]
    for face in json.loads(clips[0].gt.read_text())["faces"]:
        if face["frame"] < frames and not face["ignore"]:
            boxes[face["frame"]][face["track"]] = np.array(face["box"], np.float32)
    return images, boxes


def _visible_frames(images: list[np.ndarray], out: list[np.ndarray], boxes: list[dict[int, np.ndarray]],
                    track: int) -> int:
    """Frames in which `track` is left visible in `out` (the scorer's measure)."""
    from evaluation.video import VISIBLE_AT, face_visibility

    count = 0
    for image, done, faces in zip(images, out, boxes, strict=True):
        if track not in faces:
            continue
        x1, y1, x2, y2 = (round(float(v)) for v in faces[track])
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2]
        count += face_visibility(grey, cv2.cvtColor(done, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2]) >= VISIBLE_AT
    return count


def test_a_weak_face_that_moves_while_unseen_still_starts(monkeypatch):
    """A real 19-21 px Parade face (track 40) that the file-mode passes score 0.2-0.28 only every 3-5 frames while
    the camera pans it ~3 px a frame: its next sighting lay beyond half a face from where it was last seen, so its
    three sightings never met and it stayed visible. The candidate's reach grows with the frames it waited: it starts
    on its 3rd sighting and the look-ahead hides it back over the frames before; some frames in which it is lost
    later, between weak sightings, still show it."""
    from engine.stages import track as track_module

    images, boxes = _corpus_clip("Parade_0_873", 16)
    monkeypatch.setattr(track_module, "SCENE_MOTION", 0)  # it also carries the candidate along with the pan
    drift = track_module.CANDIDATE_DRIFT
    monkeypatch.setattr(track_module, "CANDIDATE_DRIFT", 0.0)
    before = _visible_frames(images, _file_mode_output(images), boxes, 40)
    assert before >= 5, "found without the growing reach now"
    monkeypatch.setattr(track_module, "CANDIDATE_DRIFT", drift)
    after = _visible_frames(images, _file_mode_output(images), boxes, 40)
    assert after <= before - 3  # measured 7 -> 4 of the first 16 frames


def _file_mode_output(images: list[np.ndarray]) -> list[np.ndarray]:
    """`images` through the file-mode pipeline and its look-ahead, as `blurcast run` does."""
    pipeline = Pipeline(Settings(backend="onnxruntime"))
    pipeline.offline = True
    lookahead, out = Lookahead(FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES), []
    for index, image in enumerate(images):
        safe, report = pipeline.process(image.copy(), index, 1 / 30)
        out += [s.image for s, _ in lookahead.push(safe, report, pipeline.anonymizer)]
    pipeline.close()
    return out + [s.image for s, _ in lookahead.flush()]


def test_a_face_tracked_on_a_misplaced_weak_box_is_hidden_by_its_margin(monkeypatch):
    """Meeting_176's face #17 (36 px, mostly hidden): its only boxes score 0.2-0.4 and sit half a face below it,
    and the track they start covered its lower half; the top half showed in every frame. File mode blurs a weak
    track's box with a margin (a guess: a recognised face there would win)."""
    from engine import pipeline as pipeline_module
    from engine.stages import track as track_module

    images, boxes = _corpus_clip("Meeting_11_176", 48)
    monkeypatch.setattr(track_module, "SCENE_MOTION", 0)  # with it the face's track also reaches more of it
    margin = pipeline_module.WEAK_BOX_MARGIN
    monkeypatch.setattr(pipeline_module, "WEAK_BOX_MARGIN", 0.0)
    before = _visible_frames(images, _file_mode_output(images), boxes, 17)
    assert before >= 12, "hidden without the margin now"  # measured 16 of 48 frames in the corpus run, 13 here
    monkeypatch.setattr(pipeline_module, "WEAK_BOX_MARGIN", margin)
    assert _visible_frames(images, _file_mode_output(images), boxes, 17) == 0, "lost weak frames keep the margin"


def test_a_new_track_moves_with_the_faces_around_it(monkeypatch):
    """Meeting_26's face #19 (16 px, half behind a head) pans ~15 px a frame, about its own width. Its track, started
    at rest on a 0.62 box in frame 33, missed it on the next frame and no track took it again: frames 34-44 showed it
    although weak boxes (0.22-0.47) lay on it in each. File mode starts a track with the motion of the established
    tracks nearest it, and looks for a waiting weak candidate where that motion carried it."""
    from engine.stages import anonymize
    from engine.stages import track as track_module

    images, boxes = _corpus_clip("Meeting_11_26", 48)
    # the tracker's part alone: a crowd's regions covered together (stop 52) blur more of its neighbourhood
    monkeypatch.setattr(anonymize, "BULK_MIN_REGIONS", 1 << 30)
    motion = track_module.SCENE_MOTION
    monkeypatch.setattr(track_module, "SCENE_MOTION", 0)
    before = _visible_frames(images, _file_mode_output(images), boxes, 19)
    assert before >= 8, "taken without the scene's motion now"  # measured 11 of 48 frames
    monkeypatch.setattr(track_module, "SCENE_MOTION", motion)
    assert _visible_frames(images, _file_mode_output(images), boxes, 19) <= 1  # measured 0


def test_live_mode_also_starts_faces_on_corroborated_weaker_boxes_and_follows_the_scene():
    """Both change only which boxes start or keep a track (no detection, no measurable CPU): live mode has them
    too since stop 23, whatever the mode was switched through."""
    pipeline = Pipeline(Settings(backend="onnxruntime"))
    assert pipeline.tracker.corroborated_starts and pipeline.tracker.scene_motion
    pipeline.offline = True
    assert pipeline.tracker.corroborated_starts and pipeline.tracker.scene_motion
    pipeline.offline = False
    pipeline.configure(Settings(backend="onnxruntime", detector="centerface"))  # a new detector keeps them
    assert pipeline.tracker.corroborated_starts and pipeline.tracker.scene_motion
    pipeline.close()


def _live_leaked(images: list[np.ndarray], boxes: list[dict[int, np.ndarray]]) -> int:
    """Bystander face-frames left visible by the live pipeline (tiles in turn, no look-ahead), every frame in order."""
    from evaluation.video import VISIBLE_AT, face_visibility

    pipeline = Pipeline(Settings(backend="onnxruntime", deadline_ms=5000))
    leaked = 0
    for index, (image, faces) in enumerate(zip(images, boxes, strict=True)):
        safe, _ = pipeline.process(image.copy(), index, 1 / 30)
        grey, done = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.cvtColor(safe.image, cv2.COLOR_BGR2GRAY)
        for box in faces.values():
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            leaked += face_visibility(grey[y1:y2, x1:x2], done[y1:y2, x1:x2]) >= VISIBLE_AT
    pipeline.close()
    return leaked


def test_live_mode_blurs_a_crowds_weak_and_panning_faces_sooner(monkeypatch):
    """WIDER Meeting_26 (a panning 1080p crowd of 15-20 px faces) through the live pipeline: faces that only weak
    boxes find, or that pan away from a new track, were left visible for the whole clip before live mode took
    file mode's corroborated starts and scene motion. The camera's motion (stop 53) is left out of both: it moves
    new tracks with the pan as scene motion does (on in both: 80 -> 70 only), and tests/test_camera_motion.py has
    its own."""
    from engine import pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "LIVE_CAMERA_MOTION", 0)
    images, boxes = _corpus_clip("Meeting_11_26", 48)
    now = _live_leaked(images, boxes)
    monkeypatch.setattr(pipeline_module, "LIVE_CORROBORATED_STARTS", 0)
    monkeypatch.setattr(pipeline_module, "LIVE_SCENE_MOTION", 0)
    before = _live_leaked(images, boxes)
    assert now <= 0.75 * before, (before, now)  # measured 182 -> 115 face-frames
