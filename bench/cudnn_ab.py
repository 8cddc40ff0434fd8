"""cuDNN or PyTorch's own convolution kernels for the engine's networks on CUDA: first-call (plan) and steady times.

    python bench/cudnn_ab.py --out ab.json        # on a GPU box; each arm in its own process (plans are per process)

cuDNN plans every new input shape (~2 s for YuNet on an H200, docs/gpu.md), which the engine paid at start-up and
for every still photo's views. With `torch.backends.cudnn.enabled = False` (BLURCAST_CUDNN=0, the default since
this comparison) PyTorch runs its own kernels and plans nothing. Reported per arm and input shape: the first
call's ms, the median and p95 of 30 later calls, and the outputs' largest difference from torch on the CPU (the
same function, fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

YUNET_SHAPES = [(1, 3, 736, 1280), (1, 3, 640, 736), (1, 3, 1024, 1024), (1, 3, 384, 640), (1, 3, 256, 256),
                (1, 3, 1536, 1024), (1, 3, 1088, 1920)]
SFACE_BATCHES = [1, 2, 4, 8, 16]


def _timed(module, batch, device, reference) -> dict:
    import torch

    x = torch.from_numpy(batch)
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = module(x.to(device))
        out = (out,) if isinstance(out, torch.Tensor) else out
        outputs = [o.float().cpu().numpy() for o in out]
        first = (time.perf_counter() - started) * 1000
        times = []
        for _ in range(30):
            started = time.perf_counter()
            out = module(x.to(device))
            out = (out,) if isinstance(out, torch.Tensor) else out
            [o.float().cpu().numpy() for o in out]
            times.append((time.perf_counter() - started) * 1000)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs, reference, strict=True))
    return {"first_ms": round(first, 1), "p50_ms": round(float(np.median(times)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2), "max_diff_vs_cpu": diff}


def arm() -> dict:
    import torch

    from engine.models.cuda_plans import cuda_kernels
    from engine.models.weights import model_path
    from engine.models.yunet import YuNet
    from engine.recognition.recognize import RECOGNIZER, recognizer_module

    cuda_kernels()
    device = torch.device(os.environ.get("BLURCAST_AB_DEVICE", "cuda"))  # cpu: a smoke test of this script
    rng = np.random.default_rng(0)
    result = {"cudnn": torch.backends.cudnn.enabled, "yunet": {}, "recognizer": {}}
    for name, module, shapes in (("yunet", YuNet.from_onnx(model_path("yunet")).eval(), YUNET_SHAPES),
                                 ("recognizer", recognizer_module(model_path(RECOGNIZER)).eval(),
                                  [(n, 3, 112, 112) for n in SFACE_BATCHES])):
        gpu = module.to(device)
        for shape in shapes:
            batch = rng.uniform(0, 255, shape).astype(np.float32)
            cpu = module.to("cpu")
            with torch.inference_mode():
                ref = cpu(torch.from_numpy(batch))
            ref = [r.float().numpy() for r in ((ref,) if isinstance(ref, torch.Tensor) else ref)]
            gpu = module.to(device)
            result[name]["x".join(map(str, shape))] = _timed(gpu, batch, device, ref)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arm", action="store_true", help="(internal) run one arm here and print its JSON")
    parser.add_argument("--arm-timeout", type=float, default=55.0, help="seconds each arm may take")
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm()))
        return 0
    results = {}
    for cudnn in ("1", "0"):
        env = {**os.environ, "BLURCAST_CUDNN": cudnn}
        try:  # each arm's own limit, so that a slow first arm leaves the second its time (gpu_profile.sh: 120 s)
            done = subprocess.run([sys.executable, __file__, "--arm", "--out", str(args.out)], env=env,
                                  capture_output=True, text=True, timeout=args.arm_timeout)
        except subprocess.TimeoutExpired:
            results[f"cudnn={cudnn}"] = {"error": f"over {args.arm_timeout} s"}
        else:
            results[f"cudnn={cudnn}"] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                                         else {"error": done.stderr[-2000:]})
        args.out.write_text(json.dumps(results, indent=1))
        print(f"cudnn={cudnn}:", json.dumps(results[f"cudnn={cudnn}"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
