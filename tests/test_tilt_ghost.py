"""A phone held askew: on a large face turned 20 degrees YuNet also finds a weak box (0.3) 1.8x his size, further off
him than a pan's ghost (its nose 0.6 of his width from his), which blurred a recognised streamer in 28 % of his
frames. Such a box is his ghost only when a fresh look at its own region does not find it again (`refinds`); a box
that is found again is a face, and wins over him (engine/faces.py)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import RECHECK_GHOST, SURE_GHOST, box_iou, ghost_geometry, is_ghost_of
from engine.pipeline import Pipeline
from engine.recognition.gallery import Gallery
from engine.recognition.identify_facebank import FacebankIdentifier
from engine.recognition.recognize import create_embedder
from engine.stages.detectors import yunet
from facebank.enrol import Enroller
from tests.conftest import DATA

VIDEO = DATA / "video_unannotated" / "head_motion_d9.mp4"  # one man close up, 512x480
TILT = 15.0
FRAMES = 48
WIDER = DATA / "detection_widerface_val" / "images" / "0_Parade_Parade_0_873.jpg"


def _tilted(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return cv2.warpAffine(frame, cv2.getRotationMatrix2D((w / 2, h / 2), TILT, 1.0), (w, h))


@pytest.fixture(scope="module")
def upright() -> list[np.ndarray]:
    if not VIDEO.exists():
        pytest.skip(f"head-motion clip not found at {VIDEO} (BLURCAST_DATA)")
    capture, out = cv2.VideoCapture(str(VIDEO)), []
    while len(out) < FRAMES and (grabbed := capture.read())[0]:
        out.append(grabbed[1])
    return out


@pytest.fixture(scope="module")
def gallery(upright, tmp_path_factory) -> Gallery:
    photo = tmp_path_factory.mktemp("me") / "me.png"
    cv2.imwrite(str(photo), upright[0])  # his own photo, held straight
    return Gallery.from_people({"me": Enroller(Settings()).enrol(photo).embedding[None]})


class _Refinds:
    """The real YuNet, whose fresh looks find the box again on the calls `found` names: as a real face beside him
    would be, always, or only now and then (a real face half hidden, tilted or smeared: 12 of 43 single looks missed
    it in the review)."""

    def __init__(self, detector, found) -> None:
        self.detector, self.found, self.calls = detector, found, 0

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def refinds(self, frame, xyxy) -> bool:
        self.calls += 1
        return self.found(self.calls)


def _run(frames: list[np.ndarray], gallery: Gallery, refound=None) -> list[tuple[np.ndarray, object]]:
    settings = Settings()
    identifier = FacebankIdentifier(create_embedder(settings), lambda: gallery)
    pipeline = Pipeline(settings, identifier=identifier)
    pipeline.offline = True  # every frame detected, as `blurcast run` does
    out = []
    for index, frame in enumerate(frames):
        if refound and identifier.landmarker is not None and not isinstance(identifier.landmarker.detector, _Refinds):
            identifier.landmarker.detector = _Refinds(identifier.landmarker.detector, refound)
        safe, report = pipeline.process(frame.copy(), index, 1 / 30)
        out.append((safe.image.copy(), report))
    pipeline.close()
    return out


def _his(report):
    return max(report.faces, key=lambda f: f.score)


def _ghost_of(report, his) -> object | None:
    """The weak box larger than his over a third of his box, if this frame has one."""
    hx1, hy1, hx2, hy2 = his.xyxy
    for face in report.faces:
        if face is his or face.score >= 0.6 or face.lost_frames:
            continue
        x1, y1, x2, y2 = face.xyxy
        inter = max(min(x2, hx2) - max(x1, hx1), 0) * max(min(y2, hy2) - max(y1, hy1), 0)
        area = (hx2 - hx1) * (hy2 - hy1)
        if inter >= area / 3 and (x2 - x1) * (y2 - y1) >= 1.2 * area:
            return face
    return None


def _shown_where_ghosts(frames, results, visibility) -> tuple[list[bool], list[float]]:
    shown, covered = [], []
    for frame, (image, report) in zip(frames, results, strict=True):
        if not report.faces:
            continue
        his = _his(report)
        ghost = _ghost_of(report, his)
        if ghost is None:
            continue
        x1, y1, x2, y2 = (max(0, round(v)) for v in his.xyxy)
        shown.append(visibility(frame[y1:y2, x1:x2], image[y1:y2, x1:x2]) >= 0.5)
        gx1, gy1, _, gy2 = (max(0, round(v)) for v in ghost.xyxy)
        if x1 - gx1 >= 16:  # the ghost's part left of his box is still covered
            covered.append(float(np.abs(image[gy1:gy2, gx1:x1].astype(int) - frame[gy1:gy2, gx1:x1]).mean()))
    return shown, covered


def test_a_tilted_streamer_is_not_blurred_by_a_box_no_fresh_look_finds(upright, gallery, visibility) -> None:
    frames = [_tilted(f) for f in upright]
    shown, covered = _shown_where_ghosts(frames, _run(frames, gallery), visibility)
    assert len(shown) >= FRAMES // 3, "the tilt no longer makes a ghost box: this test checks nothing"
    assert np.mean(shown) >= 0.9, f"recognised, yet blurred in {shown.count(False)} of {len(shown)} frames"
    assert covered and min(covered) > 2.0, "the ghost's region beside his face went out untouched"


@pytest.mark.parametrize("found", [lambda call: True, lambda call: call == 2],
                         ids=["found by every look", "found by its second look only"])
def test_a_box_found_again_wins_over_him(upright, gallery, visibility, found) -> None:
    """The same frames, with fresh looks finding the box again, as they find a real face beside him: then it is a
    found face, covered over his box too (fail closed), as every box of this geometry was before. One look that
    found it is enough, for as long as its track lasts."""
    frames = [_tilted(f) for f in upright]
    shown, _ = _shown_where_ghosts(frames, _run(frames, gallery, refound=found), visibility)
    assert len(shown) >= FRAMES // 3, "the tilt no longer makes a ghost box: this test checks nothing"
    assert np.mean(shown) <= 0.2, f"a box found again was taken for a ghost: he showed in {sum(shown)} frames"


def test_nobody_enrolled_the_tilted_face_stays_hidden(upright, visibility) -> None:
    frames = [_tilted(f) for f in upright]
    for index, (image, report) in enumerate(_run(frames, Gallery.empty())):
        if report.faces:
            x1, y1, x2, y2 = (max(0, round(v)) for v in _his(report).xyxy)
            assert visibility(frames[index][y1:y2, x1:x2], image[y1:y2, x1:x2]) < 0.5, f"frame {index} shows him"


def test_a_fresh_look_finds_real_faces_and_not_the_ghost(upright) -> None:
    if not WIDER.exists():
        pytest.skip(f"WIDER FACE photo not found at {WIDER} (BLURCAST_DATA)")
    detector = yunet.create(Settings())
    frame = _tilted(upright[20])
    found = detector.detect(frame, 0.2)
    his = found.xyxy[int(np.argmax(found.score))]
    ghosts = [box for box, score in zip(found.xyxy, found.score, strict=True)
              if score < 0.6 and (box[2] - box[0]) * (box[3] - box[1]) >= 1.2 * (his[2] - his[0]) * (his[3] - his[1])]
    assert ghosts, "no ghost box in this tilted frame: this test checks nothing"
    assert not any(detector.refinds(frame, box) for box in ghosts)
    assert detector.refinds(frame, his)
    # Real faces of a crowd photo that YuNet finds only weakly (WIDER FACE's own boxes): most are found again.
    truth = json.loads((WIDER.parent.parent / "wider_face_val_gt_subset.json").read_text())[WIDER.name]["boxes_xywh"]
    truth = [(x, y, x + w, y + h) for x, y, w, h in truth]
    crowd = cv2.imread(str(WIDER))
    weak = detector.detect(crowd, 0.2)
    weak = [box for box, score in zip(weak.xyxy, weak.score, strict=True)
            if score < 0.6 and box[2] - box[0] >= 16 and max(box_iou(box, t) for t in truth) >= 0.5]
    assert len(weak) >= 8, "too few weakly found real faces: this test checks little"
    assert np.mean([detector.refinds(crowd, box) for box in weak]) >= 0.5


@pytest.mark.parametrize(("box", "nose", "score", "kind"), [
    ((-50, -35, 330, 335), (190, 200), 0.4, SURE_GHOST),  # a pan's ghost: nose 0.38 of him off, over 62 % of him
    ((-40, 80, 290, 512), (110, 320), 0.32, RECHECK_GHOST),  # the tilt's: nose 0.6 off, over 64 % of his box
    ((190, -30, 770, 550), (400, 100), 0.44, RECHECK_GHOST),  # the smeared selfie's (scaled): over 36 %, 0.67 off
    ((-50, -35, 330, 335), (90, 170), 0.4, None),  # nose 0.78 of him off: a face leaning in, whatever a look finds
    ((100, 60, 260, 240), (200, 170), 0.4, None),  # small: not larger than him
    ((-40, 80, 290, 512), (110, 320), 0.7, None),  # once found clearly
])
def test_which_boxes_a_fresh_look_decides(box, nose, score, kind) -> None:
    his, his_nose = np.array([137, 80, 382, 403], np.float32), np.array([260, 260], np.float32)
    if kind == RECHECK_GHOST and box[0] == 190:  # the selfie's own geometry, his box as measured there
        his, his_nose = np.array([170, 350, 554, 853], np.float32), np.array([360, 640], np.float32)
        nose = (his_nose[0] + 0.45 * 384, his_nose[1] - 0.47 * 384)  # 0.65 of his width up and right
    assert ghost_geometry(np.array(box, np.float32), score, nose, his, his_nose) == kind
    ghost = is_ghost_of(np.array(box, np.float32), score, nose, his, his_nose, not_refound=True)
    assert ghost is (kind is not None)
    if kind == RECHECK_GHOST:
        assert not is_ghost_of(np.array(box, np.float32), score, nose, his, his_nose), "found again: a face"
        assert not is_ghost_of(np.array(box, np.float32), score, nose, his, his_nose, True, face_score=0.7), \
            "his own face unclear: something may be in front of it"


def test_a_small_box_is_never_left_to_a_fresh_look() -> None:
    """Under 60 px a fresh look finds a real weak face again only about half the time (bench/ghost_recheck.py)."""
    his, his_nose = np.array([20, 10, 60, 50], np.float32), np.array([40, 30], np.float32)
    box = np.array([0, 10, 54, 64], np.float32)  # the tilt's geometry at a 40 px face: 54 px wide, nose 0.6 off
    assert ghost_geometry(box, 0.3, (24, 52), his, his_nose) is None
    assert ghost_geometry(box * 2, 0.3, (48, 104), his * 2, his_nose * 2) == RECHECK_GHOST


def test_live_a_tilted_streamer_is_shown(upright, gallery, visibility) -> None:
    """Live mode embeds on a worker and voids every crop of a face that another box overlaps: the same box blurred
    him for as long as it lasted, unless it is his ghost (the fresh look runs on the frame loop)."""
    frames = [_tilted(f) for f in upright]
    settings = Settings()
    identifier = FacebankIdentifier(create_embedder(settings), lambda: gallery)
    identifier.run_in_background(True)
    pipeline = Pipeline(settings, identifier=identifier)
    results = []
    try:
        for index, frame in enumerate(frames):
            safe, report = pipeline.process(frame.copy(), index, 1 / 30)
            assert identifier.worker.wait_idle(30)  # results one frame late, as on a machine keeping up
            results.append((safe.image.copy(), report))
    finally:
        identifier.run_in_background(False)
        pipeline.close()
    shown, _ = _shown_where_ghosts(frames, results, visibility)
    assert len(shown) >= FRAMES // 4, "the tilt no longer makes a ghost box: this test checks nothing"
    assert np.mean(shown) >= 0.8, f"live, he was blurred in {shown.count(False)} of {len(shown)} frames"
