"""Several streams in one engine process on one GPU (engine/multistream.py), each with its own state folder.

    python -m blurcast.multi --stream NAME=SOURCE [--stream ...] [--home DIR] [--record] [--device cuda] [--half]

Stream NAME keeps its settings, facebank and control socket in `<home>/<NAME>/` (steer it with
`BLURCAST_HOME=<home>/<NAME> blurcast ...`); `--record` writes `<home>/<NAME>/out.mp4`. Runs until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from engine.client import EnginePaths, private_dir, state_dir
from engine.multistream import MultiStreamEngine, StreamSpec
from engine.service import open_sink
from engine.stages.sources import open_source
from engine.stream_options import DEFAULT_TLS, Tls
from facebank.live import LiveFacebank, LiveGallery
from facebank.store import Facebank

log = logging.getLogger(__name__)


def stream_spec(name: str, source: str, home: Path, loop: bool = False, record: bool = False,
                tls: Tls = DEFAULT_TLS) -> StreamSpec:
    """A stream with its own facebank (`<home>/facebank.json`), its gallery and its facebank commands."""
    paths = EnginePaths(home)
    private_dir(home.parent)  # the streams' folder, then this stream's: 0700 each
    private_dir(home)
    store = Facebank(paths.facebank)
    gallery = LiveGallery(store)
    opened = open_source(source, loop=loop, tls=tls)
    sinks = [open_sink("file", opened, str(home / "out.mp4"), live=True)] if record else []  # streams run live
    return StreamSpec(name, opened, home, sinks=sinks, gallery=gallery, facebank=LiveFacebank(store, gallery), tls=tls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", action="append", required=True, metavar="NAME=SOURCE")
    parser.add_argument("--home", type=Path, default=state_dir() / "streams")
    parser.add_argument("--loop", action="store_true", help="loop file sources")
    parser.add_argument("--record", action="store_true", help="each stream to <home>/<NAME>/out.mp4")
    parser.add_argument("--device", default=None, help="torch device for the networks (default: cuda if present)")
    parser.add_argument("--half", action="store_true", help="fp16 networks (within tolerance: docs/gpu.md)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls-ca", metavar="CERT.pem", help="trust this certificate for https:// and rtmps:// sources "
                                                          "instead of the system's authorities (your own relay's)")
    tls.add_argument("--tls-no-verify", action="store_true", help="accept any certificate (not advised)")
    args = parser.parse_args(argv)
    try:
        checked = Tls(verify=not args.tls_no_verify, ca_file=args.tls_ca)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    pairs = [item.split("=", 1) for item in args.stream]
    if any(len(p) != 2 or not p[0] for p in pairs):
        parser.error("--stream takes NAME=SOURCE")
    specs = [stream_spec(name, source, args.home / name, args.loop, args.record, checked) for name, source in pairs]
    multi = MultiStreamEngine(specs, device=args.device, half=args.half)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: [e.stop_event.set() for e in multi.engines.values()])
    multi.start(live=True, control=True)
    try:
        while not multi.wait(timeout=1.0):
            pass
    finally:
        multi.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
