"""The suite's noise floor: onnxruntime f32 with zero-mean noise of bf16's size on YuNet's outputs.

    python bench/jitter_suite.py --seed 1 [suite options: --no-enrol --only wider --keep DIR ...]
    python bench/jitter_suite.py --seed 1 --backend openvino ...   # the same noise on bf16: a paired comparison
    python bench/jitter_suite.py --auto-openvino [suite options]   # `auto` with yunet listed in OPENVINO_AUTO

If OpenVINO bf16's extra leaks were only noise, f32 plus unbiased noise of the same size would move the leak
counts as much. The noise is drawn per call, in logit space for the class and objectness outputs and added to
the box and landmark offsets, with the spreads measured between the two backends on held-out crowd photos
(bench/bf16_bias.py's `heldout` set; anchors scoring >= 0.05): cls logit sd 0.0047, obj logit sd 0.049, box
offsets 0.0056, landmark offsets 0.011 (stride units). Only the stream's detector (network "yunet") is touched.
The pipeline is an OR over time (a face seen once at 0.5, or twice at 0.3, starts a blurred track), so iid noise
alone changes recall; the same seeds on both backends compare them with that effect on both sides.

`--auto-openvino` runs the corpus as `auto` would with "yunet" in OPENVINO_AUTO (the detector on OpenVINO,
the landmarker, photo detection and MobileFaceNet on onnxruntime), before that is the code's default.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SPREAD = {"cls": 0.0047, "obj": 0.049, "bbox": 0.0056, "kps": 0.011}  # bf16 - f32, held-out photos
ENV = "BLURCAST_JITTER"  # "seed" (noise) or "auto-openvino", read by the child blurcast process


class JitteredRunner:
    """An f32 runner whose YuNet outputs get unbiased noise of bf16's measured size."""

    def __init__(self, runner, seed: int) -> None:
        self.runner = runner
        self.name = f"{runner.name}+jitter{seed}"
        self.rng = np.random.default_rng(seed)
        self.takes_images = getattr(runner, "takes_images", False)  # OpenVINO: the uint8 image (detect.network_batch)

    @property
    def background_compiles(self) -> bool:  # OpenVINO's: file mode must still compile in the calling thread
        return self.runner.background_compiles  # AttributeError on onnxruntime: hasattr() is then False

    @background_compiles.setter
    def background_compiles(self, value: bool) -> None:
        self.runner.background_compiles = value

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        out = self.runner.run(batch)
        for i, o in enumerate(out):  # cls 0-2, obj 3-5, bbox 6-8, kps 9-11 (YuNet's output order)
            kind = ("cls", "obj", "bbox", "kps")[i // 3]
            noise = self.rng.normal(0.0, SPREAD[kind], o.shape).astype(np.float32)
            if kind in ("cls", "obj"):
                p = np.clip(o, 1e-6, 1 - 1e-6)
                out[i] = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + noise)))
            else:
                out[i] = o + noise
        return out


def child(argv: list[str]) -> int:
    """`blurcast` itself, with the detector's runner patched as ENV says."""
    from engine.models import backends

    mode = os.environ[ENV]
    if mode == "auto-openvino":
        backends.OPENVINO_AUTO = frozenset({"yunet"})
    else:
        make = backends.make_runner

        def jittered(backend, onnx_path, module_factory, network=None):
            runner = make(backend, onnx_path, module_factory, network)
            return JitteredRunner(runner, int(mode)) if network == "yunet" else runner

        backends.make_runner = jittered
        import engine.stages.detectors.yunet as yunet
        yunet.make_runner = jittered
    from blurcast.cli import main

    return main(argv)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int)
    group.add_argument("--auto-openvino", action="store_true")
    args, rest = parser.parse_known_args()
    os.environ[ENV] = "auto-openvino" if args.auto_openvino else str(args.seed)
    from bench import suite

    def run_blurcast(video: Path, out: Path, options: list[str], home: Path) -> float:
        env = {**os.environ, "PYTHONPATH": str(REPO), "BLURCAST_HOME": str(home)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "run", str(video), "-o", str(out), *options]
        return suite._timed(cmd, env)

    suite.run_blurcast = run_blurcast
    return suite.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
