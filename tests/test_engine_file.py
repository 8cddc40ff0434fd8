"""The dev clip through the whole engine in file mode, scored against its ground truth."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2

from tests.conftest import score_independently

# Measured 0 / 389 with the defaults (docs/measurements.md); the bound leaves room for encoder differences.
LEAK_BOUND = 0.01
RUN_BOUND = 2


def _probe(path) -> tuple[int, int, int, float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS)


def _audio_streams(path) -> str:
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_type", "-of", "csv=p=0"]
    return subprocess.run([*cmd, str(path)], capture_output=True, text=True).stdout.strip()


def test_file_mode_keeps_every_frame_and_leaks_no_bystander(dev_clip, dev_gt, tmp_path):
    out = tmp_path / "anonymized.mp4"
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "blurcast", "eval", str(dev_clip), "--gt", str(dev_gt),
                           "-o", str(out), "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _probe(out)[:3] == _probe(dev_clip)[:3]
    assert abs(_probe(out)[3] - _probe(dev_clip)[3]) < 0.01
    assert _audio_streams(out) == _audio_streams(dev_clip), "audio is copied when the input has it"
    result = json.loads(report.read_text())
    assert result["frames_output"] == result["frames_input"] == 275
    assert result["bystander_face_frames"] > 300
    assert result["leak_rate"] <= LEAK_BOUND
    assert result["worst_leak_run"] <= RUN_BOUND
    # The independent scorer (no code shared with the engine) reads the written file the same way.
    independent = score_independently(dev_clip, out, dev_gt, tmp_path)
    assert independent["leak_rate"] <= LEAK_BOUND
    assert independent["worst_leak_run"] <= RUN_BOUND
    assert independent["bystander_visible"] == result["bystander_visible"]


def test_without_a_facebank_or_allow_no_recognizer_is_loaded(dev_clip, tmp_path):
    """`--no-facebank` without `--allow`: nobody can be shown or enrolled, so the recognizer (0.2-0.3 s to load)
    is not; with a facebank, or with `--allow PHOTO`, it is."""
    from blurcast.assemble import build_engine
    from engine.client import EnginePaths
    from engine.config import Settings
    from engine.service import ServeOptions
    from engine.stages.identify import NoIdentifier
    from tests.conftest import PERFORMER_PHOTO, need_data

    need_data(PERFORMER_PHOTO)
    paths = EnginePaths(tmp_path / "home")
    kinds = []
    for facebank, allow in ((False, []), (True, []), (False, [str(PERFORMER_PHOTO)])):
        engine = build_engine(ServeOptions(source=str(dev_clip)), Settings(backend="onnxruntime"), paths=paths,
                              use_facebank=facebank, allow=allow).engine
        try:
            kinds.append(type(engine.pipeline.identifier).__name__)
        finally:
            engine.close()
    assert kinds[0] == NoIdentifier.__name__
    assert kinds[1] == kinds[2] == "FacebankIdentifier"
