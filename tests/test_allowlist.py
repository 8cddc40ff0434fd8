"""Recognition in the running engine: the performer enrolled from one photo stays visible, bystanders never;
adding or removing a person changes a running engine within a second, without a restart."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from engine.client import ControlClient, EnginePaths, start_background, stop_background
from tests.conftest import PERFORMER_PHOTO, need_data, score_independently
from tests.helpers import wait_for

# Measured on the dev clip with the defaults: 148/149 of his face-frames visible (threshold 0.52), 0 leaks. Without
# the look-ahead showing him in the frames before he was recognised (a shot's first frames): 135/149, 90.6 %.
ALLOW_FLOOR = 0.97


@pytest.mark.parametrize("how", ["facebank", "allow"])
def test_dev_clip_with_the_performer_enrolled(how, dev_clip, dev_gt, tmp_path, monkeypatch):
    """`facebank add` then `eval` with no flag (the facebank is used by default), or `--allow PHOTO` for one
    run with the facebank off: the performer stays visible, no bystander leaks, nothing left behind."""
    need_data(PERFORMER_PHOTO)
    monkeypatch.setenv("BLURCAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    blurcast = [sys.executable, "-m", "blurcast"]
    if how == "facebank":
        added = subprocess.run([*blurcast, "facebank", "add", "Lin", str(PERFORMER_PHOTO)], capture_output=True,
                               text=True, timeout=300)
        assert added.returncode == 0, added.stderr
        flags = []
    else:
        flags = ["--no-facebank", "--allow", str(PERFORMER_PHOTO)]
    out = tmp_path / "out.mp4"
    done = subprocess.run([*blurcast, "eval", str(dev_clip), "--gt", str(dev_gt), "-o", str(out), *flags],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    r = score_independently(dev_clip, out, dev_gt, tmp_path)
    assert r["allow_visible"] >= ALLOW_FLOOR
    assert r["leak_rate"] <= 0.01
    assert r["worst_leak_run"] <= 2
    assert not list((tmp_path / "tmp").glob("blurcast-allow-*")), "no scratch facebank is left behind"


def _performer_visible(client: ControlClient) -> bool:
    return any(f["state"] == "visible" for f in client.request("status")["faces"])


@pytest.fixture
def engine(dev_clip, tmp_path, monkeypatch):
    need_data(PERFORMER_PHOTO)
    monkeypatch.setenv("BLURCAST_HOME", str(tmp_path))
    paths = EnginePaths(tmp_path)
    start_background(["--source", str(dev_clip), "--loop"], paths)
    yield paths
    stop_background(paths)


def test_person_added_mid_run_is_visible_within_a_second_and_removed_at_once(engine):
    with ControlClient(engine.socket) as client:
        wait_for(lambda: client.request("status")["frames"] > 10, 30, "frames")
        assert not _performer_visible(client), "nobody is visible with an empty facebank"
        frames_before = client.request("status")["frames"]
        add = subprocess.run([sys.executable, "-m", "blurcast", "facebank", "add", "Lin-Manuel Miranda",
                              str(PERFORMER_PHOTO)], capture_output=True, text=True, timeout=120)
        assert add.returncode == 0, add.stderr
        # The clip shows him in most shots; wait for a stretch where he is on screen (loops every 9 s).
        wait_for(lambda: _performer_visible(client), 12, "the performer visible")
        status = client.request("status")
        seen = [f for f in status["faces"] if f["state"] == "visible"]
        # Visible only as the enrolled person (a confirmed track may keep him below the threshold while his
        # embeddings stay consistent with its own: head turns), with no reason to blur.
        assert all(f["identity"] == "Lin-Manuel Miranda" and f["reason"] is None for f in seen)
        assert status["frames"] > frames_before, "no restart: the frame counter kept running"
        removed_at = time.monotonic()
        rm = subprocess.run([sys.executable, "-m", "blurcast", "facebank", "remove", "Lin-Manuel Miranda"],
                            capture_output=True, text=True, timeout=60)
        assert rm.returncode == 0, rm.stderr
        wait_for(lambda: not _performer_visible(client), 1.0, "the performer blurred again", every=0.03)
        assert time.monotonic() - removed_at < 3.0
