"""Shared fixtures: the real test data (`BLURCAST_DATA`, default ../shared/data) and the model files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Resolved: the engine reports a file source by its real path, and ../shared may be a symlink.
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data")).resolve()
DEV_CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
DEV_GT = DATA / "video_hamilton" / "gt.json"
PERFORMER_PHOTO = DATA / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"
SCORER = DATA.parent / "tools" / "score_video.py"  # the independent black-box privacy scorer


def score_independently(source: Path, output: Path, gt: Path, tmp: Path) -> dict:
    """The figures of ../shared/tools/score_video.py, which shares no code with the engine."""
    need_data(SCORER)
    report = tmp / "independent.json"
    done = subprocess.run([sys.executable, str(SCORER), "--input", str(source), "--output", str(output),
                           "--gt", str(gt), "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())


def need_data(*paths: Path) -> None:
    """Skip (with the reason) where the real test data is absent, e.g. an outside contributor's machine."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real test data absent ({missing[0]}); set BLURCAST_DATA to the shared data folder")


@pytest.fixture(scope="session")
def visibility():
    """The black-box scorer's own measure of how much of a face's detail is left (>= 0.5: visible)."""
    if not SCORER.exists():
        pytest.skip(f"scorer not found at {SCORER}")
    spec = importlib.util.spec_from_file_location("score_video", SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.face_visibility


@pytest.fixture(scope="session")
def data_dir() -> Path:
    need_data(DATA)
    return DATA


@pytest.fixture(scope="session")
def dev_clip() -> Path:
    need_data(DEV_CLIP)
    return DEV_CLIP


@pytest.fixture(scope="session")
def dev_gt() -> Path:
    need_data(DEV_GT)
    return DEV_GT


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Never touch the user's real settings, facebank or engine socket."""
    base = str(tmp_path_factory.getbasetemp())
    if not os.environ.get("BLURCAST_HOME", "").startswith(base):
        monkeypatch.setenv("BLURCAST_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def clip_engine(dev_clip, tmp_path_factory):
    """A background engine playing the dev clip in a loop, in its own state folder, for one test module."""
    from engine.client import EnginePaths, start_background, stop_background

    paths = EnginePaths(tmp_path_factory.mktemp("engine"))
    start_background(["--source", str(dev_clip), "--loop"], paths)
    yield paths
    stop_background(paths)
