"""bench/gpu_check.py in its --smoke mode on CPU: every section runs and its figures have the right form.

The figures themselves are the GPU machine's to produce (docs/gpu.md); here the script is proven to run to
the end, write its JSON, and hold the CPU path's parity where the device is the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import DATA, REPO

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="2" tests="5"><testcase classname="tests.test_x" name="test_a"><failure message="no"/></testcase>
</testsuite></testsuites>"""


def test_gpu_check_smoke_runs_every_section_on_cpu(dev_clip, tmp_path: Path):
    junit = tmp_path / "pytest.xml"
    junit.write_text(JUNIT)
    out = tmp_path / "figures.json"
    env = {**os.environ, "BLURCAST_DATA": str(DATA), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--smoke", "--device", "cpu",
                           "--out", str(out), "--junit", str(junit)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["smoke"] and figures["environment"]["device"] == "cpu"
    assert figures["tests"] == {"ran": True, "tests": 5, "failures": 1, "errors": 0, "skipped": 2,
                                "failed": ["tests.test_x::test_a"]}
    parity = figures["parity"]
    for net in ("yunet", "centerface", "sface"):
        assert parity[f"{net}_fp32"]["max_abs_diff"] < 1e-4  # the torch ports equal onnxruntime on CPU
    assert parity["sface_fp32"]["min_cosine"] > 0.9999
    faces = parity["detector_faces"]["fp32"]
    assert faces["onnxruntime_faces"] > 0 and faces["matched_within_2px"] >= 0.95 * faces["onnxruntime_faces"]
    for mode in ("blur", "mosaic", "fill"):
        assert parity["anonymizer"][mode]["mean_abs_diff"] < 0.5
    for run in figures["single_stream"].values():
        assert run["frames"] == 4 and run["whole_frames"] == 0 and run["fps"] > 0
        assert run["latency_p50_ms"] <= run["latency_p95_ms"] <= run["latency_max_ms"]
    streams = figures["streams"]
    assert streams["trials"] and streams["streams_held"] in (0, 1, 2)
    assert all("worst_p95_ms" in t for t in streams["trials"].values())
