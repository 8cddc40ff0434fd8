"""The engine does the face work: facebank commands and "this is me" (enrol a live track) over the control
API, against a real engine process playing the dev clip, with the real models."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from engine.client import ControlClient, ControlError, EnginePaths
from tests.conftest import PERFORMER_PHOTO, need_data
from tests.helpers import wait_for


@pytest.fixture(scope="module")
def engine(clip_engine):
    need_data(PERFORMER_PHOTO)
    return clip_engine


def _client(paths: EnginePaths) -> ControlClient:
    return ControlClient(paths.socket, timeout=60.0)


def test_limits_are_published_with_defaults_and_reasons(engine):
    with _client(engine) as client:
        limits = client.request("limits")
        settings = client.request("settings")
    assert set(limits) == set(settings)
    assert limits["similarity_threshold"]["min"] >= 0.33, "the fail-closed floor is published, not only enforced"
    assert limits["mode"]["choices"] == ["blur", "mosaic", "fill"]
    assert all(entry["help"] for entry in limits.values())


def test_add_list_remove_and_clear_refusals(engine, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with _client(engine) as client:
        for name in ("Lin", "Lin-Manuel"):  # a failed run of this test may have left him enrolled
            with contextlib.suppress(ControlError):
                client.request("facebank_remove", name=name)
        with pytest.raises(ControlError, match="not a picture"):
            client.request("facebank_add", name="X", paths=[str(text)])
        with pytest.raises(ControlError, match="paths"):
            client.request("facebank_add", name="X")
        with pytest.raises(ControlError, match="not on the facebank"):
            client.request("facebank_remove", name="Nobody")
        assert client.request("facebank_add", name="Lin", paths=[str(PERFORMER_PHOTO)]) == {"name": "Lin", "added": 1,
                                                                                           "soft": []}
        (person,) = client.request("facebank_list")["people"]
        assert (person["name"], person["photos"], person["crops"]) == ("Lin", 1, 0)
        assert person["images"][0]["path"] == str(PERFORMER_PHOTO.resolve()) and person["images"][0]["grade"]
        # Applied by the engine itself, at once: its telemetry counts him without any reload message.
        assert client.request("status")["facebank"]["people"] == 1
        with pytest.raises(ControlError, match="new_name"):
            client.request("facebank_rename", name="Lin")
        with pytest.raises(ControlError, match="not on the facebank"):
            client.request("facebank_rename", name="Nobody", new_name="X")
        assert client.request("facebank_rename", name="lin", new_name="Lin-Manuel") == {"renamed": "Lin",
                                                                                        "name": "Lin-Manuel"}
        assert [p["name"] for p in client.request("facebank_list")["people"]] == ["Lin-Manuel"]
        # the picture follows, no restart: he is shown under the new name
        wait_for(lambda: any(f["identity"] == "Lin-Manuel" and f["state"] == "visible"
                             for f in client.request("status")["faces"]), 60, "Lin-Manuel visible under his new name")
        assert client.request("facebank_remove", name=" LIN-manuel ") == {"removed": "Lin-Manuel"}  # as stored
        assert client.request("status")["facebank"]["people"] == 0


def test_this_is_me_enrols_a_live_face_and_keeps_it_visible(engine):
    """Find the performer's track with his photo, forget the photo, then enrol him from the live picture
    alone: he must become visible under the new name, and only his crops are stored."""
    with _client(engine) as client:
        client.request("facebank_add", name="Photo", paths=[str(PERFORMER_PHOTO)])

        def performer():  # close up: in the clip's first shot he is 42-46 px wide for 0.7 s, too small to enrol
            faces = client.request("status")["faces"]
            return next((f for f in faces if f["identity"] == "Photo" and f["state"] == "visible"
                         and f["lost_frames"] == 0 and f["size"] >= 70), None)

        # His close-up shot lasts 4.3 s: begin at its start, so the 1.5 s gathering never runs past the next cut.
        wait_for(lambda: performer() is None, 60, "a shot without the performer close up")
        face = wait_for(performer, 60, "the performer recognised from his photo")
        client.request("facebank_remove", name="Photo")
        client.request("enrol_track", name="Lin", track_id=face["track_id"], seconds=1.5)
        with pytest.raises(ControlError, match="already enrolling"):
            client.request("enrol_track", name="Other", track_id=face["track_id"])
        done = wait_for(lambda: (e := client.request("status")["enrolment"])["state"] in ("done", "failed") and e,
                        60, "the enrolment to finish")
        assert done["state"] == "done", done["message"]
        (person,) = client.request("facebank_list")["people"]
        assert person["name"] == "Lin" and 2 <= person["crops"] == person["photos"] <= 5
        (folder,) = (engine.root / "crops").iterdir()  # one person, one folder (named by a hash of the name)
        crops = sorted(folder.iterdir())
        assert all(os.stat(c).st_mode & 0o077 == 0 for c in crops), "biometric crops are owner-only"
        wait_for(lambda: any(f["identity"] == "Lin" and f["state"] == "visible"
                             for f in client.request("status")["faces"]), 60, "Lin visible from the live enrolment")
        client.request("facebank_remove", name="Lin")
    assert not folder.exists(), "removing a person removes their crops"


def test_enrol_track_refuses_a_face_that_is_not_there(engine):
    with _client(engine) as client, pytest.raises(ControlError, match="not in the picture"):
        client.request("enrol_track", name="Ghost", track_id=99_999)


def test_photos_of_an_older_model_are_embedded_again_at_start(tmp_path):
    """After an upgrade changes the embedding recipe, the engine re-embeds the facebank before its first
    frame instead of leaving the streamer blurred until someone runs a refresh."""
    import json

    from facebank.live import LiveFacebank, LiveGallery
    from facebank.store import Facebank

    need_data(PERFORMER_PHOTO)
    store = Facebank(tmp_path / "facebank.json")
    store.add("Lin", [str(PERFORMER_PHOTO)])
    data = json.loads(store.path.read_text())
    for doc in data["people"].values():
        for image in doc["images"]:
            image["model"] = "an-older-recipe"
    store.path.write_text(json.dumps(data))
    gallery = LiveGallery(store)
    assert len(gallery()) == 0, "an older model's embeddings never count"
    LiveFacebank(store, gallery).refresh_if_stale()
    assert len(gallery()) == 1


def test_a_live_crop_keeps_no_other_face(dev_clip):
    """The crops "this is me" keeps (and stores for the enrolled person) never hold a bystander's face: any
    other face reaching into the crop is filled before it is kept. Real frame, real neighbouring faces."""
    import cv2
    import numpy as np

    from engine.enrol_track import _crop

    ok, frame = cv2.VideoCapture(str(dev_clip)).read()
    assert ok
    me, neighbour = (300.0, 100.0, 340.0, 150.0), (345.0, 105.0, 385.0, 155.0)  # side by side
    crop = _crop(frame, me, [neighbour])
    x0, y0 = int(320 - 2.2 * 50 / 2), int(125 - 2.2 * 50 / 2)  # the crop's corner in the frame
    inside = crop[int(105 - y0):int(155 - y0), int(345 - x0):]
    assert (inside == 128).all(), "the neighbour's face is filled"
    mine = crop[int(100 - y0):int(150 - y0), int(300 - x0):int(335 - x0)]
    assert np.array_equal(mine, frame[100:150, 300:335]), "the enrolled face itself is untouched"


def test_a_live_frame_whose_face_is_covered_by_another_box_is_not_taken(dev_clip):
    """A crop whose own face is half filled grey embeds as someone else, and one such crop made the whole
    enrolment fail ("more than one person"): on the looping dev clip a lost false track on the performer's hand
    and mic (its held box growing) covered his mouth and chin. Such a frame is skipped, the next clear one taken
    at once; a neighbour beside the face, its fill over the face's edge, does not stop a frame."""
    import cv2
    import numpy as np

    from engine.enrol_track import TrackEnrolment
    from engine.faces import FaceState, FrameReport

    ok, frame = cv2.VideoCapture(str(dev_clip)).read()
    assert ok
    me = (167.0, 33.0, 248.0, 147.0)  # the boxes of the failing run (engine log), performer and the hand track
    hand = (183.0, 106.0, 249.0, 201.0)
    enrolment = TrackEnrolment("Lin", 7, seconds=60.0, save=lambda name, crops, order: len(crops))

    def report(*others):
        faces = [FaceState(7, me, 0.94)] + [FaceState(8 + i, box, 0.48, lost_frames=9) for i, box in enumerate(others)]
        return FrameReport(0, faces=faces, unclaimed=[me])

    assert enrolment.wants_raw()
    enrolment.observe(frame.copy(), report(hand))
    assert enrolment.candidates == [], "a crop with the face's lower half filled is not kept"
    assert enrolment.wants_raw(), "the next frame is tried at once"
    # A neighbour side by side as in the clip's crowd shot (boxes touching): grown, its fill covers a quarter of the
    # face's box, its ear side, and the frame is taken.
    enrolment.observe(frame.copy(), report((244.0, 80.0, 311.0, 182.0)))
    (kept,) = enrolment.candidates
    a = int((me[0] + me[2]) / 2 - 2.2 * (me[3] - me[1]) / 2)  # the crop's left edge in the frame (top: 0)
    assert np.array_equal(kept.crop[33:147, 167 - a:226 - a], frame[33:147, 167:226]), "the rest of the face is kept"
    assert (kept.crop[80:147, 228 - a:248 - a] == 128).all(), "the neighbour's grown box is filled"


def test_a_name_is_never_a_path(tmp_path):
    """`facebank remove ..` (or "/", ".") must not delete the state folder or anything else: the crop
    folder is named by a hash of the name, and only a person who was removed loses a folder."""
    from facebank.live import LiveFacebank, LiveGallery
    from facebank.store import Facebank

    store = Facebank(tmp_path / "state" / "facebank.json")
    store.path.parent.mkdir()
    (store.path.parent / "settings.json").write_text("{}")
    bank = LiveFacebank(store, LiveGallery(store))
    for name in ("..", ".", "/", str(tmp_path)):
        assert bank.crops_of(name).parent == bank.crops_dir
        assert bank.remove(name) is None
    assert (store.path.parent / "settings.json").exists() and tmp_path.exists()


def test_live_enrolment_refuses_frames_of_two_people(tmp_path, data_dir):
    """A track that crossed a shot cut while gathering holds two people; whoever has most frames must not be
    enrolled (a bystander would then stay visible): the gathering is refused, nothing is stored, unless the frames'
    times show the person picked (the first frames) before the change and as the majority: then only theirs."""
    import shutil

    from facebank.enrol import EnrolError
    from facebank.live import LiveFacebank, LiveGallery
    from facebank.store import Facebank

    lfw = data_dir / "recognition_lfw" / "lfw-deepfunneled"
    if not lfw.is_dir():
        pytest.skip(f"LFW not found at {lfw} (set BLURCAST_DATA to the shared data folder)")
    bush = sorted((lfw / "George_W_Bush").glob("*.jpg"))[:3]
    powell = sorted((lfw / "Colin_Powell").glob("*.jpg"))[:2]
    frames = []
    for k, photo in enumerate(bush + powell):  # one of the two has the majority
        frames.append(tmp_path / f"frame{k}.jpg")
        shutil.copy(photo, frames[-1])
    store = Facebank(tmp_path / "state" / "facebank.json")
    bank = LiveFacebank(store, LiveGallery(store))
    with pytest.raises(EnrolError, match="more than one person"):
        bank._choose(frames)
    assert len(bank._choose(frames[:3])) >= 2  # one person's frames still enrol
    # In time order, the track showing Bush first and Powell after a cut: the person picked is Bush, in the first
    # frames and the majority; his frames alone are enrolled.
    chosen = bank._choose(frames, order=[0, 1, 2, 3, 4])
    assert {Path(e.path).name for e in chosen} <= {"frame0.jpg", "frame1.jpg", "frame2.jpg"} and len(chosen) >= 2
    # Powell first but the fewer (a change right after the pick, or back and forth): nobody is enrolled.
    with pytest.raises(EnrolError, match="more than one person"):
        bank._choose(frames, order=[2, 3, 4, 0, 1])


@pytest.mark.parametrize("unclear", ["soft", "small"])
def test_live_enrolment_takes_unclear_frames_only_without_enough_clear_ones(tmp_path, data_dir, unclear):
    """Enrolment takes soft photos since stop 46 and 24-40 px faces since stop 47; such a frame embeds least like the
    others, so the most varied pick took it first. Among a person's frames the clear ones (sharpness 50 or more, 40 px
    or more) are kept; the others only where fewer than two are clear."""
    import cv2

    from facebank.enrol import SHARP_SHARPNESS
    from facebank.live import CLEAR_FACE_PX, LiveFacebank, LiveGallery
    from facebank.store import Facebank

    lfw = data_dir / "recognition_lfw" / "lfw-deepfunneled"
    if not lfw.is_dir():
        pytest.skip(f"LFW not found at {lfw} (set BLURCAST_DATA to the shared data folder)")
    frames = []
    for k, photo in enumerate(sorted((lfw / "George_W_Bush").glob("*.jpg"))[:4]):
        image = cv2.imread(str(photo))
        if k >= 2:  # 2 clear frames, 2 soft or small ones
            image = (cv2.GaussianBlur(image, (0, 0), 1.5) if unclear == "soft"
                     else cv2.resize(image, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA))
        frames.append(tmp_path / f"frame{k}.png")
        cv2.imwrite(str(frames[-1]), image)
    store = Facebank(tmp_path / "state" / "facebank.json")
    bank = LiveFacebank(store, LiveGallery(store))
    every = [bank.facebank.enroller.enrol(frame) for frame in frames]  # all four taken
    clear = [e.sharpness >= SHARP_SHARPNESS and e.face_px >= CLEAR_FACE_PX for e in every]
    assert clear == [True, True, False, False], [(round(e.sharpness), round(e.face_px)) for e in every]
    chosen = bank._choose(frames)
    assert sorted(Path(e.path).name for e in chosen) == ["frame0.png", "frame1.png"]
    chosen = bank._choose(frames[1:])  # one clear frame left: the others join it
    assert sorted(Path(e.path).name for e in chosen) == ["frame1.png", "frame2.png", "frame3.png"]


def test_a_refused_live_enrolment_says_why_without_the_engines_frame_files():
    """The UI shows the reason ("the frames show more than one person"), not the name of a crop file the engine wrote
    for itself ("20261205T053650-00.png: ...")."""
    from engine.enrol_track import TrackEnrolment
    from facebank.enrol import EnrolError

    def refuse(name, crops, order):
        raise EnrolError("/home/me/.local/share/blurcast/crops/lin/20261205T053650-00.png",
                         "the frames show more than one person")

    enrolment = TrackEnrolment("Lin", 7, seconds=1.0, save=refuse)
    enrolment._save([], [])
    assert enrolment.state == "failed" and enrolment.message == "the frames show more than one person"
