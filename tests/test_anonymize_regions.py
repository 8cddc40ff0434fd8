"""The anonymizer's region work, done in place and once per face: it must cover what it covered before.

Real faces: YuNet on the dev clip's frames. A found face reaches the anonymizer twice (its track's box and its
own detection); it is now one region worked as two passes, written straight into the frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import box_iou
from engine.stages import anonymize
from engine.stages.anonymize import FADE_REGION_PX, PAIR_MIN_SIZE, Anonymizer, Region, _soft_mask
from engine.stages.detect import create_detector, detection_scale
from evaluation.video import VISIBLE_AT, face_visibility
from tests.conftest import need_data

SETTINGS = Settings(backend="onnxruntime")
FRAMES = (0, 60, 120, 180, 240)


@pytest.fixture(scope="module")
def faces(dev_clip) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, its detected face boxes) for a few frames of the dev clip."""
    cap = cv2.VideoCapture(str(dev_clip))
    detector = create_detector(SETTINGS)
    out, index = [], 0
    while index <= max(FRAMES):
        ok, frame = cap.read()
        assert ok
        if index in FRAMES:
            out.append((frame, detector.detect(frame, SETTINGS.confidence).xyxy))
        index += 1
    assert sum(len(b) for _, b in out) >= 10, "too few faces found to test anything"
    return out


def _visibility(original: np.ndarray, output: np.ndarray, box: np.ndarray, grow: float = 0.0) -> float:
    """The scorer's measure on `box` grown by `grow` per side (a ground-truth box is often larger than the
    detector's) and cut to the frame."""
    w, h = box[2] - box[0], box[3] - box[1]
    x1, y1 = int(max(0, box[0] - grow * w)), int(max(0, box[1] - grow * h))
    x2, y2 = int(min(original.shape[1], box[2] + grow * w)), int(min(original.shape[0], box[3] + grow * h))
    grey_in, grey_out = (cv2.cvtColor(img[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY) for img in (original, output))
    return face_visibility(grey_in, grey_out)


# The track's box beside a detection: a few pixels off (the Kalman estimate lags the detection), or as far off
# as still counts as one face (IoU ~0.55: a fast move).
TWIN_OFFSETS = {"lag": (0.04, -0.03, 0.05, -0.02), "fast": (0.15, 0.15, 0.15, 0.15)}


def _twin(box: np.ndarray, offset: str = "lag") -> np.ndarray:
    w = box[2] - box[0]
    return box + np.array(TWIN_OFFSETS[offset], np.float32) * w


@pytest.mark.parametrize("mode,shape", [("blur", "box"), ("blur", "ellipse"), ("fill", "box")])
@pytest.mark.parametrize("strength", [0.0, 0.6])
@pytest.mark.parametrize("offset", sorted(TWIN_OFFSETS))
def test_a_face_given_twice_is_covered_as_well_as_by_two_passes(faces, mode, shape, strength, offset):
    anonymizer = Anonymizer(SETTINGS.updated({"mode": mode, "shape": shape, "strength": strength}))
    worse = []
    for frame, boxes in faces:
        once = anonymizer.apply(frame.copy(), 0, [b for box in boxes for b in (box, _twin(box, offset))]).image
        twice = frame.copy()
        for box in boxes:  # what the anonymizer did before: each of the two boxes in a pass of its own
            for b in (box, _twin(box, offset)):
                region = anonymizer._grow(b, frame.shape[1], frame.shape[0], anonymizer.margin)
                anonymizer._anonymize_region(twice, region)
        for box in boxes:
            for grow in (0.0, 0.15):
                new, old = _visibility(frame, once, box, grow), _visibility(frame, twice, box, grow)
                worse.append(new - old)
                assert new < 0.25, f"a face left visible: {new:.2f} (two passes: {old:.2f})"
    # Not pixel for pixel the same (the cover is blurred on one thumbnail, not on two offset ones): measured,
    # each face within 0.025 of two passes either way, the most visible at 0.16 both ways (the scorer counts a
    # face visible from 0.5).
    assert max(worse) < 0.03, f"one region covers a face less than two passes did, by up to {max(worse):.3f}"


def test_in_place_work_equals_the_whole_region_blended(faces):
    """The cover and the fade written into the frame in strips: the same pixels as blending the whole region
    with its template, and nothing outside the region touched. Faces cut by every edge of the frame too."""
    anonymizer = Anonymizer(SETTINGS)
    frame, boxes = max(faces, key=lambda fb: len(fb[1]))
    height, width = frame.shape[:2]
    box = boxes[0]
    w, h = box[2] - box[0], box[3] - box[1]
    def shift(dx: float, dy: float) -> np.ndarray:
        return box + np.array([dx, dy, dx, dy], np.float32)
    # whole; half out at the left, the top; two thirds out at the right, the bottom
    cut = [box, shift(-box[0] - w / 2, 0), shift(0, -box[1] - h / 2), shift(width - w / 3 - box[0], 0),
           shift(0, height - h / 3 - box[1])]
    for b in cut:
        for passes in (1, 2):
            region = anonymizer._grow(np.asarray(b, np.float32), width, height, anonymizer.margin)._replace(
                passes=passes)
            got = frame.copy()
            anonymizer._anonymize_region(got, region)
            assert np.array_equal(_outside(got, region), _outside(frame, region)), "pixels outside the region"
            x1, y1, x2, y2 = region.clipped
            gx1, gy1, gx2, gy2 = region.grown
            roi = frame[y1:y2, x1:x2]
            cover = anonymizer._cover(roi.copy(), passes=passes)
            alpha = cv2.resize(_soft_mask("box", passes=passes), (gx2 - gx1, gy2 - gy1),
                               interpolation=cv2.INTER_LINEAR)[y1 - gy1:y2 - gy1, x1 - gx1:x2 - gx1]
            expected = cv2.blendLinear(cover, roi.copy(), np.ascontiguousarray(alpha),
                                       np.ascontiguousarray(1 - alpha))
            assert np.abs(got[y1:y2, x1:x2].astype(int) - expected).max() <= 1
            # the part of the face left in the frame is hidden right up to the frame's edge
            assert _visibility(frame, got, np.asarray(b, np.float32)) < 0.25


@pytest.mark.parametrize("blocks", [(5, 5), (7, 6), (3, 9), (24, 20)])  # blur covers: 3-25 blocks a side
def test_a_large_region_averaged_down_equals_opencvs_area_resize(faces, blocks):
    """Block sums by rows (a large region: `_block_means`) give INTER_AREA's block means, on views of a real
    1080p frame at the largest face's region and the whole frame, in colour and in grey."""
    frame, boxes = max(faces, key=lambda fb: float(np.max(fb[1][:, 2] - fb[1][:, 0])))
    scale = 1920 / frame.shape[1]
    frame = cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR)
    box = boxes[np.argmax(boxes[:, 2] - boxes[:, 0])] * scale
    region = Anonymizer(SETTINGS)._grow(np.asarray(box, np.float32), 1920, 1080, 0.6)
    x1, y1, x2, y2 = region.clipped
    width, height = blocks
    for roi in (frame[y1:y2, x1:x2], frame, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2]):
        kx, ky = roi.shape[1] // width, roi.shape[0] // height
        assert roi.shape[0] * roi.shape[1] >= anonymize.BLOCK_SUM_MIN_PX, "the region must take the block sums"
        expected = cv2.resize(roi[: height * ky, : width * kx], (width, height), interpolation=cv2.INTER_AREA)
        got = anonymize._area_down(roi, width, height)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert np.array_equal(got, expected)
    tie = np.full((1080, 1920, 3), 100, np.uint8)  # every block's mean exactly x.5 (an even area), sums past 2^24
    tie[::2, :, :] = 101
    for width, height in ((5, 5), (3, 9)):
        assert np.array_equal(anonymize._area_down(tie, width, height),
                              cv2.resize(tie[: 1080 // height * height, : 1920 // width * width], (width, height),
                                         interpolation=cv2.INTER_AREA))


def _outside(image: np.ndarray, region: Region) -> np.ndarray:
    x1, y1, x2, y2 = region.clipped
    masked = image.copy()
    masked[y1:y2, x1:x2] = 0
    return masked


CROWD = "detection_unannotated/linzaer_imgs/25.jpg"
CROWD_GT = Path(__file__).resolve().parents[1] / "bench" / "corpus" / "photo_linzaer_imgs_25.gt.json"
CROWD_SCALE = 2.0  # the suite renders this photo at about 1.6-2x: its faces 12-50 px, the leaked one 20 px


@pytest.fixture(scope="module")
def crowd(data_dir) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frame, detected boxes, ground-truth boxes) for the crowd photo of linzaer 25 at 2x, whole and with its
    top cut through a row of faces (faces cut by the frame's edge: the leaked face was one)."""
    need_data(data_dir / CROWD)
    photo = cv2.imread(str(data_dir / CROWD))
    photo = cv2.resize(photo, None, fx=CROWD_SCALE, fy=CROWD_SCALE, interpolation=cv2.INTER_LINEAR)
    gt = np.array([f["box"] for f in json.loads(CROWD_GT.read_text())["faces"] if not f["ignore"]],
                  np.float32) * CROWD_SCALE
    detector = create_detector(SETTINGS)
    out = []
    for top in (0, 300):  # 300 at 2x: through the faces of the back rows
        frame = np.ascontiguousarray(photo[top:])
        out.append((frame, detector.detect(frame, SETTINGS.confidence).xyxy, gt - [0, top, 0, top]))
    assert sum(len(b) for _, b, _ in out) >= 200, "too few faces found to test anything"
    return out


def test_a_small_face_given_twice_is_covered_as_by_two_passes(crowd, monkeypatch):
    """Regression: linzaer 25 (suite, blur-all) leaked one face-frame once a face's two boxes became one union
    region worked twice: a 20 px face cut by the frame's top, 0.49 visible with two passes, 0.52 with one
    (the scorer counts 0.5). A small face keeps its two real passes: the same pixels, so never less covered.
    (Region by region: a crowd's regions together are the next test's.)"""
    monkeypatch.setattr(anonymize, "BULK_MIN_REGIONS", 1 << 30)
    anonymizer = Anonymizer(SETTINGS)
    worse = []
    for frame, boxes, gt in crowd:
        small = [b for b in boxes if max(b[2] - b[0], b[3] - b[1]) * 1.3 < PAIR_MIN_SIZE]
        given = [b for box in small for b in (box, _twin(box))]
        once = anonymizer.apply(frame.copy(), 0, given).image
        twice = frame.copy()
        for b in given:
            region = anonymizer._grow(b, frame.shape[1], frame.shape[0], anonymizer.margin)
            if region is not None:
                anonymizer._anonymize_region(twice, region)
        height, width = frame.shape[:2]
        for box in gt:
            if box[2] - box[0] >= 10 and box[3] > 2 and box[1] < height:
                cut = np.clip(box, 0, [width, height, width, height])
                worse.append(_visibility(frame, once, cut) - _visibility(frame, twice, cut))
        assert np.array_equal(once, twice), "a small face's pair was not worked as its two passes"
    assert max(worse) <= 0.0, f"a face less covered than by two passes, by up to {max(worse):.3f}"


def test_a_crowd_covered_together_hides_every_face_as_one_by_one(crowd, monkeypatch):
    """A crowd's regions (each face given twice, as live mode gives a face's track box and detection) covered together
    by size class (`_cover_crowd`: one blur a class, each region cut from it) against one by one: no face the scorer
    counts visible, the most visible face less visible, and the faces as hidden on average. Measured on 465 faces:
    the most visible 0.22 together against 0.45 one by one, the mean 0.006 lower; two 31 px faces 0.01 -> 0.21."""
    anonymizer = Anonymizer(SETTINGS)
    worse, checked, most = [], 0, [0.0, 0.0]
    for frame, boxes, gt in crowd:
        given = [b for box in boxes for b in (box, _twin(box))]
        together = anonymizer.apply(frame.copy(), 0, given).image
        with monkeypatch.context() as one_by_one:
            one_by_one.setattr(anonymize, "BULK_MIN_REGIONS", 1 << 30)
            alone = anonymizer.apply(frame.copy(), 0, given).image
        assert not np.array_equal(together, alone), "no crowd cover: the test checks nothing"
        height, width = frame.shape[:2]
        for box in gt:
            if box[2] - box[0] >= 10 and box[3] > 2 and box[1] < height:
                cut = np.clip(box, 0, [width, height, width, height])
                a, b = _visibility(frame, together, cut), _visibility(frame, alone, cut)
                if b < VISIBLE_AT:  # faces detected and covered one by one
                    worse.append(a - b)
                    checked += 1
                    most = [max(most[0], a), max(most[1], b)]
                    assert a < VISIBLE_AT, f"a face covered one by one ({b:.2f}) visible together ({a:.2f})"
    assert checked >= 200
    assert most[0] <= most[1], f"the most visible face: {most[0]:.2f} together, {most[1]:.2f} one by one"
    assert np.mean(worse) <= 0.0, f"faces more visible together, by {np.mean(worse):.3f} on average"


@pytest.mark.parametrize("shape", ["box", "ellipse"])
@pytest.mark.parametrize("mode", ["blur", "mosaic", "fill"])
def test_a_guess_fades_as_a_found_face_does_and_a_large_one_only_at_its_edge(faces, mode, shape):
    """A lost track's guess is covered as a found face is (with the box's fade), but the fade of a guess wider than
    FADE_REGION_PX keeps the depth it has at that width: a 1,000 px guess's band, a sixth of it wide, was most
    of its cost. Deeper than that every pixel is the cover; the face is no more visible than under the found path."""
    anonymizer = Anonymizer(Settings(backend="onnxruntime", mode=mode, shape=shape))
    checked = large = 0
    for frame, boxes in faces:
        height, width = frame.shape[:2]
        for face in boxes:
            for scale in (1.0, 4.0):  # the face's own box, and a lost track's grown guess around it
                centre, half = (face[:2] + face[2:]) / 2, (face[2:] - face[:2]) / 2 * scale
                box = np.concatenate([centre - half, centre + half]).astype(np.float32)
                region = anonymizer._grow(box, width, height, anonymizer.margin)
                if region is None:
                    continue
                (x1, y1, x2, y2), (gx1, gy1, gx2, gy2) = region.clipped, region.grown
                guessed = anonymizer.apply(frame.copy(), 0, [], guesses=[box]).image
                outside = np.ones(frame.shape[:2], bool)
                outside[y1:y2, x1:x2] = False
                np.testing.assert_array_equal(guessed[outside], frame[outside])  # nothing else touched
                found = anonymizer.apply(frame.copy(), 0, [box]).image
                assert _visibility(frame, guessed, face) <= _visibility(frame, found, face) + 0.01
                if max(gx2 - gx1, gy2 - gy1) <= FADE_REGION_PX:
                    if shape == "box":  # the found face's own fade, to a grey level (an ellipse's guess is a box)
                        assert np.abs(guessed.astype(int) - found.astype(int)).max() <= 1
                else:
                    depth = 12 * FADE_REGION_PX // 64  # the template's fade is 11 of its 64 cells deep
                    cover = anonymizer._cover(frame[y1:y2, x1:x2].copy())
                    inner = np.s_[max(y1, gy1 + depth) - y1: min(y2, gy2 - depth) - y1,
                                  max(x1, gx1 + depth) - x1: min(x2, gx2 - depth) - x1]
                    np.testing.assert_array_equal(guessed[y1:y2, x1:x2][inner], cover[inner])
                    if gx1 >= 0 and gx2 <= width:  # its outer columns fade: nearer the original than the cover is
                        edge = np.s_[:, [0, 1, -2, -1]]
                        original = frame[y1:y2, x1:x2][edge].astype(int)
                        kept = np.abs(guessed[y1:y2, x1:x2][edge].astype(int) - original).mean()
                        assert kept < 0.5 * np.abs(cover[edge].astype(int) - original).mean()
                    large += 1
                checked += 1
    assert checked >= 20 and large >= 5


def test_a_guess_edge_across_a_crowd_face_draws_no_detail_the_scorer_sees(monkeypatch):
    """linzaer 25 (a crowd photo of the corpus), frame 33: a lost track's guess ends across a 30 px face at the
    frame's top. Covered edge to edge, the guess's hard edge drew a line through that face, blurred as it was, and
    score_video.py's measure counted it visible (0.80; 0.24 with the fade)."""
    from tests.test_recall import _corpus_clip, _file_mode_output

    images, boxes = _corpus_clip("imgs_25_", 48)
    assert 150 in boxes[33], "the face is no longer annotated in frame 33"
    x1, y1, x2, y2 = (round(float(v)) for v in boxes[33][150])  # as the scorer crops it
    crossing: list[bool] = []
    apply = Anonymizer.apply

    def spy(self, frame, index, boxes, guesses=(), keep=(), revealable=None):
        guesses = list(guesses)
        if index == 33:  # does a guess's region end inside the face's box?
            for guess in guesses:
                region = self._grow(guess, frame.shape[1], frame.shape[0], self.margin)
                if region is not None:
                    gx1, gy1, gx2, gy2 = region.clipped
                    crossing.append((any(x1 < v < x2 for v in (gx1, gx2)) and gy1 < y2 and gy2 > y1)
                                    or (any(y1 < v < y2 for v in (gy1, gy2)) and gx1 < x2 and gx2 > x1))
        return apply(self, frame, index, boxes, guesses, keep, revealable)

    monkeypatch.setattr(Anonymizer, "apply", spy)
    original, anonymized = (cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
                            for image in (images[33], _file_mode_output(images)[33]))
    assert any(crossing), "no guess ends across the face in frame 33 now: the test checks nothing"
    assert face_visibility(original, anonymized) < 0.4


@pytest.mark.parametrize("direction", [(1, 0), (-1, 0), (0, 1), (0, -1)])
def test_a_small_face_boxed_a_stride_off_is_still_covered(data_dir, monkeypatch, direction):
    """A detector places a small face's box to within about its stride, and the face moves between frames: the
    margin's floor (MARGIN_FLOOR_NETWORK_PX) covers a crowd's faces whose boxes are 3/4 of the main pass's stride
    off, where 0.25 of a 15-40 px box did not (WIDER Meeting_26: a 22 px face 13 px off its box, half shown).
    The real crowd of linzaer 25 as the photo is, every detected face's box moved; the scorer's measure on the
    annotated boxes."""
    need_data(data_dir / CROWD)
    frame = cv2.imread(str(data_dir / CROWD))
    gt = np.array([f["box"] for f in json.loads(CROWD_GT.read_text())["faces"] if not f["ignore"]], np.float32)
    detected = create_detector(SETTINGS).detect(frame, SETTINGS.confidence).xyxy
    pairs = []
    for box in gt[(gt[:, 2] - gt[:, 0]) >= 10]:  # the scorer's smallest
        overlap = [box_iou(d, box) for d in detected]
        if overlap and max(overlap) >= 0.3:
            pairs.append((box, detected[int(np.argmax(overlap))]))
    assert len(pairs) >= 150, "too few of the crowd's faces detected to test anything"
    shipped = anonymize.MARGIN_FLOOR_NETWORK_PX
    stride = 8.0 / detection_scale(frame, SETTINGS.detect_width)  # YuNet's finest stride, in the frame's pixels
    shift = 0.75 * stride * np.array(direction * 2, np.float32)

    def visible(floor: float) -> int:
        monkeypatch.setattr(anonymize, "MARGIN_FLOOR_NETWORK_PX", floor)
        out = Anonymizer(SETTINGS).apply(frame.copy(), 0, [box + shift for _, box in pairs]).image
        return sum(_visibility(frame, out, np.clip(face, 0, [frame.shape[1], frame.shape[0]] * 2)) >= 0.5
                   for face, _ in pairs)

    assert visible(0.0) > 0, "without the floor every face was covered anyway: this test shows nothing"
    assert visible(shipped) == 0


@pytest.mark.parametrize("size", [(640, 360), (1920, 1080), (3840, 2160)])
def test_a_whole_hidden_frame_hides_a_close_up_at_any_size(data_dir, size):
    """Panic, pause and a failed detector hide the whole frame: a face filling it (someone leaning into a 4K
    camera; a huge photo) must be gone at every size. A fixed 1/32 left the 4K face 68 blocks tall: YuNet found it
    at 0.89 and the scorer counted it visible. Here no detector pass finds a face even at a low bar, and the
    scorer's measure calls it hidden."""
    photo = data_dir / "recognition_face_recognition" / "examples" / "obama-1080p.jpg"
    need_data(photo)
    width, height = size
    detector = create_detector(SETTINGS)
    image = cv2.imread(str(photo))
    face = detector.detect(image, SETTINGS.confidence).xyxy[0]
    # the face filling 80 % of the frame's height, centred
    scale = 0.8 * height / (face[3] - face[1])
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    cx, cy = (face[0] + face[2]) / 2 * scale, (face[1] + face[3]) / 2 * scale
    shift = np.float32([[1, 0, width / 2 - cx], [0, 1, height / 2 - cy]])
    frame = cv2.warpAffine(big, shift, (width, height), borderMode=cv2.BORDER_REPLICATE)
    assert len(detector.detect(frame, 0.5).xyxy), "the close-up itself must be a face the detector finds"
    hidden = Anonymizer(SETTINGS).whole(frame.copy(), 0).image
    assert not len(detector.detect(hidden, 0.3).xyxy)
    x1, y1, x2, y2 = (int(v) for v in ((face * scale) + np.tile([width / 2 - cx, height / 2 - cy], 2)))
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    grey_in, grey_out = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in (frame, hidden))
    assert face_visibility(grey_in[y1:y2, x1:x2], grey_out[y1:y2, x1:x2]) < VISIBLE_AT


def test_a_crowd_with_large_guesses_is_covered_together_and_hides_as_one_by_one(crowd, monkeypatch):
    """In a crowd every region is covered together (`_one_by_one`): a size class of fewer than BULK_MIN_REGIONS joins
    the next larger one, regions over the last bound are a class of their own, each class blurred at no less than
    its largest region (a panning crowd's lost faces grow guesses of 350-1,000 px, which were covered one by one).
    Against every region one by one: no face the scorer counts visible, the most visible no more so, the faces as
    hidden on average. Measured on 475 faces: the most visible 0.040 together against 0.046 one by one, the mean 0.001
    lower, one face 0.026 more visible (hard edges where fades were; of the 0.5 that counts as visible)."""
    anonymizer = Anonymizer(SETTINGS)
    groups: list[tuple[list[int], int]] = []
    real_cover = anonymizer._cover_crowd
    monkeypatch.setattr(anonymizer, "_cover_crowd", lambda frame, regions, largest: (
        groups.append(([anonymize._long_side(r) for r in regions], largest)), real_cover(frame, regions, largest)))
    worse, most = [], [0.0, 0.0]
    for frame, boxes, gt in crowd:
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sides = (boxes[:, 2:] - boxes[:, :2]).max(axis=1, keepdims=True)
        lost = np.hstack([centres - 0.8 * sides, centres + 0.8 * sides])[::3]  # lost faces' grown boxes
        medium = np.hstack([centres - 2 * sides, centres + 2 * sides])[::20]  # ~12: a class too small on its own
        large = np.hstack([centres - 5 * sides, centres + 5 * sides])[::40]  # and larger than the last class
        guesses = [*lost, *medium, *large]
        given = [b for box in boxes for b in (box, _twin(box))]
        groups.clear()
        together = anonymizer.apply(frame.copy(), 0, given, guesses=guesses).image
        for sides_of, largest in groups:
            assert max(sides_of) <= largest, "a class blurred at less than its largest region"
        assert any(max(s) > anonymize.BULK_CLASSES[-1] for s, _ in groups), "no region over the last bound: no test"
        classes = [{int(np.searchsorted(anonymize.BULK_CLASSES, side)) for side in s} for s, _ in groups]
        assert any(len(c) > 1 for c in classes), "no class joined a larger one: no test"
        with monkeypatch.context() as one_by_one:
            one_by_one.setattr(anonymize, "BULK_MIN_REGIONS", 1 << 30)
            alone = anonymizer.apply(frame.copy(), 0, given, guesses=guesses).image
        height, width = frame.shape[:2]
        for box in gt:
            if box[2] - box[0] >= 10 and box[3] > 2 and box[1] < height:
                cut = np.clip(box, 0, [width, height, width, height])
                a, b = _visibility(frame, together, cut), _visibility(frame, alone, cut)
                if b < VISIBLE_AT:
                    assert a < VISIBLE_AT, f"a face covered one by one ({b:.2f}) visible together ({a:.2f})"
                    worse.append(a - b)
                    most = [max(most[0], a), max(most[1], b)]
    assert len(worse) >= 200
    assert most[0] <= most[1], f"the most visible face: {most[0]:.2f} together, {most[1]:.2f} one by one"
    assert np.mean(worse) <= 0.0, f"faces more visible together, by {np.mean(worse):.3f} on average"
