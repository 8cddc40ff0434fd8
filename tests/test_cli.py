"""The command line: help a newcomer can follow, and clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def blurcast(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blurcast", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_commands():
    done = blurcast("--help")
    assert done.returncode == 0
    for word in ("run", "eval", "engine", "weights", "examples"):
        assert word in done.stdout


def test_missing_file_is_a_clear_error(tmp_path):
    done = blurcast("run", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "out.mp4"))
    assert done.returncode == 2
    assert "no such video file" in done.stderr


def test_corrupt_video_is_a_clear_error(tmp_path, dev_clip):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(dev_clip.read_bytes()[:2000])  # a truncated download
    done = blurcast("run", str(broken), "-o", str(tmp_path / "out.mp4"))
    assert done.returncode == 2
    assert "cannot read video" in done.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_absent_camera_is_a_clear_error(tmp_path):
    done = blurcast("run", "7", "-o", str(tmp_path / "out.mp4"))
    assert done.returncode == 2
    assert "cannot open camera 7" in done.stderr


def test_bad_setting_is_a_clear_error(tmp_path, dev_clip):
    done = blurcast("run", str(dev_clip), "-o", str(tmp_path / "o.mp4"), "--strength", "3")
    assert done.returncode == 2
    assert "strength must be in [0, 1]" in done.stderr


def _umask_027() -> None:
    os.umask(0o027)


def test_a_folder_and_more_files_go_into_one_folder_each_under_its_own_name(tmp_path, data_dir):
    """`run FOLDER FILE -o OUT/`: every photo written, faces blurred, with the umask's mode (027 here: 0640, not the
    temporary file's 0600); a file that is no picture is reported and the rest go on, the exit status says one
    failed; two inputs of one name do not overwrite each other; other files and subfolders are passed over, and
    named; a phone's .heic photo in the folder, which cannot be read, fails the run with how to convert it."""
    import json

    import cv2
    import numpy as np

    photo = data_dir / "detection_unannotated" / "linzaer_imgs" / "23.jpg"
    faces = json.loads((Path(__file__).parents[1] / "bench" / "corpus" / "photo_linzaer_imgs_23.gt.json").read_text())
    folder, other = tmp_path / "in", tmp_path / "other"
    for made in (folder, other):
        made.mkdir()
    (folder / "group [1].jpg").write_bytes(photo.read_bytes())  # brackets: not read as markup
    (folder / "notes.png").write_text("not a picture")
    (folder / "readme.txt").write_text("passed over: neither a photo nor a video")
    (folder / "._group [1].jpg").write_text("a macOS resource fork: passed over")
    (folder / "IMG_0001.heic").write_text("a phone's photo in a type not read: named, not anonymized")
    (folder / "trip").mkdir()  # a subfolder is not searched: named
    (other / "group [1].jpg").write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(folder), str(other / "group [1].jpg"),
                           "-o", str(out), "--no-facebank"], capture_output=True, text=True, timeout=240,
                          preexec_fn=_umask_027)
    assert done.returncode == 1, done.stderr
    said = " ".join(done.stderr.split())
    assert "cannot read picture" in said and "2 of 4 anonymized" in said, said
    assert "passed over 1 file(s) that are neither photos nor videos: readme.txt" in said, said
    assert "IMG_0001.heic is a HEIC/HEIF photo, which Blurcast cannot read" in said  # a failure: exit 1
    assert "1 subfolder(s), not searched (give them as inputs): trip/" in said
    assert "hidden" not in said  # macOS's `._` copies are nobody's photos
    assert sorted(p.name for p in out.iterdir()) == ["group [1]-1.jpg", "group [1].jpg"]
    before = cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE).astype(np.int16)
    for written in out.iterdir():
        after = cv2.imread(str(written), cv2.IMREAD_GRAYSCALE).astype(np.int16)
        for face in faces["faces"]:
            x1, y1, x2, y2 = (round(v) for v in face["box"])
            assert np.abs(after[y1:y2, x1:x2] - before[y1:y2, x1:x2]).mean() > 8, (written.name, face["track"])
        assert written.stat().st_mode & 0o777 == 0o640


def test_a_folder_of_heic_photos_says_how_to_convert_them(tmp_path):
    """An iPhone's export is a folder of HEIC photos: refused before anything runs, saying what to do."""
    folder = tmp_path / "export"
    folder.mkdir()
    for n in (1, 2):
        (folder / f"IMG_000{n}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    done = blurcast("run", str(folder), "-o", str(tmp_path / "out"), "--no-facebank")
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "holds no photo Blurcast reads" in said and "convert it to JPEG" in said, said


def test_no_output_may_land_on_a_later_input(tmp_path, data_dir):
    """`run a/x.jpg out/x.jpg -o out`: the first output would overwrite the second input before it is read; refused
    before anything is written, both originals kept."""
    photos = [data_dir / "detection_unannotated" / "linzaer_imgs" / f"{n}.jpg" for n in (21, 23)]
    for made in ("a", "out"):
        (tmp_path / made).mkdir()
    first, second = tmp_path / "a" / "x.jpg", tmp_path / "out" / "x.jpg"
    first.write_bytes(photos[0].read_bytes())
    second.write_bytes(photos[1].read_bytes())
    done = blurcast("run", str(first), str(second), "-o", str(tmp_path / "out"), "--no-facebank")
    assert done.returncode == 2 and "is one of the inputs and would be overwritten" in done.stderr
    assert second.read_bytes() == photos[1].read_bytes() and first.read_bytes() == photos[0].read_bytes()


def test_several_inputs_need_an_output_folder_and_no_live_output(tmp_path, dev_clip):
    done = blurcast("run", str(dev_clip), str(dev_clip))
    assert done.returncode == 2 and "need -o FOLDER" in done.stderr
    done = blurcast("run", str(dev_clip), str(dev_clip), "-o", str(tmp_path), "--vcam")
    assert done.returncode == 2 and "drop --vcam" in done.stderr
    (tmp_path / "file.mp4").write_bytes(b"")
    done = blurcast("run", str(dev_clip), str(dev_clip), "-o", str(tmp_path / "file.mp4"))
    assert done.returncode == 2 and "is a file" in done.stderr
    done = blurcast("run", str(dev_clip), str(dev_clip), "-o", str(tmp_path / "new.mp4"))
    assert done.returncode == 2 and "looks like a file name" in done.stderr and not (tmp_path / "new.mp4").exists()
    done = blurcast("run", str(dev_clip), "7", "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and "cameras and URLs run on their own" in done.stderr
    done = blurcast("run", str(dev_clip), str(dev_clip), "-o", str(tmp_path / "out"), "--strength", "3")
    assert done.returncode == 2 and done.stderr.count("strength must be") == 1 and not (tmp_path / "out").exists()


def test_one_file_into_a_folder_keeps_its_name(tmp_path, data_dir):
    photo = data_dir / "detection_unannotated" / "linzaer_imgs" / "23.jpg"
    done = blurcast("run", str(photo), "-o", str(tmp_path), "--no-facebank")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "23.jpg").is_file() and "1 of 1 anonymized" in done.stderr


def test_a_file_into_its_own_folder_is_refused_and_left_untouched(tmp_path, data_dir):
    photo = tmp_path / "23.jpg"
    original = (data_dir / "detection_unannotated" / "linzaer_imgs" / "23.jpg").read_bytes()
    photo.write_bytes(original)
    done = blurcast("run", str(photo), "-o", str(tmp_path), "--no-facebank")
    assert done.returncode == 2 and "is one of the inputs and would be overwritten" in done.stderr
    assert photo.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ["23.jpg"]


def test_a_run_says_which_settings_saved_by_the_ui_apply(tmp_path, data_dir):
    """`run` uses the settings the UI saved (a panic pressed there hides every frame whole): it says so, naming each
    one the command line does not override, and says nothing when none differ from the defaults."""
    import json

    photo = data_dir / "recognition_face_recognition" / "examples" / "obama_small.jpg"
    home = tmp_path / "home"
    env = {**os.environ, "BLURCAST_HOME": str(home)}

    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blurcast", "run", str(photo), "-o", str(tmp_path / "o.png"),
                               *flags], capture_output=True, text=True, timeout=120, env=env)

    plain = run()
    assert plain.returncode == 0, plain.stderr
    assert "settings saved by the UI" not in plain.stderr
    home.mkdir(exist_ok=True)
    (home / "settings.json").write_text(json.dumps({"panic": True, "mode": "fill", "strength": 0.9}))
    noted = run("--mode", "blur")
    assert noted.returncode == 0, noted.stderr
    note = " ".join(noted.stderr.split())
    assert "settings saved by the UI apply" in note
    assert "PANIC on (every frame hidden whole)" in note and "strength 0.9" in note
    listed = note.split("settings.json): ", 1)[1].split(" blurcast ", 1)[0]
    assert listed == "strength 0.9, PANIC on (every frame hidden whole)", "a flag overrides the saved mode: not listed"
