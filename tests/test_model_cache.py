"""The dynamic-shape copy of each model file: made once with `onnx`, then loaded without importing it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.models.backends import OnnxRuntimeRunner, dynamic_model
from engine.models.weights import model_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def yunet_copy(tmp_path) -> Path:
    """YuNet's file alone in a folder of its own, so the cache starts empty."""
    folder = tmp_path / "weights"
    folder.mkdir()
    return Path(shutil.copy(model_path("yunet"), folder))


def test_a_second_start_loads_the_cached_model_without_importing_onnx(yunet_copy, tmp_path):
    first = dynamic_model(yunet_copy)
    cached = list((yunet_copy.parent / ".dynamic").glob("*.dynamic.onnx"))
    assert len(cached) == 1 and cached[0].read_bytes() == first
    probe = ("import sys; from pathlib import Path; from engine.models.backends import OnnxRuntimeRunner; "
             f"OnnxRuntimeRunner(Path({str(yunet_copy)!r})); print('onnx' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", "onnx was imported although the dynamic model was cached"


def test_the_cached_model_takes_any_frame_size_and_gives_the_same_outputs(yunet_copy):
    made = OnnxRuntimeRunner(yunet_copy)  # builds the copy
    loaded = OnnxRuntimeRunner(yunet_copy)  # reads it
    batch = np.random.default_rng(0).uniform(0, 255, (1, 3, 352, 608)).astype(np.float32)  # not YuNet's 640x640
    for a, b in zip(made.run(batch), loaded.run(batch), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_read_only_weights_folder_keeps_the_copy_in_the_user_cache(yunet_copy, tmp_path, monkeypatch):
    if os.geteuid() == 0:  # root writes through file modes: make the folder unwritable another way
        (yunet_copy.parent / ".dynamic").write_text("not a folder")  # mkdir there fails like a read-only one
    else:
        yunet_copy.parent.chmod(0o555)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = dynamic_model(yunet_copy)
    kept = list((tmp_path / "cache" / "blurcast" / "models").glob("*.dynamic.onnx"))
    assert len(kept) == 1 and kept[0].read_bytes() == data


def test_a_changed_model_file_is_never_served_its_old_copy(yunet_copy):
    assert len(OnnxRuntimeRunner(yunet_copy).session.get_outputs()) == 12  # YuNet: 4 heads at 3 strides
    shutil.copy(model_path("centerface"), yunet_copy)  # another network under the same name
    assert len(OnnxRuntimeRunner(yunet_copy).session.get_outputs()) == 4  # CenterFace's, not the cached YuNet
    assert len(list((yunet_copy.parent / ".dynamic").glob("*.dynamic.onnx"))) == 2


def test_threads_building_at_once_never_show_a_cut_file(yunet_copy):
    """The engine warms the facebank's networks on a thread of its own while the stream's start: two threads may
    build the same copy. Each writes a temporary file of its own; a reader polling the final name only ever sees
    the whole model."""
    import threading

    whole = len(dynamic_model(yunet_copy))
    for cached in (yunet_copy.parent / ".dynamic").glob("*.dynamic.onnx"):
        cached.unlink()
    seen: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.extend(p.stat().st_size for p in (yunet_copy.parent / ".dynamic").glob("*.dynamic.onnx"))

    reader = threading.Thread(target=poll)
    reader.start()
    builders = [threading.Thread(target=dynamic_model, args=(yunet_copy,)) for _ in range(4)]
    for b in builders:
        b.start()
    for b in builders:
        b.join()
    done.set()
    reader.join()
    seen.extend(p.stat().st_size for p in (yunet_copy.parent / ".dynamic").glob("*.dynamic.onnx"))  # the last look
    assert set(seen) == {whole}
    assert not list((yunet_copy.parent / ".dynamic").glob("*.tmp")), "a temporary file was left behind"


def test_a_damaged_cached_copy_is_made_again(yunet_copy):
    data = dynamic_model(yunet_copy)
    (cached,) = (yunet_copy.parent / ".dynamic").glob("*.dynamic.onnx")
    cached.write_bytes(data[: len(data) // 2])  # cut by a disk fault, not by us
    runner = OnnxRuntimeRunner(yunet_copy)
    assert len(runner.session.get_outputs()) == 12
    assert cached.read_bytes() == data


def test_no_home_and_no_cache_folder_still_starts(yunet_copy, tmp_path):
    """A container run as a uid without a passwd entry and without HOME: the copy beside the weights serves."""
    probe = ("import sys; from pathlib import Path; from engine.models.backends import OnnxRuntimeRunner; "
             f"OnnxRuntimeRunner(Path({str(yunet_copy)!r})); print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    env.update(PYTHONPATH=str(REPO), XDG_CACHE_HOME="")  # empty: must not mean the working folder
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "blurcast").exists(), "a relative cache folder was made in the working folder"


def test_a_home_that_cannot_be_found_is_skipped(yunet_copy, monkeypatch):
    from engine.models import backends

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert backends._cache_places(yunet_copy) == [yunet_copy.parent / ".dynamic"]
    assert dynamic_model(yunet_copy)
