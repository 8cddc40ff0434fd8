"""A pan's smear on a recognised streamer: YuNet then finds his face twice, at his box (0.9) and as a weak ghost
box 1.5x his size half a face off it (0.3-0.45). The ghost must not blur him; the rest of it stays covered."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import Detections, is_ghost_of
from engine.pipeline import Pipeline
from engine.recognition.gallery import Gallery
from engine.recognition.identify_facebank import FacebankIdentifier
from engine.recognition.recognize import create_embedder
from facebank.enrol import Enroller
from tests.conftest import DATA

VIDEO = DATA / "video_unannotated" / "head_motion_d9.mp4"  # one man close up, 512x480
SMEARED = range(10, 30)  # a burst of smear, as a turn of the camera leaves, between sharp frames
SMEAR_PX = 13  # sideways, about 5 % of his face's width


def _smeared(frame: np.ndarray) -> np.ndarray:
    kernel = np.zeros((SMEAR_PX, SMEAR_PX), np.float32)
    kernel[SMEAR_PX // 2, :] = 1.0 / SMEAR_PX
    return cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    if not VIDEO.exists():
        pytest.skip(f"head-motion clip not found at {VIDEO} (BLURCAST_DATA)")
    capture, out = cv2.VideoCapture(str(VIDEO)), []
    while len(out) < 40 and (grabbed := capture.read())[0]:
        out.append(_smeared(grabbed[1]) if len(out) in SMEARED else grabbed[1])
    return out


class _GhostAt:
    """The real detector, with every weak box over most of the best one scored `score` (talking_katiehill's ghosts
    reach 0.57 under `--degrade pans`, over `confidence`: then its raw detection is a confident face too)."""

    def __init__(self, detector, score: float) -> None:
        self.detector, self.score = detector, score

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def detect(self, frame, low):
        found = self.detector.detect(frame, low)
        if len(found) >= 2:
            best = int(np.argmax(found.score))
            scores = found.score.copy()
            for i in range(len(found)):
                if i != best and _over_most_of(found.xyxy[i], found.xyxy[best]):
                    scores[i] = self.score
            found = Detections(found.xyxy, scores.astype(np.float32), found.landmarks)
        return found


def _run(frames: list[np.ndarray], gallery: Gallery,
         ghost_score: float | None = None) -> list[tuple[np.ndarray, object]]:
    settings = Settings()
    detector = Pipeline(settings).detector
    pipeline = Pipeline(settings, detector=detector if ghost_score is None else _GhostAt(detector, ghost_score),
                        identifier=FacebankIdentifier(create_embedder(settings), lambda: gallery))
    pipeline.offline = True  # every frame detected, as `blurcast run` does
    out = []
    for index, frame in enumerate(frames):
        safe, report = pipeline.process(frame.copy(), index, 1 / 30)
        out.append((safe.image.copy(), report))
    pipeline.close()
    return out


def _over_most_of(box, his: np.ndarray) -> bool:
    """A box bigger than his over at least half of his."""
    (x1, y1, x2, y2), (hx1, hy1, hx2, hy2) = box, his
    inter = max(min(x2, hx2) - max(x1, hx1), 0) * max(min(y2, hy2) - max(y1, hy1), 0)
    his_area = (hx2 - hx1) * (hy2 - hy1)
    return inter >= 0.5 * his_area and (x2 - x1) * (y2 - y1) >= his_area


def _his_box(report) -> np.ndarray:
    return np.asarray(max(report.faces, key=lambda f: f.score).xyxy)


@pytest.mark.parametrize("ghost_score", [None, 0.55], ids=["as found", "over confidence"])
def test_a_smeared_streamer_is_not_blurred_by_his_own_ghost_box(frames, visibility, tmp_path, ghost_score) -> None:
    photo = tmp_path / "me.png"
    cv2.imwrite(str(photo), frames[0])  # enrolled from a sharp frame, as from his own photo
    gallery = Gallery.from_people({"me": Enroller(Settings()).enrol(photo).embedding[None]})
    shown, ghosts, covered = [], 0, []
    for index, (image, report) in enumerate(_run(frames, gallery, ghost_score)):
        if index not in SMEARED:
            continue
        box = _his_box(report)
        x1, y1, x2, y2 = (round(v) for v in box)
        shown.append(visibility(frames[index][y1:y2, x1:x2], image[y1:y2, x1:x2]) >= 0.5)
        for ghost in (f for f in report.faces if not f.visible and f.score < 0.6 and _over_most_of(f.xyxy, box)):
            ghosts += 1
            # The ghost's part left of his box (clipped to the frame) is still covered.
            gx1, gy1, _, gy2 = (max(0, round(v)) for v in ghost.xyxy)
            if x1 - gx1 >= 16:
                changed = np.abs(image[gy1:gy2, gx1:x1].astype(int) - frames[index][gy1:gy2, gx1:x1]).mean()
                covered.append(changed)
    assert ghosts >= len(SMEARED) // 2, "the smear no longer makes a ghost box: this test checks nothing"
    assert np.mean(shown) >= 0.9, f"recognised, yet blurred in {shown.count(False)} of {len(shown)} smeared frames"
    assert covered and min(covered) > 2.0, "the ghost's region beside his face went out untouched"


def test_a_smeared_face_nobody_enrolled_stays_hidden(frames, visibility) -> None:
    for index, (image, report) in enumerate(_run(frames, Gallery.empty())):
        if report.faces:
            x1, y1, x2, y2 = (round(v) for v in _his_box(report))
            assert visibility(frames[index][y1:y2, x1:x2], image[y1:y2, x1:x2]) < 0.5, f"frame {index} shows him"


def test_a_box_once_found_confidently_is_never_taken_for_a_ghost(frames, visibility, tmp_path) -> None:
    """The same smeared frames, but the ghost's first detection scores 0.9, as a bystander found before he is half
    hidden behind the streamer would: from then on it is a found face, which wins over him (fail closed), though
    its later boxes score 0.4 and cover most of his, as a ghost's do. (The review composited such a bystander:
    26-30 % of his own pixels went out while the rule looked at the latest score only.)"""
    detector = Pipeline(Settings()).detector

    class FirstSeenConfident:
        """The real detector; a weak box over most of the streamer's, first seen, is given 0.9."""

        def __init__(self) -> None:
            self.seen = False

        def __getattr__(self, name):
            return getattr(detector, name)

        def detect(self, frame, low):
            found = detector.detect(frame, low)
            if len(found) >= 2 and not self.seen:
                best = int(np.argmax(found.score))
                weak = [i for i in range(len(found)) if i != best and _over_most_of(found.xyxy[i], found.xyxy[best])]
                if weak:
                    self.seen = True
                    scores = found.score.copy()
                    scores[weak] = 0.9
                    found = Detections(found.xyxy, scores.astype(np.float32), found.landmarks)
            return found

    photo = tmp_path / "me.png"
    cv2.imwrite(str(photo), frames[0])
    gallery = Gallery.from_people({"me": Enroller(Settings()).enrol(photo).embedding[None]})
    settings = Settings()
    wrapped = FirstSeenConfident()
    pipeline = Pipeline(settings, detector=wrapped,
                        identifier=FacebankIdentifier(create_embedder(settings), lambda: gallery))
    pipeline.offline = True
    shown = []
    for index, frame in enumerate(frames):
        safe, report = pipeline.process(frame.copy(), index, 1 / 30)
        if index in SMEARED:
            x1, y1, x2, y2 = (round(v) for v in _his_box(report))
            shown.append(visibility(frame[y1:y2, x1:x2], safe.image[y1:y2, x1:x2]) >= 0.5)
    pipeline.close()
    assert wrapped.seen, "no weak box over the streamer's was found: this test checks nothing"
    assert np.mean(shown) <= 0.2, f"a once-confident box was taken for a ghost: he showed in {sum(shown)} frames"


@pytest.mark.parametrize(("box", "nose", "expected"), [
    ((-50, -35, 330, 335), (190, 200), True),  # the ghost: 1.8x his size, over 62 % of his box, nose 0.38 of him off
    ((-50, -35, 330, 335), (90, 170), False),  # as big and as placed, its nose 0.78 of him off: a face leaning in
    ((64, 80, 309, 403), (190, 250), False),  # his size, 30 % to the side: a face at his own distance, not a ghost
    ((100, 60, 260, 240), (200, 170), False),  # over a quarter of his box only
    ((130, 80, 200, 150), (165, 120), False),  # inside his box, but small: a face beside his cheek is not his
    ((380, 80, 620, 400), (500, 250), False),  # beside him
])
def test_what_counts_as_a_second_box_of_a_recognised_face(box, nose, expected) -> None:
    his, his_nose = np.array([137, 80, 382, 403], np.float32), np.array([260, 260], np.float32)
    assert is_ghost_of(np.array(box, np.float32), 0.4, nose, his, his_nose) is expected
    assert not is_ghost_of(np.array(box, np.float32), 0.9, nose, his, his_nose), "once found clearly, never a ghost"


@pytest.mark.parametrize("coasting", [False, True], ids=["keeping up", "far behind"])
def test_live_the_streamer_is_shown_through_a_pan_after_one_recheck(frames, visibility, tmp_path,
                                                                    coasting: bool) -> None:
    """Live mode embeds on a worker, and a face that another box overlaps is re-checked: while the overlap lasts
    every crop is void, so the ghost blurred him for as long as the smear. Its first frame is a sign (he is checked
    again once); after that he is shown through the pan. Far behind, every other frame is coasted (anonymized on
    the tracks' predictions): there too the ghost is a guess, not a found face that wins over him."""
    photo = tmp_path / "me.png"
    cv2.imwrite(str(photo), frames[0])
    gallery = Gallery.from_people({"me": Enroller(Settings()).enrol(photo).embedding[None]})
    settings = Settings()
    identifier = FacebankIdentifier(create_embedder(settings), lambda: gallery)
    identifier.run_in_background(True)
    pipeline = Pipeline(settings, identifier=identifier)
    pipeline.coast_alternate = coasting
    shown, ghosts = [], 0
    try:
        for index, frame in enumerate(frames):
            safe, report = pipeline.process(frame.copy(), index, 1 / 30)
            assert identifier.worker.wait_idle(30)  # results one frame late, as on a machine keeping up
            if index in SMEARED:
                his = max(report.faces, key=lambda f: f.score)
                ghosts += any(not f.visible and _over_most_of(f.xyxy, np.asarray(his.xyxy)) for f in report.faces)
                x1, y1, x2, y2 = (max(0, round(v)) for v in his.xyxy)
                shown.append(his.visible and visibility(frame[y1:y2, x1:x2], safe.image[y1:y2, x1:x2]) >= 0.5)
    finally:
        identifier.run_in_background(False)
        pipeline.close()
    assert ghosts >= len(SMEARED) // 2, "the smear no longer makes a ghost box: this test checks nothing"
    assert np.mean(shown) >= 0.8, f"live, he was blurred in {shown.count(False)} of {len(shown)} smeared frames"
