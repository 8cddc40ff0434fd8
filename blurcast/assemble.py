"""One way to put an engine together, used by `blurcast run`, `blurcast eval` and the background service.

The facebank is on by default everywhere (`use_facebank=False` blurs everyone); `allow` adds people from
photos for this run only, in memory, never stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from engine.client import EnginePaths, default_paths, soft_warning
from engine.config import Settings
from engine.models import backends
from engine.models.backends import resolve_backend
from engine.pipeline import Pipeline
from engine.runner import Engine
from engine.service import ServeOptions, open_sink
from engine.stages.detect import create_detector
from engine.stages.sinks.stream import stream_format
from engine.stages.sources import open_source
from engine.stream_options import srt_output_url
from facebank.enrol import EnrolError, Enroller, SeveralFaces, soft_photos
from facebank.live import LiveFacebank, LiveGallery, create_identifier
from facebank.store import Facebank

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    engine: Engine
    facebank: LiveFacebank | None  # what the facebank commands write; None with use_facebank=False
    gallery: LiveGallery


def build_engine(options: ServeOptions, settings: Settings, *, paths: EnginePaths | None = None,
                 use_facebank: bool = True, allow: Sequence[str] = (), file_mode: bool = False) -> Assembly:
    """Source, pipeline with the facebank identifier, and the sinks `options` asks for. `file_mode`: a file source
    will be run through once (`Engine.run_file`), so the pipeline is made for file mode from the start (its
    detector's runtime: Pipeline.offline); a camera or stream source is live whatever it says."""
    paths = paths or default_paths()
    store = Facebank(paths.facebank) if use_facebank else None
    # Each stream output's URL checked before the source opens: an SRT listener source waits up to a minute for
    # its sender, and `--out udp://...` was refused only after it (a review, stop 44)
    outputs = [srt_output_url(url) for url in options.outputs]
    for url in outputs:
        stream_format(url)
    source = open_source(options.source, loop=options.loop, tls=options.tls)
    models = _networks_for(settings, source, options.loop)
    try:
        extra = _allowed_people(models, store, allow)
    except Exception:
        source.close()
        raise
    gallery = LiveGallery(store, extra=extra)
    # Without a facebank and without --allow nobody can ever be shown (nothing can be enrolled either): no
    # recognizer to load, 0.2-0.3 s of every such start (the pipeline's own NoIdentifier blurs every face).
    identifier = create_identifier(models, gallery) if store is not None or extra else None
    # A photo's networks where `models` says; the engine keeps (and would save) the settings it was given.
    pipeline = Pipeline(settings, detector=None if models is settings else create_detector(models),
                        identifier=identifier, offline=file_mode and source.kind == "file")
    engine = Engine(settings, source, identifier=identifier, pipeline=pipeline)
    try:
        for kind, wanted in (("file", options.record), ("vcam", options.vcam), ("preview", options.preview)):
            if wanted:
                engine.sinks.append(open_sink(kind, source, options.record, options.vcam_device,
                                              keep_existing=options.keep_existing, live=options.live))
        for url in outputs:  # network streams, with the source's sound
            engine.sinks.append(open_sink("stream", source, url, bitrate_kbps=options.bitrate_kbps,
                                          keyframe_s=options.keyframe_s, preset=options.preset, tls=options.tls))
    except Exception:
        engine.close()
        raise
    facebank = LiveFacebank(store, gallery) if store is not None else None
    if facebank is not None:
        facebank.refresh_if_stale()  # before the first frame: an upgraded model must not blur the streamer
    return Assembly(engine, facebank, gallery)


def _networks_for(settings: Settings, source, loop: bool) -> Settings:
    """The settings the networks are built with: a photo (one frame, not looped) on a GPU rig stays on the CPU under
    `auto`, as enrolment photos do (backends.CPU_ON_CUDA). Measured on an H200 (docs/gpu.md, stop 28): one photo
    took 4.7 s through torch on CUDA, most of it CUDA's start, against 1.9 s on onnxruntime; and the CPU computes
    the function every photo figure of this project was measured with. Anything else: `settings` itself."""
    info = getattr(source, "info", None)
    if settings.backend != "auto" or loop or info is None or info.frame_count != 1 or not backends.cuda_available():
        return settings
    return replace(settings, backend=resolve_backend("auto", "photo"))


def _allowed_people(settings: Settings, store: Facebank | None, allow: Sequence[str]) -> dict:
    """`--allow NAME` must be on the facebank (it already stays visible); `--allow PHOTO` is enrolled in
    memory for this run."""
    people: dict = {}
    enroller: Enroller | None = None
    for item in allow:
        if store is not None and store.person(item) is not None:
            continue
        if not Path(item).expanduser().exists():
            where = "on the facebank" if store is not None else "(the facebank is off)"
            raise ValueError(f"--allow {item!r}: no such person {where}, and no such photo")
        enroller = enroller or Enroller(settings)
        try:
            enrolment = enroller.enrol(item)
        except SeveralFaces as exc:  # `run` has no --face: the way to pick one is the facebank's
            raise EnrolError(exc.path, f"{exc.found}. Use a photo of that person alone, or put the one you mean on "
                                       "the facebank (blurcast facebank add NAME PHOTO --face N) and give --allow "
                                       "NAME") from None
        people[Path(item).stem] = enrolment.embedding[None]
        if (warning := soft_warning(soft_photos([enrolment]))) is not None:
            log.warning("--allow %s: %s", item, warning)
        log.info("allowed for this run: %s", Path(item).stem)
    return people
