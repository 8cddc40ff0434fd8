"""The command line: help a newcomer can follow, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys


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
