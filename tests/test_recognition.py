"""Recognition on real faces: the embedder, the evaluation figures, and the identifier on the dev clip.

Data: $BLURCAST_DATA (default ../shared/data); the module is skipped, saying so, when it is absent.
Expected figures were measured with SFace on these photos (see evaluation/recognition.py); each
assertion leaves a small margin below the measured value.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import (
    BELOW_THRESHOLD,
    CHANGED,
    LOST,
    NO_FACEBANK,
    NOT_RECOGNISED_YET,
    OVERLAPS,
    RECOGNITION_OFF,
    TOO_SMALL,
    Candidate,
    FaceState,
)
from engine.pipeline import Pipeline
from engine.recognition.gallery import Gallery
from engine.recognition.identify_facebank import STATE_KEY, FacebankIdentifier, Policy
from engine.recognition.recognize import (
    ARCFACE_DST,
    align_face,
    alignment_matrix,
    create_embedder,
    create_landmarker,
    sharpness,
)
from engine.stages.track import Track
from evaluation.recognition import (
    Dataset,
    PhotoEncoder,
    evaluate,
    identity_from_name,
    read_pairs,
    roc_auc,
    standard_datasets,
    ten_fold_accuracy,
    threshold_at_far,
    verification_metrics,
)
from facebank.enrol import Enroller
from facebank.live import LiveGallery
from facebank.store import Facebank

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BLURCAST_DATA") or REPO.parent / "shared" / "data")
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
LIN = DATA / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"

pytestmark = pytest.mark.skipif(
    not (DATA / "recognition_deepface").is_dir(),
    reason=f"recognition data not found at {DATA} (set BLURCAST_DATA to the shared data folder)",
)

# A run with no deadline: on a loaded test machine a missed detector deadline blurs the whole frame, which is
# right for the stream but would make the identifier's figures depend on the machine's load.
SETTINGS = Settings(deadline_ms=60_000)


@pytest.fixture(scope="module")
def encoder() -> PhotoEncoder:
    return PhotoEncoder()


@pytest.fixture(scope="module")
def report(encoder: PhotoEncoder) -> dict:
    return evaluate(DATA, encoder=encoder)


# --- the embedder ----------------------------------------------------------------------------------------------
def _aligned_faces(encoder: PhotoEncoder, names: list[str]) -> np.ndarray:
    from engine.recognition.recognize import align_face

    faces = []
    for name in names:
        image = cv2.imread(str(DATA / name))
        found = encoder.enroller.detectors[0].detect(image, 0.7)
        faces.append(align_face(image, found.landmarks[int(found.score.argmax())]))
    return np.stack(faces)


FACES = [
    "recognition_faceapi_bbt/amy/amy1.png",
    "recognition_faceapi_bbt/raj/raj2.png",
    "recognition_openface/clapton-1.jpg",
    "recognition_face_recognition/examples/obama-480p.jpg",
]


def test_onnxruntime_and_torch_give_the_same_embeddings(encoder: PhotoEncoder) -> None:
    pytest.importorskip("engine.models.sface")
    faces = _aligned_faces(encoder, FACES)
    ort = create_embedder(SETTINGS, backend="onnxruntime").embed_aligned(faces)
    torch = create_embedder(SETTINGS, backend="torch").embed_aligned(faces)
    assert np.abs(ort - torch).max() < 1e-4
    assert (ort * torch).sum(axis=1).min() > 0.9999


def test_embeddings_are_unit_length_and_batch_independent(encoder: PhotoEncoder) -> None:
    faces = _aligned_faces(encoder, FACES)
    embedder = encoder.enroller.embedder
    batch = embedder.embed_aligned(faces)
    one_by_one = np.concatenate([embedder.embed_aligned(f[None]) for f in faces])
    assert batch.shape == (4, 128) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    similarity = batch @ batch.T
    assert similarity[np.triu_indices(4, 1)].max() < 0.4  # four different people


def test_alignment_puts_the_landmarks_on_the_template(encoder: PhotoEncoder) -> None:
    image = cv2.imread(str(LIN))
    found = encoder.enroller.detectors[0].detect(image, 0.7)
    landmarks = found.landmarks[0]
    matrix = alignment_matrix(landmarks)
    placed = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(placed - ARCFACE_DST).max() < 6.0  # a similarity cannot fit 5 points exactly; pixels of 112
    degenerate = alignment_matrix(np.full((5, 2), 50.0, np.float32))  # LMEDS gives up; the fallback does not
    assert np.isfinite(degenerate).all()


def test_sharpness_falls_with_blur(encoder: PhotoEncoder) -> None:
    face = _aligned_faces(encoder, FACES[:1])[0]
    sharp, blurred = sharpness(face), sharpness(cv2.GaussianBlur(face, (0, 0), 2.0))
    assert sharp > 200 and blurred < sharp / 4


BIG_FACES = [  # faces 238-446 px wide: an enrolment photo's face is usually bigger than the stream's
    "recognition_face_recognition/alex_lacamoire1.jpg",
    "recognition_face_recognition/obama1.jpg",
    "recognition_face_recognition/img1.jpg",
    "recognition_face_recognition/biden.jpg",
    "recognition_face_recognition/biden2.jpg",
    "recognition_face_recognition/obama.jpg",
]


def _find(name: str) -> Path:
    found = sorted(DATA.glob(f"{Path(name).parts[0]}/**/{Path(name).name}"))
    if not found:
        pytest.skip(f"{name} not found under {DATA}")
    return found[0]


def test_a_face_embeds_alike_at_its_photo_size_and_at_stream_size(encoder: PhotoEncoder) -> None:
    """The same photo with its face at full size and shrunk to ~100 px (INTER_AREA) embeds alike: the warp is
    anti-aliased. Measured with MobileFaceNet (mirror image added) and a plain bilinear warp: cosine 0.974-0.994,
    mean 0.987; anti-aliased 0.989-0.997, mean 0.994. SFace, one view, anti-aliased: 0.979-0.995, mean 0.988 (its
    genuine pairs score 0.42-0.99, median 0.74: a 0.02 move is small beside them)."""
    enroller = encoder.enroller
    cosines = []
    for name in BIG_FACES:
        image = cv2.imread(str(_find(name)))
        found = enroller._detect(image)
        j = int(np.argmax(found.xyxy[:, 2] - found.xyxy[:, 0]))
        factor = 100.0 / float(found.xyxy[j, 2] - found.xyxy[j, 0])
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        views = [enroller.landmarker.align(im, found.xyxy[j] * f, found.landmarks[j] * f)
                 for im, f in ((image, 1.0), (small, factor))]
        big, shrunk = enroller.embedder.embed_aligned(np.stack(views))
        cosines.append(float(big @ shrunk))
    assert min(cosines) >= 0.975 and np.mean(cosines) >= 0.985, cosines


# --- evaluation figures -------------------------------------------------------------------------------------------
def test_every_evaluation_photo_has_a_face(report: dict) -> None:
    assert report["photos_without_face"] == {}


def test_deepface_master_pairs(report: dict) -> None:
    r = report["datasets"]["deepface_master_pairs"]
    assert (r["genuine"], r["impostor"]) == (38, 262)
    assert r["auc"] >= 1.0 - 0.005  # measured 1.0
    assert r["eer"] <= 0.01  # measured 0.0
    assert r["tar_at_far"]["0.001"]["tar"] >= 0.95  # measured 1.0 (threshold 0.359: above every impostor)
    assert r["accuracy_10fold"] >= 0.98  # measured 0.997


def test_deepface_all_pairs(report: dict) -> None:
    r = report["datasets"]["deepface_all_pairs"]
    assert (r["photos"], r["identities"]) == (61, 13)
    assert r["auc"] >= 0.99997 - 0.005
    assert r["eer"] <= 0.0071 + 0.01
    assert r["tar_at_far"]["0.001"]["tar"] >= 0.9857 - 0.03  # 0.9643 before centre face, Landmarker, mirror
    assert r["tar_at_far"]["0.001"]["measurable"]


def test_face_recognition_examples(report: dict) -> None:
    r = report["datasets"]["face_recognition_all_pairs"]
    assert (r["photos"], r["identities"]) == (22, 6)
    assert r["auc"] >= 1.0 - 0.005
    assert r["genuine_min"] > r["impostor_max"]  # measured 0.655 > 0.261: fully separated
    assert r["tar_at_far"]["0.001"]["tar"] >= 0.98


def test_openface_examples(report: dict) -> None:
    r = report["datasets"]["openface_all_pairs"]
    assert (r["genuine"], r["impostor"]) == (2, 13)
    assert r["genuine_min"] > 0.38 and r["impostor_max"] < 0.3  # measured 0.435 and 0.230


def test_faceapi_bbt_face_chips(report: dict) -> None:
    r = report["datasets"]["faceapi_bbt_all_pairs"]
    assert (r["photos"], r["identities"], r["genuine"]) == (40, 8, 80)
    assert r["auc"] >= 0.99998 - 0.005
    assert r["tar_at_far"]["0.001"]["tar"] >= 0.9875 - 0.03
    assert r["accuracy_10fold"] >= 0.99


def test_threshold_from_the_pooled_impostors(report: dict) -> None:
    d = report["impostor_distribution"]
    assert d["pairs"] >= 7000 and d["measurable"]
    assert 0.34 <= d["threshold_at_far"] <= 0.42  # measured 0.3672 on 7,971 impostor pairs (MobileFaceNet: 0.5123)
    assert d["at_derived_threshold"]["far"] <= 0.001
    assert d["at_derived_threshold"]["tar"] >= 0.97  # measured 0.9965 (MobileFaceNet: 0.9895)
    assert d["at_configured_threshold"]["far"] <= 0.001  # the engine's default (0.37) is stricter still


def test_ms_per_face_is_reported(report: dict) -> None:
    assert 0 < report["ms_per_face"] < 200  # measured 5-18 ms on 2 loaded CPU cores


def test_metrics_on_known_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    same = np.array([True, True, False, True, False, False, False, False])
    m = verification_metrics(scores, same)
    assert m["auc"] == pytest.approx(14 / 15, abs=1e-5)  # 14 of the 15 genuine-impostor orderings are right
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5  # a tie counts half
    assert threshold_at_far(np.array([0.1, 0.2, 0.3]), 0.5) > 0.2  # one of three may pass: above the 2nd
    assert threshold_at_far(np.array([0.1, 0.2, 0.3]), 0.0) > 0.3


def test_identity_from_file_names() -> None:
    assert [identity_from_name(Path(n)) for n in ("lennon-2.jpg", "raj5.png", "Aaron_Peirsol_0001.jpg")] == [
        "lennon", "raj", "Aaron_Peirsol"]


def test_lfw_as_distributed(tmp_path: Path, encoder: PhotoEncoder) -> None:
    """pairs.txt beside lfw-deepfunneled/NAME/NAME_0001.jpg, its header "folds pairs-per-class", its own folds."""
    images = tmp_path / "lfw-deepfunneled"
    for person in ("amy", "raj"):
        (images / person).mkdir(parents=True)
        for i in (1, 2):
            image = cv2.imread(str(DATA / "recognition_faceapi_bbt" / person / f"{person}{i}.png"))
            cv2.imwrite(str(images / person / f"{person}_{i:04d}.jpg"), image)
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("2\t1\namy\t1\t2\namy\t1\traj\t2\nraj\t1\t2\namy\t2\traj\t1\n")
    dataset = Dataset.from_pairs_file(pairs_file, "lfw")
    assert [same for _, _, same in dataset.pairs] == [True, False, True, False]
    assert dataset.pairs[0][0] == images / "amy" / "amy_0001.jpg" and dataset.folds == [0, 0, 1, 1]
    assert read_pairs(pairs_file) == dataset.pairs
    result = evaluate(datasets=[dataset], encoder=encoder)["datasets"]["lfw"]
    assert (result["genuine"], result["impostor"], result["auc"]) == (2, 2, 1.0)
    # Its own folds: each fold's threshold is picked on the other fold's pairs only.
    scores, same = np.array([0.9, 0.1, 0.95, 0.2]), np.array([True, False, True, False])
    assert ten_fold_accuracy(scores, same, fold_of=np.array([0, 0, 1, 1]))[0] == 0.75  # fold 0 misses 0.9 < 0.95


def test_standard_datasets_label_folders_from_their_manifests() -> None:
    sets = {ds.name: ds for ds in standard_datasets(DATA)}
    labels = dict(sets["face_recognition_all_pairs"].labelled)
    by_name = {p.name: who for p, who in labels.items()}
    assert by_name["johnsnow_test1.jpg"] == "kit_harington"  # from "probe: kit_harington"
    assert "kit_with_rose.jpg" not in by_name  # two people: no single identity
    assert {who for _, who in sets["openface_all_pairs"].labelled} == {"lennon", "clapton", "adams", "carell"}


# --- the identifier on the dev clip ------------------------------------------------------------------------------
def _frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def _ground_truth() -> dict[int, list[dict]]:
    faces = json.loads((CLIP.parent / "gt.json").read_text())["faces"]
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for face in faces:
        by_frame[face["frame"]].append(face)
    return by_frame


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def _label(box, truth: list[dict]) -> str:
    best = max(truth, key=lambda t: _iou(box, t["box"]), default=None)
    return best["label"] if best is not None and _iou(box, best["box"]) > 0.3 else "none"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    if not CLIP.exists():
        pytest.skip(f"dev clip not found at {CLIP}")
    return _frames()


@pytest.fixture(scope="module")
def lin_gallery(tmp_path_factory) -> LiveGallery:
    bank = Facebank(tmp_path_factory.mktemp("bank") / "facebank.json")
    bank.add("Lin-Manuel Miranda", [LIN])
    return LiveGallery(bank)


@pytest.fixture(scope="module")
def clip_run(frames, lin_gallery) -> dict:
    """The whole clip through the real pipeline with Lin-Manuel Miranda enrolled, frame by frame."""
    identifier = FacebankIdentifier(create_embedder(SETTINGS), lin_gallery)
    pipeline = Pipeline(SETTINGS, identifier=identifier)
    truth = _ground_truth()
    rows = []
    for index, frame in enumerate(frames):
        pipeline.process(frame.copy(), index, 1 / 29.97)
        for track in pipeline.tracker.tracks:
            rows.append({
                "frame": index, "track": track.track_id, "age": track.age, "lost": track.lost_frames,
                "visible": track.identity.visible and track.lost_frames == 0,
                "identity": track.identity.name, "similarity": track.identity.similarity,
                "reason": track.identity.reason, "candidate": track.identity.candidate,
                "kept_by_track": track.extras[STATE_KEY].kept_by_track if STATE_KEY in track.extras else False,
                "label": _label(track.xyxy, truth[index]) if track.lost_frames == 0 else "lost",
            })
    pipeline.close()
    return {"rows": rows, "identifier": identifier, "frames": len(frames)}


def test_a_track_visible_on_its_first_frame_matched_strongly(clip_run: dict) -> None:
    """One embedding is not enough to show a face unless it scores threshold + strong_margin, above every impostor
    measured (the look-alike defence otherwise waits for a second matching embedding)."""
    first: dict[int, dict] = {}
    for row in clip_run["rows"]:
        first.setdefault(row["track"], row)
    strong = SETTINGS.similarity_threshold + Policy().strong_margin
    assert first and all(row["similarity"] >= strong for row in first.values() if row["visible"])


def test_the_performer_becomes_visible_and_bystanders_never_do(clip_run: dict) -> None:
    rows = clip_run["rows"]
    allow = [r for r in rows if r["label"] == "allow"]
    visible = [r for r in rows if r["visible"]]
    assert len(allow) >= 140  # 149 in the ground truth; the detector finds nearly all
    assert sum(r["visible"] for r in allow) / len(allow) >= 0.65  # measured 0.75 (the wide shot scores ~0.5)
    assert all(r["label"] == "allow" for r in visible), [r for r in visible if r["label"] != "allow"]
    assert all(r["identity"] == "Lin-Manuel Miranda" for r in visible)
    bystanders = [r for r in rows if r["label"] == "bystander" and r["similarity"] is not None]
    assert bystanders and max(r["similarity"] for r in bystanders) < 0.35  # measured <= 0.21


def test_similarity_is_reported_even_when_blurred(clip_run: dict) -> None:
    blurred_with_score = [r for r in clip_run["rows"] if not r["visible"] and r["similarity"] is not None]
    assert any(r["identity"] == "Lin-Manuel Miranda" for r in blurred_with_score)


def test_recognition_work_stays_within_its_budget(clip_run: dict) -> None:
    identifier, n = clip_run["identifier"], clip_run["frames"]
    policy = identifier.policy
    optional = identifier.embedded_total - identifier.embedded_forced
    refills = min(identifier.scene_cuts, n // policy.retry_every + 1)  # a cut refills it, once in a while at most
    assert optional <= n * policy.budget_per_frame + policy.burst * (1 + refills)
    assert identifier.embedded_total / n <= 0.4  # measured 0.31 embeddings per frame on this clip
    assert identifier.scene_cuts == 3  # the clip's three cuts (frames 20, 82 and 211)


def test_the_streamer_is_blurred_at_once_when_removed_or_recognition_is_off(frames, lin_gallery) -> None:
    current = [lin_gallery()]
    identifier = FacebankIdentifier(create_embedder(SETTINGS), lambda: current[0], Policy())
    pipeline = Pipeline(SETTINGS, identifier=identifier)
    seen_visible = False
    for index in range(90, 130):  # a close-up of the performer
        if index == 110:
            assert seen_visible, "the performer should be visible before the facebank changes"
            current[0] = Gallery.empty()  # the UI removed him
        _, report = pipeline.process(frames[index].copy(), index, 1 / 29.97)
        visible = [f for f in report.faces if f.visible]
        seen_visible |= bool(visible)
        if index >= 110:
            assert not visible
            assert all(STATE_KEY not in t.extras for t in pipeline.tracker.tracks)
    embedded = identifier.embedded_total
    current[0] = lin_gallery()
    pipeline.configure(SETTINGS.updated({"recognition": False}))
    for index in range(130, 140):
        _, report = pipeline.process(frames[index].copy(), index, 1 / 29.97)
        assert not any(f.visible for f in report.faces)
    assert identifier.embedded_total == embedded  # nothing embedded while recognition is off
    pipeline.close()


# --- the stream aligns and embeds a face exactly as the photo path does ------------------------------------------
def _photo_path_embedding(tmp_path: Path, frame: np.ndarray, box, index: int) -> np.ndarray:
    """The frame's crop around `box`, saved as a photo and enrolled as the streamer would enrol it."""
    x1, y1, x2, y2 = box
    pad = x2 - x1
    left, top = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    crop = frame[top:int(min(frame.shape[0], y2 + pad)), left:int(min(frame.shape[1], x2 + pad))]
    path = tmp_path / f"crop{index}.png"
    cv2.imwrite(str(path), crop)
    return Enroller(SETTINGS).enrol(path).embedding


def test_the_stream_embeds_a_face_as_the_photo_path_does(frames, tmp_path: Path) -> None:
    """Same pixels, same embedding: the stream (tracked box, full frame) against the photo path (the frame's
    crop enrolled as a photo). Before the shared Landmarker the two were aligned from different boxes and
    differed by cosine 0.95 on average, 0.88 at worst."""
    truth = _ground_truth()
    identifier = FacebankIdentifier(create_embedder(SETTINGS), lambda: Gallery.empty())
    identifier.landmarker = create_landmarker(SETTINGS)
    pipeline = Pipeline(SETTINGS)
    cosines = []
    for index in range(0, 211):
        pipeline.process(frames[index].copy(), index, 1 / 29.97)
        allow = [t["box"] for t in truth[index] if t["label"] == "allow" and not t["ignore"]]
        if index % 10 or not allow or allow[0][2] - allow[0][0] < 44:  # his larger faces only
            continue
        track = max(pipeline.tracker.tracks, key=lambda t: _iou(t.xyxy, allow[0]))
        if _iou(track.xyxy, allow[0]) < 0.3 or track.lost_frames:
            continue
        stream = identifier.embedder.embed_aligned(identifier._aligned(frames[index], track)[0][None])[0]
        cosines.append(float(stream @ _photo_path_embedding(tmp_path, frames[index], allow[0], index)))
    pipeline.close()
    assert len(cosines) >= 10
    assert np.mean(cosines) >= 0.97 and min(cosines) >= 0.93, cosines


@pytest.mark.parametrize("grain", [0.0, 8.0])
def test_a_frame_and_its_crop_align_to_the_same_pixels(frames, grain: float) -> None:
    """Given the same face box, a full frame and a crop of it give the same aligned face and embedding: no
    colour order, border or scale differs between the stream and a photo, or the live worker's crop; a grainy
    face is smoothed on both (engine/noise.py)."""
    landmarker = create_landmarker(SETTINGS)
    embedder = create_embedder(SETTINGS)
    frame = frames[100]
    if grain:
        frame = np.clip(frame + np.random.default_rng(3).normal(0.0, grain, frame.shape), 0, 255).astype(np.uint8)
    found = landmarker.detector.detect(frame, 0.5)
    j = int(np.argmax(found.xyxy[:, 2] - found.xyxy[:, 0]))
    box, marks = found.xyxy[j], found.landmarks[j]
    left, top = int(box[0]) - 80, int(box[1]) - 60
    crop = frame[top:, left:]
    offset = np.array([left, top], np.float32)
    whole = landmarker.align(frame, box, marks)
    part = landmarker.align(crop, box - np.tile(offset, 2), marks - offset)
    unsmoothed = align_face(frame, landmarker(frame, box, marks))
    assert np.array_equal(whole, unsmoothed) != bool(grain), "a grainy face is smoothed, a clean one is not"
    assert np.abs(whole.astype(int) - part).max() <= 1  # warpAffine rounds its fixed-point sampling per offset
    # In cosine, the measure decisions take: the recognizer in bf16 (auto on such a CPU) moves an element up to 1.2e-3
    # for those one-level differences (f32: under 1e-3)
    assert float(embedder.embed_aligned(whole[None])[0] @ embedder.embed_aligned(part[None])[0]) >= 1 - 1e-3


# --- identity kept through head turns, lost on a switch ----------------------------------------------------------
HEAD_POSE = DATA / "video_unannotated" / "intel_head-pose-face-detection-female-and-male.gif"


@pytest.fixture(scope="module")
def head_pose() -> list[np.ndarray]:
    if not HEAD_POSE.exists():
        pytest.skip(f"head-pose clip not found at {HEAD_POSE}")
    capture = cv2.VideoCapture(str(HEAD_POSE))
    frames = []
    while (grabbed := capture.read())[0]:
        frames.append(grabbed[1])
    return frames


@pytest.fixture(scope="module")
def man_gallery(head_pose, tmp_path_factory) -> Gallery:
    """The man on the right, from the first frame (he looks ahead), aligned and embedded as a photo is (the frame
    holds two faces: enrolment would ask which one)."""
    frame = head_pose[0]
    landmarker = create_landmarker(SETTINGS)
    found = landmarker.detector.detect(frame, 0.5)
    j = int(np.argmax(found.xyxy[:, 0]))
    face = landmarker.align(frame, found.xyxy[j], found.landmarks[j])
    return Gallery.from_people({"man": create_embedder(SETTINGS).embed_aligned(face[None])})


def _head_pose_run(frames, gallery: Gallery, policy: Policy, settings: Settings) -> dict[str, list[bool]]:
    """Per frame, whether the man's and the woman's faces (right and left half of the picture) were visible."""
    pipeline = Pipeline(settings, identifier=FacebankIdentifier(create_embedder(settings), lambda: gallery, policy))
    seen: dict[str, list[bool]] = {"man": [], "woman": []}
    for index, frame in enumerate(frames):
        pipeline.process(frame.copy(), index, 1 / 12)
        for track in pipeline.tracker.tracks:
            if track.lost_frames == 0:
                who = "man" if (track.xyxy[0] + track.xyxy[2]) / 2 > frame.shape[1] / 2 else "woman"
                seen[who].append(track.identity.visible)
    pipeline.close()
    return seen


def test_a_confirmed_track_keeps_its_identity_through_head_turns(head_pose, man_gallery) -> None:
    """The man tilts and turns his head. At the default threshold his per-frame similarity to his photo
    (0.39-1.0) keeps him visible anyway, so a strict threshold (0.8) stands in for a face turned further
    away: past frame 9 his similarity stays under it (0.39-0.79), yet his confirmed track stays consistent
    with its own earlier embeddings and keeps his identity; the woman beside him is never shown."""
    strict = SETTINGS.updated({"similarity_threshold": 0.8})
    kept = _head_pose_run(head_pose, man_gallery, Policy(), strict)
    per_frame = _head_pose_run(head_pose, man_gallery, Policy(self_consistent=2.0), strict)  # keeping off
    assert not any(kept["woman"]) and not any(per_frame["woman"])
    assert len(kept["man"]) >= 50
    assert np.mean(kept["man"]) >= 0.95  # measured 56 of 56
    assert np.mean(per_frame["man"]) <= 0.5  # measured 15 of 56 without keeping


@pytest.mark.parametrize("shift", [(0, 0), (1, 0), (0, 1)], ids=["as-is", "1px-right", "1px-down"])
def test_a_look_alike_confirmed_by_chance_is_not_kept_through_head_turns(shift: tuple[int, int]) -> None:
    """walking-and-pause: the man enrolled from his soft GIF frame, and every face embedded every frame (no
    budget). With MobileFaceNet the woman on the left scored 0.58-0.59 against him in the first, softest frames
    and was confirmed; then her similarity fell to 0.0, yet her track stayed consistent with itself. A head-turn
    keep needs a look of the track that the gallery vouched for strongly (threshold + strong_margin): before that
    she was kept visible for 35 more frames (40 of 41), then only while she matched (5-10 frames by the shift).

    With SFace she scores at most 0.21 against him: 0 frames visible at 9 shifts of the clip, with the stream's
    detector on onnxruntime and on OpenVINO bf16 alike (bench/lookalike_shifts.py). Three alignments are checked."""
    gt_path = REPO / "bench" / "corpus" / "intel_face-demographics-walking-and-pause.gt.json"
    gt = json.loads(gt_path.read_text())
    video = DATA / "video_unannotated" / gt["video"]
    if not video.exists():
        pytest.skip(f"corpus clip not found at {video}")
    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(gt["frames"])]
    landmarker = create_landmarker(SETTINGS)
    enrol = gt["enrol"]  # enrolled from the clip as it is; the stream is then shifted
    found = landmarker.detector.refine(frames[enrol["frame"]], np.asarray(enrol["box"], np.float32))
    face = landmarker.align(frames[enrol["frame"]], found.xyxy[0], found.landmarks[0])
    gallery = Gallery.from_people({"man": create_embedder(SETTINGS).embed_aligned(face[None])})
    policy = Policy(budget_per_frame=4.0, burst=8)
    pipeline = Pipeline(SETTINGS, identifier=FacebankIdentifier(create_embedder(SETTINGS), lambda: gallery, policy))
    truth = defaultdict(list)
    for f in gt["faces"]:
        truth[f["frame"]].append(f)
    man, bystanders, kept = [], [], []
    dx, dy = shift
    for index, frame in enumerate(frames):
        moved = np.roll(frame, (dy, dx), axis=(0, 1))  # the border row or column that wraps round holds no face
        pipeline.process(moved, index, 1 / gt["fps"])
        for track in pipeline.tracker.tracks:
            box = track.xyxy - np.array([dx, dy, dx, dy], np.float32)  # back to the gt's pixels
            label = _label(box, truth[index]) if track.lost_frames == 0 else "lost"
            visible = track.identity.visible and track.lost_frames == 0
            (man if label == "allow" else bystanders if label == "bystander" else []).append(visible)
            if label == "bystander" and visible:
                kept.append(track.extras[STATE_KEY].kept_by_track)
    pipeline.close()
    assert np.mean(man) >= 0.95  # measured 39-41 of 41 at these three shifts
    assert not any(kept), "a bystander was kept visible on self-consistency"
    # Frames where a bystander scores above the threshold: measured 0 at every shift (MobileFaceNet: 5-10). The guard
    # against keeping her on self-consistency is `kept` above; this bound catches a recognizer that matches her again.
    assert sum(bystanders) <= 2


def _track_on(detections, j: int, track_id: int = 1) -> Track:
    box = detections.xyxy[j]
    mean = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1], 0, 0, 0, 0])
    return Track(track_id, mean, np.eye(8), float(detections.score[j]), detections.landmarks[j])


@pytest.mark.parametrize("signs", ["default", "only the embedding"])
def test_identity_is_lost_when_the_track_switches_to_another_face(head_pose, man_gallery, signs: str) -> None:
    """The tracker puts the woman under the man's confirmed id. With the usual signs (a jump) she is blurred in
    that very frame; with every other sign switched off, her first embedding is inconsistent with the track's
    own and she is blurred from then on."""
    policy = Policy() if signs == "default" else Policy(jump=1e9, same_look=-2.0, overlap_iou=2.0, scene_cut=-2.0)
    identifier = FacebankIdentifier(create_embedder(SETTINGS), lambda: man_gallery, policy)
    detector = create_landmarker(SETTINGS).detector
    switch = 20
    shown_after = []
    extras: dict = {}  # the same track id throughout: its recognition state carries over the switch
    for index, frame in enumerate(head_pose[:40]):
        found = detector.detect(frame, 0.5)
        order = np.argsort((found.xyxy[:, 0] + found.xyxy[:, 2]) / 2)  # left (woman), right (man)
        track = _track_on(found, int(order[-1] if index < switch else order[0]))
        track.extras = extras
        identifier.update(frame, [track], SETTINGS)
        if index == switch - 1:
            assert track.identity.visible, "the man should be confirmed before the switch"
        if index >= switch:
            shown_after.append(track.identity.visible)
    if signs == "default":
        assert not any(shown_after)
    else:  # re-verified within verify_every frames, then never shown again
        first_blurred = shown_after.index(False)
        assert first_blurred <= policy.verify_every and not any(shown_after[first_blurred:])


# --- why a face is blurred, in telemetry -------------------------------------------------------------------------
def test_telemetry_says_why_a_face_is_blurred_and_who_it_may_be(clip_run: dict) -> None:
    rows = clip_run["rows"]
    reasons = {r["reason"] for r in rows if not r["visible"]}
    assert None not in reasons and reasons <= {NOT_RECOGNISED_YET, BELOW_THRESHOLD, LOST, OVERLAPS, CHANGED, TOO_SMALL}
    assert BELOW_THRESHOLD in reasons and NOT_RECOGNISED_YET in reasons
    assert all(r["reason"] is None for r in rows if r["visible"])
    threshold = SETTINGS.similarity_threshold
    candidates = [r for r in rows if r["candidate"] is not None]
    assert candidates and all(c["candidate"].name == "Lin-Manuel Miranda" for c in candidates)
    assert all(c["candidate"].similarity >= threshold - Policy().near for c in candidates)
    assert not any(r["candidate"] for r in rows if r["label"] == "bystander")  # at most 0.21: not plausible
    face = FaceState(1, (0, 0, 10, 10), 0.9, reason=BELOW_THRESHOLD, candidate=Candidate("A", 0.41234))
    assert face.as_dict()["reason"] == BELOW_THRESHOLD
    assert face.as_dict()["candidate"] == {"name": "A", "similarity": 0.412}


def test_reason_without_a_facebank_or_with_recognition_off(frames) -> None:
    pipeline = Pipeline(SETTINGS)
    _, report = pipeline.process(frames[100].copy(), 0, 1 / 29.97)
    assert report.faces and {f.as_dict()["reason"] for f in report.faces} == {NO_FACEBANK}
    identifier = FacebankIdentifier(create_embedder(SETTINGS), lambda: Gallery.empty())
    pipeline = Pipeline(SETTINGS.updated({"recognition": False}), identifier=identifier)
    _, report = pipeline.process(frames[100].copy(), 0, 1 / 29.97)
    assert {f.reason for f in report.faces} == {RECOGNITION_OFF}
    pipeline.close()


def test_a_scene_cut_refills_the_budget_for_the_new_shots_faces(frames, lin_gallery) -> None:
    """A cut makes every face of the new shot a stranger to recognise from nothing. With the budget spent on the old
    shot's faces, the performer's first look waited for tokens (live: shown 6 frames after the dev clip's cut at
    frame 82, 2 of them waiting); a cut now refills it, so his face is embedded on the cut's own frame."""
    identifier = FacebankIdentifier(create_embedder(SETTINGS), lin_gallery)
    pipeline = Pipeline(SETTINGS, identifier=identifier)
    try:
        for index in range(70, 82):
            pipeline.process(frames[index].copy(), index, 1 / 29.97)
        cuts, identifier.tokens = identifier.scene_cuts, 0.0  # the old shot spent it all
        pipeline.process(frames[82].copy(), 82, 1 / 29.97)
        assert identifier.scene_cuts == cuts + 1
        truth = _ground_truth()[82]
        him = [t for t in pipeline.tracker.tracks if t.lost_frames == 0 and _label(t.xyxy, truth) == "allow"]
        assert him, "the performer was not found on the cut's frame"
        state = him[0].extras[STATE_KEY]
        assert state.embeddings and state.last_frame == identifier.frame_index - 1, "not embedded on the cut's frame"
    finally:
        pipeline.close()


def test_footage_read_as_a_cut_on_every_frame_refills_the_budget_once_in_a_while(frames, lin_gallery) -> None:
    """A strobe or a flickering screen can pass for a cut on every frame: a refill on each would embed every face
    on every frame. The budget is refilled at most once every `retry_every` frames."""
    identifier = FacebankIdentifier(create_embedder(SETTINGS), lin_gallery)
    identifier._scene_cut = lambda frame: True
    pipeline = Pipeline(SETTINGS, identifier=identifier)
    policy, window = identifier.policy, range(20, 80)  # the wide shot: several faces in view
    try:
        in_view = 0
        for index in window:
            pipeline.process(frames[index].copy(), index, 1 / 29.97)
            in_view += min(policy.burst, sum(t.lost_frames == 0 for t in pipeline.tracker.tracks))
        n = len(window)
        bound = n * policy.budget_per_frame + policy.burst * (1 + n // policy.retry_every + 1)
        assert in_view > bound, "too few faces in view for the bound to mean anything"
        assert identifier.embedded_total - identifier.embedded_forced <= bound
    finally:
        pipeline.close()
