"""bench/annotate.py: the corpus annotator's mirror pass, frontal enrol frame, eye-check edits and check list."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from bench import annotate
from engine.faces import Detections
from tests.conftest import need_data


@pytest.fixture(scope="module")
def turning_frames(data_dir):
    clip = data_dir / "video_unannotated" / "head_motion_d0.mp4"
    need_data(clip)
    return annotate.read_frames(clip, 78)[::6]


@pytest.fixture(scope="module")
def ensemble():
    return annotate.Ensemble()


def test_mirror_pass_lands_on_the_same_face_with_its_eyes_in_order(turning_frames, ensemble):
    compared = 0
    for frame in turning_frames:
        frame = cv2.copyMakeBorder(frame, 0, 0, 0, 400, cv2.BORDER_CONSTANT)  # the face off-centre
        members = ensemble.members(frame)
        plain, mirror = members["yunet"], members["yunet_mirror"]
        if not len(plain) or not len(mirror):
            continue
        i = int(np.argmax(plain.score))
        iou = annotate._iou(plain.xyxy[i:i + 1], mirror.xyxy)[0]
        assert iou.max() >= 0.5
        j = int(np.argmax(iou))
        for marks in (plain.landmarks[i], mirror.landmarks[j]):
            assert marks[0, 0] < marks[1, 0]  # the image's left eye first, as the engine expects
            assert marks[3, 0] < marks[4, 0]
        compared += 1
    assert compared >= 10


def test_enrol_frame_is_frontal(turning_frames, ensemble):
    fused = [ensemble(f) for f in turning_frames]
    chain = annotate.link(fused)
    assert len(chain) == 1
    enrol = annotate._enrol_frame(turning_frames, chain[0], 1)
    scores = {f: annotate.frontality(m) for f, m in chain[0].marks.items()}
    first_third = sorted(scores)[: max(1, len(scores) // 3)]
    assert scores[enrol["frame"]] >= 0.6
    assert scores[enrol["frame"]] >= 0.8 * max(scores[f] for f in first_third)


def test_frontality_falls_as_the_head_turns():
    frontal = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], float)
    turned = frontal.copy()
    turned[2, 0] = 76  # nose near one eye: a head turned about 45 degrees
    assert annotate.frontality(frontal) == pytest.approx(1.0)
    assert annotate.frontality(turned) < 0.3


def _gt() -> dict:
    faces = [{"frame": f, "track": t, "box": [10.0 * t, 10, 10.0 * t + 20, 30], "label": "bystander",
              "ignore": False} for f in range(10) for t in (1, 2)]
    return {"video": "x.mp4", "width": 100, "height": 80, "frames": 10, "method": "M.", "faces": faces}


def test_edits_ignore_drop_add_and_record_why():
    edits = [{"op": "ignore", "track": 1, "frames": [2, 4], "why": "back of a head"},
             {"op": "drop", "track": 2, "frames": [8, 9], "why": "a poster"},
             {"op": "add", "track": 3, "keys": {"5": [0, 0, 10, 10], "7": [20, 20, 30, 30]}, "why": "a profile"},
             {"op": "note", "why": "every 5th frame looked at"}]
    gt = annotate.apply_edits(_gt(), edits)
    ignored = sorted(f["frame"] for f in gt["faces"] if f["ignore"])
    assert ignored == [2, 3, 4]
    assert not [f for f in gt["faces"] if f["track"] == 2 and f["frame"] >= 8]
    added = {f["frame"]: f["box"] for f in gt["faces"] if f["track"] == 3}
    assert added == {5: [0, 0, 10, 10], 6: [10, 10, 20, 20], 7: [20, 20, 30, 30]}
    assert all(w in gt["method"] for w in ("back of a head", "a profile", "every 5th frame looked at"))
    assert gt["edits"] == edits
    with pytest.raises(ValueError):
        annotate.apply_edits(_gt(), [{"op": "ignore", "track": 9, "frames": [0, 9]}])


def test_a_name_edit_says_who_a_face_is():
    """bench/photo_allow.py enrols the person a face is named as and expects every other face blurred."""
    gt = annotate.apply_edits(_gt(), [{"op": "name", "track": 2, "identity": "obama", "why": "track 2 is obama"}])
    assert {f.get("identity") for f in gt["faces"] if f["track"] == 2} == {"obama"}
    assert not any("identity" in f for f in gt["faces"] if f["track"] == 1)
    with pytest.raises(ValueError):
        annotate.apply_edits(_gt(), [{"op": "name", "track": 9, "identity": "nobody"}])


def test_frames_to_check_include_doubts_and_count_changes():
    gt = _gt()
    gt["faces"] = [f for f in gt["faces"] if not (f["track"] == 2 and f["frame"] == 6)]
    doubts = [[] for _ in range(10)]
    doubts[3] = [(np.zeros(4), "c0.40x")]
    assert annotate.to_check(gt, doubts, every=5) == [0, 3, 5, 6, 7]


def test_render_writes_sheets(tmp_path, turning_frames):
    gt = _gt()
    frames = [cv2.resize(f, (100, 80)) for f in turning_frames[:10]]
    annotate.render(frames, gt, [[] for _ in range(10)], tmp_path, every=1, tile=50)
    sheet = cv2.imread(str(tmp_path / "x_000.png"))
    assert sheet is not None and sheet.shape[1] == 5 * 50
    annotate.render(frames, gt, [[] for _ in range(10)], tmp_path / "zoom", every=1, tile=50, zoom=True)
    assert cv2.imread(str(tmp_path / "zoom" / "x_000.png")) is not None


def test_tiles_leave_a_large_face_whole(data_dir):
    """At 1x, half of a large face fills a tile and outscored the whole face (boxes on half faces)."""
    clip = data_dir / "video_unannotated" / "head_motion_d3.mp4"
    need_data(clip)
    frame = annotate.read_frames(clip, 1)[0]
    members = annotate.Ensemble(upscale=1.0).members(frame)
    yn, cf = members["yunet"], members["centerface"]
    assert len(yn) == 1 and len(cf) == 1
    assert annotate._iou(yn.xyxy, cf.xyxy)[0, 0] >= 0.6


def test_a_corpus_photo_renders_with_its_boxes_on_the_faces(data_dir, tmp_path):
    """A group photo of the corpus through the WIDER renderer: the boxes of frame 0 lie on the faces there."""
    from bench import widerface_clips

    gt = json.loads((annotate.CORPUS / "photo_linzaer_imgs_16.gt.json").read_text())
    need_data(data_dir / gt["image"])
    video, rendered = widerface_clips.corpus_photo(gt, "photo16", frames=2, out_dir=tmp_path)
    frame = annotate.read_frames(video, 1)[0]
    faces = [f for f in json.loads(rendered.read_text())["faces"] if f["frame"] == 0 and not f["ignore"]]
    found = annotate.Ensemble(upscale=1.0)(frame)
    assert len(faces) >= 6
    for face in faces:
        assert annotate._iou(np.array([face["box"]]), found.xyxy).max() >= 0.4, face


def test_a_photo_outside_the_data_folder_is_refused(tmp_path):
    """Its key would be a bare file name the suite cannot find (it skipped such photos)."""
    with pytest.raises(ValueError, match="BLURCAST_DATA"):
        annotate.photo_truth(tmp_path / "1.jpg", np.zeros((8, 8, 3), np.uint8), Detections.empty())


def test_every_corpus_photo_names_an_image_of_the_data_folder(data_dir):
    photos = sorted(annotate.CORPUS.glob("photo_*.gt.json"))
    assert len(photos) >= 3
    for path in photos:
        image = json.loads(path.read_text())["image"]
        assert (data_dir / image).is_file(), f"{path.name}: {image}"


def test_suite_only_with_a_trailing_underscore_picks_one_photo(data_dir):
    from bench import suite
    need_data(data_dir / "detection_unannotated" / "linzaer_imgs" / "1.jpg")
    names = [c.name for c in suite.corpus(["imgs_1_"])]
    assert len(names) == 1 and names[0].startswith("photo_linzaer_imgs_1_"), names


def test_suite_says_when_a_corpus_photo_is_absent(tmp_path, monkeypatch, caplog):
    from bench import suite
    (tmp_path / "photo_x.gt.json").write_text(json.dumps({"image": "nowhere/x.jpg", "faces": []}))
    monkeypatch.setattr(suite, "CORPUS", tmp_path)
    with caplog.at_level(logging.WARNING, logger="suite"):
        assert suite.corpus(["photo_x"]) == []
    assert "photo_x.gt.json" in caplog.text


def test_corpus_photos_have_one_box_per_face():
    """A second box on the hair and forehead of a face already boxed (the ensemble's weak candidates often are)
    would count one face twice; faces in a crowd overlap, but no scored box lies 30 % inside another."""
    for path in sorted(annotate.CORPUS.glob("photo_*.gt.json")):
        boxes = np.array([f["box"] for f in json.loads(path.read_text())["faces"] if not f["ignore"]], float)
        for i, box in enumerate(boxes):
            inside = [annotate._covered(box, other) for j, other in enumerate(boxes) if j != i]
            assert max(inside, default=0.0) < 0.3, f"{path.name}: box {i} {box.tolist()}"


def test_a_far_render_keeps_the_photos_face_sizes(data_dir, tmp_path):
    """--photo-far 1 1.3: frame 0 is the photo itself at 1x in the corner of a black 1080p frame, its boxes the
    photo's boxes, and they still lie on the faces there."""
    from bench import widerface_clips

    gt = json.loads((annotate.CORPUS / "photo_linzaer_imgs_16.gt.json").read_text())
    need_data(data_dir / gt["image"])
    video, rendered = widerface_clips.corpus_photo(gt, "photo16", frames=2, out_dir=tmp_path, far=(1.0, 1.3))
    frame = annotate.read_frames(video, 1)[0]
    assert frame.shape[:2] == (1080, 1920) and frame[800:, 1100:].max() < 20  # black beyond the photo
    faces = [f for f in json.loads(rendered.read_text())["faces"] if f["frame"] == 0 and not f["ignore"]]
    expected = np.array([f["box"] for f in gt["faces"] if not f["ignore"]])
    assert np.abs(np.array([f["box"] for f in faces]) - expected).max() < 0.01
    found = annotate.Ensemble(upscale=1.0)(frame)
    for face in faces:
        assert annotate._iou(np.array([face["box"]]), found.xyxy).max() >= 0.4, face


@pytest.mark.parametrize("kind", ["lowrate", "dark", "motion"])
def test_suite_degrades_a_clip_frame_for_frame(data_dir, tmp_path, kind):
    """`--degrade`: the same frames at the same size (the gt's boxes still hold), only worse; the low uplink rate
    really starves the encoder (file far smaller than the source's), the dark street is darker and the pan's smear
    takes the fine detail."""
    from bench import suite

    clip = data_dir / "video_unannotated" / "head_motion_d0.mp4"
    need_data(clip)
    out = suite.degraded(clip, kind, tmp_path)
    before, after = cv2.VideoCapture(str(clip)), cv2.VideoCapture(str(out))
    frames = 0
    while True:
        ok_in, frame_in = before.read()
        ok_out, frame_out = after.read()
        assert ok_in == ok_out, "frame counts differ"
        if not ok_in:
            break
        assert frame_in.shape == frame_out.shape
        frames += 1
        if kind == "dark":
            assert frame_out.mean() < frame_in.mean() - 10
        if kind == "motion":
            detail = lambda f: cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var()  # noqa: E731
            assert detail(frame_out) < 0.5 * detail(frame_in)
    assert frames >= 30
    if kind == "lowrate":
        assert out.stat().st_size < 0.6 * clip.stat().st_size


def test_suite_tilts_a_clip_and_its_boxes_with_it(data_dir, tmp_path):
    """`--degrade tilt`: every frame turned 20 degrees, and each annotated box moved onto the turned face: a
    detector stronger than the engine finds each face where the turned box says (the dev clip: faces far from the
    centre, so a box turned the wrong way, or not at all, misses its face)."""
    from bench import suite

    need_data(data_dir / "video_hamilton" / "gt.json")
    clip = suite.corpus(["hamilton"])[0]
    video, turned = suite.tilted(clip, suite.prepared(clip, tmp_path), tmp_path)
    faces = [f for f in json.loads(turned.gt.read_text())["faces"]
             if not f["ignore"] and f["box"][2] - f["box"][0] > 30]
    frames = annotate.read_frames(video, 1 + max(f["frame"] for f in faces))
    ensemble = annotate.Ensemble(upscale=1.0)
    checked = 0
    for index in sorted({f["frame"] for f in faces})[::40]:
        found = ensemble(frames[index]).xyxy
        for face in (f for f in faces if f["frame"] == index):  # inside a found face (the upright part of a turned
            x1, y1, x2, y2 = face["box"]  # one), and centred on it
            inner = (np.minimum(found[:, 2], x2) - np.maximum(found[:, 0], x1)).clip(0) * \
                (np.minimum(found[:, 3], y2) - np.maximum(found[:, 1], y1)).clip(0) / ((x2 - x1) * (y2 - y1))
            best = found[int(np.argmax(inner))]
            shift = np.hypot((best[0] + best[2] - x1 - x2) / 2, (best[1] + best[3] - y1 - y2) / 2)
            assert inner.max() >= 0.7 and shift < 0.3 * (x2 - x1), (face, best)
            checked += 1
    assert checked >= 5
