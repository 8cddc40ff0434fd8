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


def run_probe(code: str, timeout: float = 60) -> tuple[list[str], list[str]]:
    """(lines `code` printed, forbidden modules loaded after it), from a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    *printed, loaded = out.stdout.removesuffix("\n").split("\n")
    return printed, loaded.split()


def loaded_after(code: str) -> list[str]:
    return run_probe(code)[1]


def test_importing_the_ui_loads_no_engine_internals():
    assert loaded_after("import tui.app, tui.link, tui.screens.live, tui.screens.facebank, tui.screens.output") == []


def test_the_probe_sees_a_forbidden_import():
    """The check above can fail: a module that pulls in the engine is reported."""
    assert loaded_after("import tui.app, engine.runner") == ["cv2", "engine.pipeline", "engine.runner"]


# Drives the real UI (headless) against a running engine: enrol a photo on the facebank screen, then report
# what the UI process loaded and its resident memory before and after.
UI_ENROLS = """
import asyncio, json, resource, sys
from pathlib import Path
from tui.app import make_app
from tui.link import EnginePaths

def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 2**20

async def main(root, photo):
    app = make_app(EnginePaths(Path(root)), start_engine=False)
    async with app.run_test() as pilot:
        for _ in range(600):
            if app.engine_state == 'live' and app.telemetry:
                break
            await pilot.pause(0.05)
        before = rss_mb()
        await pilot.press('f', 'a', *'Lin', 'enter')
        app.screen.query_one('#paths').value = photo
        await pilot.press('enter')
        message = app.screen.query_one('#fb-message')
        for _ in range(1200):
            if 'Enrolled' in str(message.render()) or message.has_class('error'):
                break
            await pilot.pause(0.05)
        return {'message': str(message.render()), 'rss_before_mb': before, 'rss_after_mb': rss_mb()}

print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))  # after the app: Textual captures stdout
"""


def test_enrolling_from_the_ui_loads_no_model_in_the_ui(dev_clip, tmp_path):
    import json

    from engine.client import EnginePaths, start_background, stop_background
    from tests.conftest import PERFORMER_PHOTO, need_data

    need_data(PERFORMER_PHOTO)
    paths = EnginePaths(tmp_path)
    start_background(["--source", str(dev_clip), "--loop"], paths)
    try:
        probe = f"import sys\nsys.argv[1:] = [{str(tmp_path)!r}, {str(PERFORMER_PHOTO)!r}]\n{UI_ENROLS}"
        printed, loaded = run_probe(probe, timeout=300)
    finally:
        stop_background(paths)
    report = json.loads(printed[-1])
    assert "Enrolled Lin" in report["message"], report
    assert loaded == [], "the UI process loaded engine internals"
    print(f"UI RSS {report['rss_before_mb']:.0f} MB before, {report['rss_after_mb']:.0f} MB after the enrolment")


def test_a_cpu_without_bf16_resolves_auto_without_loading_openvino():
    """`auto` asks OpenVINO whether it would infer in bf16 only where the CPU has bf16 at all (/proc/cpuinfo):
    importing OpenVINO costs 0.1-0.5 s of every start, and without bf16 `auto` keeps onnxruntime anyway."""
    import pytest

    from engine.models.backends import _cpu_flags, cuda_available

    if _cpu_flags() is None or _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        pytest.skip("this CPU has bf16 (or no /proc/cpuinfo): OpenVINO is asked, as it should be")
    if cuda_available():
        pytest.skip("with a GPU `auto` picks torch for the detector")
    printed, _ = run_probe("import sys\nfrom engine.models.backends import resolve_backend\n"
                           "print(resolve_backend('auto', 'yunet'), 'openvino' in sys.modules)")
    assert printed == ["onnxruntime False"]
