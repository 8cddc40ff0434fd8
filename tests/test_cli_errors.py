"""Bad input and unusable places, from the command line: one `error:` line and an honest exit status, never a
traceback; names and paths shown as typed (never read as Rich markup); counts that say what was stored."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import DEV_CLIP, DEV_GT, need_data

TRAIN = Path("recognition_face_recognition") / "examples" / "knn_examples" / "train"


def blurcast(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blurcast", *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.fixture
def biden(data_dir: Path) -> Path:
    return data_dir / TRAIN / "biden" / "biden2.jpg"


@pytest.fixture
def obama(data_dir: Path) -> Path:
    return data_dir / TRAIN / "obama" / "obama.jpg"


@pytest.fixture
def bank_file() -> Path:
    return Path(os.environ["BLURCAST_HOME"]) / "facebank.json"


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder made unwritable even for root (immutable), else by its mode; skips where neither holds."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
            pytest.skip("root, and the folder cannot be made immutable here (chattr)")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o500)
        undo = ["chmod", "700", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


# --- 1. names and paths are text, never markup ------------------------------------------------------------------
def test_names_and_paths_with_brackets_are_shown_as_typed(biden, obama, tmp_path):
    done = blurcast("facebank", "add", "x[/bold]", str(biden))
    one_line_error(done, 0, "of x[/bold]")
    done = blurcast("facebank", "add", "[bold red]Rich[/]", str(obama))
    one_line_error(done, 0, "of [bold red]Rich[/]")
    listed = blurcast("facebank", "list")
    assert listed.returncode == 0 and "[bold red]Rich[/]" in listed.stdout and "x[/bold]" in listed.stdout
    one_line_error(blurcast("facebank", "remove", "[/]"), 2, "'[/]' is not on the facebank")
    one_line_error(blurcast("facebank", "rename", "[/]", "x"), 2, "'[/]' is not on the facebank")
    one_line_error(blurcast("facebank", "rename", "x[/BOLD]", "[red]y[/]"), 0, "renamed x[/bold] to [red]y[/]")
    one_line_error(blurcast("facebank", "rename", "[red]y[/]", "[bold red]rich[/]"), 2,
                   "[bold red]Rich[/] is already on the facebank")
    one_line_error(blurcast("facebank", "remove", "[BOLD RED]rich[/]"), 0, "removed [bold red]Rich[/]")  # as stored
    photo = tmp_path / "in" / "clip [final].jpg"
    photo.parent.mkdir()
    shutil.copy(obama, photo)
    out = tmp_path / "out" / "clip [final].png"
    out.parent.mkdir()
    done = blurcast("run", str(photo), "-o", str(out), "--no-facebank")
    one_line_error(done, 0, f"-> {out}")
    assert out.is_file()


# --- 2. `facebank add` counts what it stored ----------------------------------------------------------------------
def test_add_counts_only_new_photos(biden, bank_file):
    done = blurcast("facebank", "add", "Biden", str(biden), str(biden))
    one_line_error(done, 0, "added 1 new photo(s) of Biden", "1 of the 2 given was already enrolled")
    done = blurcast("facebank", "add", "Biden", str(biden))
    one_line_error(done, 0, "added no new photo of Biden: it was already enrolled")
    [person] = json.loads(bank_file.read_text())["people"].values()
    assert len(person["images"]) == 1


def test_the_engine_counts_only_new_photos_too(biden, tmp_path):
    """What a running engine answers `facebank_add` with (LiveFacebank.add)."""
    from facebank.live import LiveFacebank, LiveGallery
    from facebank.store import Facebank

    live = LiveFacebank(Facebank(tmp_path / "facebank.json"), LiveGallery(None))
    assert live.add("Biden", [str(biden), str(biden)]) == (1, [])
    assert live.add("Biden", [str(biden)]) == (0, [])


def _soft_copy(photo: Path, folder: Path) -> Path:
    """The photo 300 px wide (a ~110 px face), out of focus: sharpness ~14 on the aligned face, taken with a
    warning."""
    import cv2

    image = cv2.imread(str(photo))
    small = cv2.resize(image, None, fx=300 / image.shape[1], fy=300 / image.shape[1], interpolation=cv2.INTER_AREA)
    soft = folder / "soft.png"
    cv2.imwrite(str(soft), cv2.GaussianBlur(small, (0, 0), 3))
    return soft


def test_add_warns_of_a_soft_photo_it_took(biden, tmp_path, bank_file):
    """The warning is part of the result, not a log line: a user of `facebank add` (and of the UI, below) sees it."""
    done = blurcast("facebank", "add", "Biden", str(_soft_copy(biden, tmp_path)))
    one_line_error(done, 0, "added 1 new photo(s) of Biden", "warning: taken, but soft: soft.png (sharpness",
                   "add a sharper photo")
    [person] = json.loads(bank_file.read_text())["people"].values()
    assert len(person["images"]) == 1 and 10 <= person["images"][0]["sharpness"] < 25


def test_run_warns_of_a_soft_allow_photo(biden, obama, tmp_path):
    """`run --allow PHOTO` enrols for that run only: a soft photo is taken, and said to be soft."""
    out = tmp_path / "out.png"
    done = blurcast("run", str(obama), "-o", str(out), "--allow", str(_soft_copy(biden, tmp_path)))
    one_line_error(done, 0, "taken, but soft: soft.png (sharpness", "add a sharper photo")
    assert out.is_file()


def test_the_engine_says_which_photos_it_took_though_soft(biden, tmp_path):
    """`facebank_add`'s reply names them ([path, sharpness]); the CLI and the UI word them (soft_warning)."""
    from engine.protocol import soft_warning
    from facebank.live import LiveFacebank, LiveGallery
    from facebank.store import Facebank

    live = LiveFacebank(Facebank(tmp_path / "facebank.json"), LiveGallery(None))
    soft = _soft_copy(biden, tmp_path)
    added, photos = live.add("Biden", [str(soft), str(biden)])
    assert added == 2 and [path for path, _ in photos] == [str(soft.resolve())]
    warning = soft_warning(photos)
    assert warning is not None and warning.startswith("taken, but soft: soft.png (sharpness ")
    assert soft_warning([]) is None


# --- 3. an output folder that cannot be created ---------------------------------------------------------------------
def test_batch_output_folder_that_cannot_be_created(biden, obama, tmp_path):
    (tmp_path / "existing_file.mp4").write_bytes(b"")
    done = blurcast("run", str(biden), str(obama), "-o", f"{tmp_path / 'existing_file.mp4'}/sub/")
    one_line_error(done, 2, "cannot create the output folder", "existing_file.mp4/sub: Not a directory")


# --- 4. a read-only facebank folder --------------------------------------------------------------------------------
def test_read_only_facebank_is_one_error_and_left_intact(biden, obama, bank_file):
    one_line_error(blurcast("facebank", "add", "Biden", str(biden)), 0)
    before = bank_file.read_bytes()
    with read_only(bank_file.parent):
        done = blurcast("facebank", "add", "Obama", str(obama))
        one_line_error(done, 2, f"cannot write the facebank in {bank_file.parent}")
        done = blurcast("facebank", "remove", "Biden")
        one_line_error(done, 2, f"cannot write the facebank in {bank_file.parent}")
    assert bank_file.read_bytes() == before


def test_facebank_folder_that_cannot_be_made(biden, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("BLURCAST_HOME", str(tmp_path / "a_file" / "home"))
    one_line_error(blurcast("facebank", "add", "Biden", str(biden)), 2, "the facebank file", "Not a directory")


# --- 5. valid JSON of the wrong shape ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"people": []}', '{"people": {"1": {"name": "x"}}}', "[1]",
                                  '{"people": {"1": {"key": "x", "name": "x", "images": [{"path": "p"}]}}}',
                                  '{"people": {"1": {"key": "x", "name": "x", "images": [{"path": "p", "sha256": "s", '
                                  '"face_px": 1, "sharpness": 1, "score": 1, "box": [1, 2, 3], "image_size": [9, 9], '
                                  '"added": "a", "model": "m", "embedding": []}]}}}'])
def test_wrong_shaped_facebank_is_refused_and_untouched(text, biden, bank_file, data_dir):
    bank_file.parent.mkdir(parents=True, exist_ok=True)
    bank_file.write_text(text)
    for args in (("add", "Biden", str(biden)), ("remove", "x"), ("list",)):
        one_line_error(blurcast("facebank", *args), 2, f"the facebank file {bank_file} is not a facebank")
    assert bank_file.read_text() == text


# --- 6. a damaged facebank under `run` ---------------------------------------------------------------------------
def test_run_with_a_damaged_facebank_says_so_in_one_line(obama, bank_file, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the log line unwrapped
    bank_file.parent.mkdir(parents=True, exist_ok=True)
    bank_file.write_text('{"people": {"1": {"key": "biden", "name": "Biden", "images": [{"path": "/x", "sha')
    out = tmp_path / "out.png"
    done = blurcast("run", str(obama), "-o", str(out))
    one_line_error(done, 0, "is damaged", "`blurcast facebank add NAME PHOTO`", "every face is blurred")
    assert "facebank refresh" not in done.stderr and out.is_file()


def test_a_failed_re_embedding_is_one_line_with_a_real_way_out(tmp_path, caplog, monkeypatch):
    from facebank.live import LiveFacebank, LiveGallery
    from facebank.store import Facebank, FacebankError

    image = {"path": "/x.jpg", "sha256": "0" * 64, "face_px": 200.0, "sharpness": 300.0, "score": 0.9,
             "box": [0, 0, 10, 10], "image_size": [20, 20], "added": "", "model": "an older model", "choose": None,
             "embedding": [0.0] * 128}
    path = tmp_path / "facebank.json"
    path.write_text(json.dumps({"people": {"1": {"key": "me", "name": "Me", "images": [image]}}}))
    bank = Facebank(path)

    def refused() -> None:
        raise FacebankError(f"cannot write the facebank in {tmp_path}: Operation not permitted")

    monkeypatch.setattr(bank, "refresh", refused)
    with caplog.at_level(logging.INFO, logger="facebank.live"):
        LiveFacebank(bank, LiveGallery(None)).refresh_if_stale()
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is None and "facebank refresh" not in error.getMessage()
    assert "cannot write the facebank" in error.getMessage() and "re-enrolled" in error.getMessage()


# --- 7. a damaged photo under `run` ---------------------------------------------------------------------------------
@pytest.mark.parametrize("source, size", [("biden.jpg", 5000), ("biden2.jpg", 100_000)])
def test_run_refuses_a_damaged_photo(source, size, data_dir, tmp_path):
    corrupt = tmp_path / "CORRUPT.jpg"
    corrupt.write_bytes((data_dir / TRAIN / "biden" / source).read_bytes()[:size])
    out = tmp_path / "out.png"
    done = blurcast("run", str(corrupt), "-o", str(out))
    one_line_error(done, 2, f"cannot read picture {corrupt}", "damaged")
    assert not out.exists()


def test_run_takes_a_whole_jpeg_with_padding_between_segments(obama, tmp_path):
    """Bytes between two JPEG segments (some cameras' writers): decoders skip them, so `run` takes the photo; only a
    file cut short is damaged."""
    data = obama.read_bytes()
    assert data[2] == 0xFF and 0xE0 <= data[3] <= 0xEF  # an APPn segment first
    end = 4 + int.from_bytes(data[4:6], "big")
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data[:end] + b"\x00\x00\x00" + data[end:])
    out = tmp_path / "out.png"
    done = blurcast("run", str(padded), "-o", str(out), "--no-facebank")
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_a_damaged_photo_fails_alone_in_a_batch(biden, obama, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(biden.read_bytes()[:100_000])
    out = tmp_path / "out"
    done = blurcast("run", str(corrupt), str(obama), "-o", str(out), "--no-facebank")
    one_line_error(done, 1, "damaged", "1 of 2 anonymized")
    assert sorted(p.name for p in out.iterdir()) == ["obama.jpg"]


# --- 8. eval's report and ground-truth files -----------------------------------------------------------------------
def test_eval_checks_the_report_path_before_the_run(tmp_path):
    need_data(DEV_CLIP, DEV_GT)
    out = tmp_path / "anonymized.mp4"
    done = blurcast("eval", str(DEV_CLIP), "--gt", str(DEV_GT), "-o", str(out), "--json",
                    str(tmp_path / "absent" / "x.json"))
    one_line_error(done, 2, f"--json {tmp_path / 'absent' / 'x.json'}", "no folder")
    assert not out.exists()  # refused before the run


def test_eval_names_a_ground_truth_file_that_is_not_json(tmp_path):
    need_data(DEV_CLIP)
    gt = tmp_path / "notjson.txt"
    gt.write_text("not json")
    out = tmp_path / "anonymized.mp4"
    done = blurcast("eval", str(DEV_CLIP), "--gt", str(gt), "-o", str(out))
    one_line_error(done, 2, f"--gt {gt} is not ground-truth JSON")
    assert not out.exists()


def test_run_allow_with_a_photo_of_two_says_how_to_pick_one(obama, data_dir, tmp_path):
    """`run` has no --face: the hint for a photo with several faces points to the facebank's (a newcomer's
    walkthrough, stop 43: it pointed to a --face that `run` refused)."""
    two = data_dir / "recognition_face_recognition" / "examples" / "two_people.jpg"
    out = tmp_path / "out.png"
    done = blurcast("run", str(obama), "-o", str(out), "--no-facebank", "--allow", str(two))
    one_line_error(done, 2, "2 faces were found", "blurcast facebank add NAME PHOTO --face N", "--allow NAME")
    assert "Pick one with its number" not in done.stderr
    assert not out.exists()


def test_a_person_whose_photos_were_all_dropped_is_listed_as_blurred(obama, bank_file):
    """A refresh drops a photo that changed into something refused; a person left with none stayed on the facebank
    (and in the UI's list) but `facebank list` left them out (a walkthrough, stop 49)."""
    one_line_error(blurcast("facebank", "add", "Barack", str(obama)), 0, "of Barack")
    one_line_error(blurcast("facebank", "add", "barack", str(obama)), 0, "of Barack")  # named as stored
    doc = json.loads(bank_file.read_text())
    for person in doc["people"].values():
        person["images"] = []  # as refresh leaves a person whose only photo it dropped
    bank_file.write_text(json.dumps(doc))
    listed = blurcast("facebank", "list")
    assert listed.returncode == 0 and "Barack" in listed.stdout, listed.stdout
    assert "no photo: blurred until one is added" in " ".join(listed.stdout.split()), listed.stdout
