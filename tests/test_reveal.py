"""File mode's look-ahead shows a face recognised a few frames into a shot in the frames before, while its track's
continuity holds (engine/stages/lookahead.py, `Anonymizer.reveal`), and nowhere else.

Real faces: the dev clip's frames and the detector's boxes; the end-to-end figure (the performer visible in 99 %
of his frames, no bystander) is in tests/test_allowlist.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import BELOW_THRESHOLD, CHANGED, LOST, NOT_RECOGNISED_YET, FaceState, FrameReport
from engine.stages.anonymize import Anonymizer
from engine.stages.detect import create_detector
from engine.stages.lookahead import Lookahead

SETTINGS = Settings(backend="onnxruntime")
SEEN = (7, 0)  # a track's continuity: (its recognition state, its signs of another face so far)


@pytest.fixture(scope="module")
def shot(dev_clip):
    """The dev clip's first 4 frames, with the performer's box (the largest face) and a bystander's in each."""
    cap = cv2.VideoCapture(str(dev_clip))
    detector = create_detector(SETTINGS)
    frames = []
    for _ in range(4):
        frame = cap.read()[1]
        boxes = sorted(detector.detect(frame, SETTINGS.confidence).xyxy, key=lambda b: b[0] - b[2])
        assert len(boxes) >= 2, "the dev clip's first frames show the performer and a bystander"
        frames.append((frame, boxes[0], boxes[1]))
    return frames


def _pending(box, reason=NOT_RECOGNISED_YET, continuity=SEEN) -> FaceState:
    return FaceState(1, tuple(float(v) for v in box), 0.9, reason=reason, continuity=continuity)


def _run(shot, reasons, last_continuity=SEEN, revealable=True, extra=None):
    """Frames 0-2 with the performer pending (`reasons`), frame 3 with him recognised at `last_continuity`;
    the bystander (track 2) blurred throughout. Returns the frames sent and the anonymizer's view of the originals."""
    anonymizer, lookahead = Anonymizer(SETTINGS), Lookahead(8)
    for index, (frame, performer, bystander) in enumerate(shot):
        other = FaceState(2, tuple(float(v) for v in bystander), 0.9, reason=NOT_RECOGNISED_YET, continuity=(8, 0))
        boxes = [performer, bystander] + ([extra] if extra is not None and index < 3 else [])
        if index < 3:
            me = _pending(performer, reasons[index])
            safe = anonymizer.apply(frame.copy(), index, boxes,
                                    revealable={1: [performer]} if revealable else None)
        else:
            me = FaceState(1, tuple(float(v) for v in performer), 0.9, visible=True, reason=None,
                           continuity=last_continuity)
            safe = anonymizer.apply(frame.copy(), index, boxes[1:], keep=[performer])
        assert lookahead.push(safe, FrameReport(index, faces=[me, other]), anonymizer) == []
    return [safe for safe, _ in lookahead.flush()], lookahead


def _shown(image, original, box) -> bool:
    x1, y1, x2, y2 = (int(v) for v in box)
    return np.array_equal(image[y1:y2, x1:x2], original[y1:y2, x1:x2])


def test_a_face_recognised_later_is_shown_in_the_frames_held_before(shot):
    """The performer, not recognised yet in frames 0-2 (below the threshold in one), recognised in frame 3: his
    face goes out as it was in all four; the bystander beside him stays hidden in every frame."""
    sent, lookahead = _run(shot, [NOT_RECOGNISED_YET, BELOW_THRESHOLD, NOT_RECOGNISED_YET])
    for safe, (frame, performer, bystander) in zip(sent, shot, strict=True):
        assert _shown(safe.image, frame, performer), f"frame {safe.index}: the performer is still blurred"
        assert not _shown(safe.image, frame, bystander), f"frame {safe.index}: the bystander is visible"
        assert not safe._originals, "a frame sent still holds original pixels"
    assert lookahead.revealed == 3
    # Without the originals kept (live mode, the device path) the same frames stay blurred: the test can fail.
    sent, lookahead = _run(shot, [NOT_RECOGNISED_YET] * 3, revealable=False)
    assert not any(_shown(s.image, f, p) for s, (f, p, _) in zip(sent[:3], shot, strict=False))
    assert lookahead.revealed == 0


@pytest.mark.parametrize("case", ["another face since", "lost", "changed"])
def test_a_face_that_may_have_been_another_stays_blurred(shot, case):
    """A sign of a switch between the frames (its continuity moved on), or a frame where it was lost or looked
    different: that frame is not shown, whoever was recognised later."""
    if case == "another face since":
        sent, lookahead = _run(shot, [NOT_RECOGNISED_YET] * 3, last_continuity=(SEEN[0], SEEN[1] + 1))
        hidden = [0, 1, 2]
    else:
        reason = LOST if case == "lost" else CHANGED
        sent, lookahead = _run(shot, [NOT_RECOGNISED_YET, reason, NOT_RECOGNISED_YET])
        hidden = [1]
    for index in hidden:
        frame, performer, _ = shot[index]
        assert not _shown(sent[index].image, frame, performer), f"frame {index} showed a face of another stretch"
    assert lookahead.revealed == 3 - len(hidden)


def test_another_face_found_over_it_keeps_it_hidden_and_a_guess_leaves_only_its_box(shot):
    """A face found in that frame reaching into the face's box wins: nothing is shown. A lost face's guess
    reaching only into the region around it: its box is shown, the rest of the guess stays covered."""
    frame, performer, _ = shot[0]
    w = performer[2] - performer[0]
    anonymizer = Anonymizer(SETTINGS)
    over = performer + np.array([0.5, 0, 0.5, 0], np.float32) * w  # another face, half over his box
    safe = anonymizer.apply(frame.copy(), 0, [performer, over], revealable={1: [performer]})
    assert anonymizer.reveal(safe, performer, 1) is None
    assert not _shown(safe.image, frame, performer)

    beside = performer + np.array([1.1, 0, 1.1, 0], np.float32) * w  # a guess just beside it, in its margin
    safe = anonymizer.apply(frame.copy(), 0, [performer], guesses=[beside], revealable={1: [performer]})
    assert anonymizer.reveal(safe, performer, 1) is not None
    assert _shown(safe.image, frame, performer)
    x1, y1, x2, y2 = (int(v) for v in beside)
    assert np.abs(safe.image[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2]).mean() > 3, "the guess was uncovered"

    alone = anonymizer.apply(frame.copy(), 0, [performer], revealable={1: [performer]})
    assert anonymizer.reveal(alone, performer, 1) is not None
    assert anonymizer.reveal(alone, performer, 1) is None, "a face is shown once: its original is gone"
    grown = anonymizer._grow(performer, frame.shape[1], frame.shape[0], anonymizer.margin).clipped
    assert _shown(alone.image, frame, grown), "alone, its whole region (the fade around it) is as it was"


def test_a_frame_hidden_whole_shows_nothing(shot):
    frame, performer, _ = shot[0]
    anonymizer = Anonymizer(SETTINGS)
    safe = anonymizer.apply(frame.copy(), 0, [performer], revealable={1: [performer]})
    whole = anonymizer.whole(safe.image, 0)
    assert anonymizer.reveal(whole, performer, 1) is None


def test_live_with_a_look_ahead_shows_him_earlier_and_no_bystander(dev_clip, tmp_path, monkeypatch):
    """Live mode with `lookahead_frames` (opt-in delay), embeddings on the worker thread: the frames held show the
    performer where a later frame recognised him, and never a bystander. The frame's wait for a new face's first
    embedding (stop 51) and the camera's motion (stop 53) are off: each lets him be recognised on more frames as they
    are processed (with the camera's motion his track holds through a pan instead of starting anew), leaving the
    look-ahead 0-1 frames to show later, by the machine's timing (a clean-clone CI: 0), and 3 without them; the
    face-frames shown in all are the same, 57."""
    from engine import pipeline as pipeline_module
    from engine.pipeline import Pipeline
    from engine.recognition import identify_facebank
    from engine.recognition.identify_facebank import FacebankIdentifier
    from engine.recognition.recognize import create_embedder
    from facebank.live import LiveGallery
    from facebank.store import Facebank
    from tests.conftest import PERFORMER_PHOTO, need_data
    from tests.test_recognition import _frames, _ground_truth, _label

    need_data(PERFORMER_PHOTO)
    monkeypatch.setattr(identify_facebank, "WAIT_FOR_FIRST", False)
    monkeypatch.setattr(pipeline_module, "LIVE_CAMERA_MOTION", 0)
    bank = Facebank(tmp_path / "facebank.json")
    bank.add("Lin", [PERFORMER_PHOTO])
    identifier = FacebankIdentifier(create_embedder(SETTINGS), LiveGallery(bank))
    identifier.run_in_background(True)
    pipeline = Pipeline(SETTINGS, identifier=identifier)
    pipeline.reveal_later(True)
    lookahead, truth, sent = Lookahead(8), _ground_truth(), []
    try:
        for index, frame in enumerate(_frames()[:120]):
            safe, report = pipeline.process(frame.copy(), index, 1 / 29.97)
            assert identifier.worker.wait_idle(30)
            sent += [tag for _, tag in lookahead.push(safe, report, pipeline.anonymizer, tag=report)]
        sent += [tag for _, tag in lookahead.flush()]
    finally:
        identifier.run_in_background(False)
        pipeline.close()
    for report in sent:
        for face in report.faces:
            if face.visible:
                assert _label(np.asarray(face.xyxy), truth[report.index]) == "allow", f"frame {report.index}"
    assert lookahead.revealed > 0


def test_nothing_is_shown_across_a_frame_nobody_looked_at(shot):
    """A frame hidden whole between (the detector failed, panic, pause: no identifier ran there) ends the stretch:
    the frames before it stay blurred, whoever is recognised after it."""
    anonymizer, lookahead = Anonymizer(SETTINGS), Lookahead(8)
    frame, performer, _ = shot[0]
    lookahead.push(anonymizer.apply(frame.copy(), 0, [performer], revealable={1: [performer]}),
                   FrameReport(0, faces=[_pending(performer)]), anonymizer)
    lookahead.push(anonymizer.whole(shot[1][0].copy(), 1), FrameReport(1, whole_frame="detector-error"), anonymizer)
    frame3, performer3, _ = shot[2]
    recognised = FaceState(1, tuple(float(v) for v in performer3), 0.9, visible=True, reason=None, continuity=SEEN)
    lookahead.push(anonymizer.apply(frame3.copy(), 2, [], keep=[performer3]), FrameReport(2, faces=[recognised]),
                   anonymizer)
    sent = [safe for safe, _ in lookahead.flush()]
    assert not _shown(sent[0].image, frame, performer) and lookahead.revealed == 0


def test_a_dissolve_from_a_bystander_to_the_enrolled_person_shows_nothing_of_the_bystander():
    """A cross-dissolve changes little from frame to frame, so the tracker keeps one id and neither the scene-cut nor
    the new-look check fires (a reviewer's case): the bystander before it, embedded below the threshold, must not
    be shown when the enrolled person after it is recognised. Two LFW people, the file-mode pipeline."""
    import glob

    from engine.pipeline import Pipeline
    from engine.recognition.identify_facebank import FacebankIdentifier
    from engine.recognition.recognize import create_embedder
    from engine.stages.lookahead import FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES
    from facebank.live import LiveGallery
    from facebank.store import Facebank
    from tests.conftest import DATA, need_data

    root = DATA / "recognition_lfw" / "lfw-deepfunneled"
    need_data(root / "George_W_Bush", root / "Al_Pacino")
    enrolled, bystander = sorted(glob.glob(str(root / "George_W_Bush" / "*.jpg"))), \
        sorted(glob.glob(str(root / "Al_Pacino" / "*.jpg")))
    bank = Facebank(Path(tempfile.mkdtemp()) / "facebank.json")
    bank.add("A", [enrolled[0]])
    pipeline = Pipeline(SETTINGS, identifier=FacebankIdentifier(create_embedder(SETTINGS), LiveGallery(bank)))
    pipeline.offline = True
    pipeline.reveal_later(True)
    read = lambda path: cv2.resize(cv2.imread(path), (500, 500))  # noqa: E731
    a, b = read(enrolled[1]), read(bystander[0])
    frames = [b] * 6 + [cv2.addWeighted(b, 1 - w, a, w, 0) for w in np.linspace(0.1, 0.9, 9)] + [a] * 10
    lookahead, sent = Lookahead(FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES), []
    try:
        for index, frame in enumerate(frames):
            safe, report = pipeline.process(frame.copy(), index, 1 / 25)
            sent += lookahead.push(safe, report, pipeline.anonymizer, tag=report)
        sent += lookahead.flush()
    finally:
        pipeline.close()
    assert any(f.visible for f in sent[-1][1].faces), "the enrolled person is no longer recognised: proves nothing"
    for safe, _ in sent[:6]:
        centre = np.abs(safe.image[150:350, 150:350].astype(int) - b[150:350, 150:350]).mean()
        assert centre > 10, f"frame {safe.index}: the bystander before the dissolve was shown"
    assert lookahead.revealed == 0


def test_a_face_overlapping_another_is_never_kept_for_later():
    """Which pixels are whose is unsure where two found faces overlap: neither is kept to be shown later, and a
    detection is a face's own only when it matches that face best."""
    from types import SimpleNamespace

    from engine.faces import Identity
    from engine.pipeline import _revealable

    def track(track_id, box):
        box = np.asarray(box, np.float32)
        return SimpleNamespace(track_id=track_id, xyxy=box, lost_frames=0, safety_box=lambda: box.copy(),
                               identity=Identity.blurred(NOT_RECOGNISED_YET, continuity=(track_id, 0)))

    apart = [track(1, (0, 0, 100, 100)), track(2, (300, 0, 400, 100))]
    detections = [np.array([2, 0, 102, 100], np.float32), np.array([298, 0, 398, 100], np.float32)]
    own = _revealable(apart, detections, {})
    assert set(own) == {1, 2}
    assert len(own[1]) == 2 and np.array_equal(own[1][1], detections[0])
    assert not any(np.array_equal(b, detections[1]) for b in own[1])
    close = [track(1, (0, 0, 100, 100)), track(2, (60, 0, 160, 100))]
    assert _revealable(close, [], {}) == {}


def test_a_face_shown_later_is_hidden_again_over_all_it_showed(shot):
    """Its person leaves the facebank (or the threshold rises) while frames are held: `hide_kept` covers all the
    face's region that was shown, its weak box's guess (grown around it) included."""
    frame, performer, _ = shot[0]
    w = performer[2] - performer[0]
    guess = performer + np.array([-1, -1, 1, 1], np.float32) * 0.6 * w  # its weak box's guess
    anonymizer, lookahead = Anonymizer(SETTINGS), Lookahead(8)
    lookahead.push(anonymizer.apply(frame.copy(), 0, [performer], guesses=[guess],
                                    revealable={1: [performer, guess]}),
                   FrameReport(0, faces=[_pending(performer)]), anonymizer)
    recognised = FaceState(1, tuple(float(v) for v in performer), 0.9, visible=True, reason=None, continuity=SEEN)
    lookahead.push(anonymizer.apply(shot[1][0].copy(), 1, [], keep=[performer]), FrameReport(1, faces=[recognised]),
                   anonymizer)
    assert lookahead.revealed == 1
    lookahead.hide_kept(anonymizer)
    sent = [safe for safe, _ in lookahead.flush()]
    x1, y1, x2, y2 = (max(0, int(v)) for v in guess)
    ring = np.abs(sent[0].image[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2]).max(axis=2) > 0
    ring[int(performer[1]) - y1:int(performer[3]) - y1, int(performer[0]) - x1:int(performer[2]) - x1] = True
    assert ring.mean() > 0.9, "part of what was shown stayed uncovered"


def test_a_frame_processed_before_a_facebank_change_shows_nothing_back(shot):
    """`hide_kept` runs before the frame processed with the old gallery is pushed: that frame's recognition must
    not show the face in the frames held before it."""
    frame, performer, _ = shot[0]
    anonymizer, lookahead = Anonymizer(SETTINGS), Lookahead(8)
    lookahead.push(anonymizer.apply(frame.copy(), 0, [performer], revealable={1: [performer]}),
                   FrameReport(0, faces=[_pending(performer)]), anonymizer)
    lookahead.hide_kept(anonymizer)
    recognised = FaceState(1, tuple(float(v) for v in performer), 0.9, visible=True, reason=None, continuity=SEEN)
    lookahead.push(anonymizer.apply(shot[1][0].copy(), 1, [], keep=[performer]), FrameReport(1, faces=[recognised]),
                   anonymizer)
    assert lookahead.revealed == 0


@pytest.mark.parametrize("change,size", [({"detect_width": 1280}, 12.0), ({"margin": 0.15}, 60.0)])
def test_a_settings_change_while_frames_are_held_uncovers_no_neighbour(shot, change, size):
    """A settings change makes a new anonymizer (smaller margin, or a higher detect_width: a smaller floor), and the
    look-ahead reveals frames anonymized by the old one with it. It must judge the neighbours by the regions they
    were blurred in: judged by its own smaller ones, a found face just beside the performer's region seemed apart,
    and his whole region came back raw over the part of the neighbour's blur inside it (a review found it)."""
    frame, performer, _ = shot[0]
    old = Anonymizer(Settings(backend="onnxruntime", detect_width=480, margin=0.5))
    new = Anonymizer(Settings(backend="onnxruntime", **{"detect_width": 480, "margin": 0.5, **change}))
    region = old._grow(performer, frame.shape[1], frame.shape[0], old.margin).clipped
    # A face's box (small: its margin is the floor), placed so that only the old anonymizer's region of it reaches his.
    floor = old._margin_floor(frame.shape[1], frame.shape[0])
    x = region[2] + max(floor, size * old.margin) - 2
    y = (performer[1] + performer[3]) / 2 - size / 2
    neighbour = np.array([x, y, x + size, y + size], np.float32)
    assert new._grow(neighbour, frame.shape[1], frame.shape[0], new.margin).clipped[0] >= region[2], \
        "the new anonymizer's region of the neighbour must not reach his: else this test shows nothing"
    safe = old.apply(frame.copy(), 0, [performer, neighbour], revealable={1: [performer]})
    blurred = safe.image.copy()
    assert new.reveal(safe, performer, 1) is not None
    x1, y1, x2, y2 = old._grow(neighbour, frame.shape[1], frame.shape[0], old.margin).clipped
    assert np.array_equal(safe.image[y1:y2, x1:x2], blurred[y1:y2, x1:x2]), "the neighbour's blur was uncovered"


@pytest.mark.parametrize("change", [{"margin": 0.15}, {"detect_width": 1280}])
def test_a_face_shown_later_is_hidden_again_whole_after_a_settings_change(shot, change):
    """Shown in a held frame with one anonymizer's regions, then its person leaves the facebank after a settings
    change (a smaller margin or floor: a new anonymizer): `hide_kept` covers all the region that was shown, not
    the new anonymizer's smaller one (a ring of the face stayed as shown; a review found it)."""
    frame, performer, _ = shot[0]
    old = Anonymizer(Settings(backend="onnxruntime", detect_width=480, margin=0.5))
    new = Anonymizer(Settings(backend="onnxruntime", **{"detect_width": 480, "margin": 0.5, **change}))
    small = performer.copy()
    small[2:] = small[:2] + 14  # a small face: its region is set by the floor, which detect_width changes
    face = small if "detect_width" in change else performer
    lookahead = Lookahead(8)
    lookahead.push(old.apply(frame.copy(), 0, [face], revealable={1: [face]}),
                   FrameReport(0, faces=[_pending(face)]), old)
    recognised = FaceState(1, tuple(float(v) for v in face), 0.9, visible=True, reason=None, continuity=SEEN)
    lookahead.push(old.apply(shot[1][0].copy(), 1, [], keep=[face]), FrameReport(1, faces=[recognised]), old)
    assert lookahead.revealed == 1
    shown = old._grow(face, frame.shape[1], frame.shape[0], old.margin).clipped
    assert new._grow(face, frame.shape[1], frame.shape[0], new.margin).clipped != shown, "nothing changed"
    lookahead.hide_kept(new)
    sent = [safe for safe, _ in lookahead.flush()]
    x1, y1, x2, y2 = shown
    changed = np.abs(sent[0].image[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2]).max(axis=2) > 0
    assert changed.mean() > 0.97, f"only {changed.mean():.1%} of what was shown was covered again"
