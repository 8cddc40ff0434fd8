"""The UI speaks only the control API: importing it (and driving it) loads no model runtime and no engine
internals. Checked in a fresh interpreter, as harlequin does, because this test process has loaded them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What a UI process must never load: the face work belongs to the engine process.
FORBIDDEN = ("cv2", "onnxruntime", "torch", "engine.pipeline", "engine.runner", "engine.service",
             "facebank.enrol", "facebank.store")


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_importing_the_ui_loads_no_engine_internals():
    assert loaded_after("import tui.app, tui.link, tui.screens.live, tui.screens.facebank, tui.screens.output") == []


def test_the_probe_sees_a_forbidden_import():
    """The check above can fail: a module that pulls in the engine is reported."""
    assert loaded_after("import tui.app, engine.runner") == ["cv2", "engine.pipeline", "engine.runner"]
