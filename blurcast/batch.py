"""`blurcast run` on several files or a folder: each input in turn into one output folder, under its own name.

A failed input (not a picture or video, corrupt, unwritable) is reported and the rest go on; the exit status says
whether every one was written. Each input gets an engine of its own, as a separate `run` would: no track or
look-ahead state can carry from one file into the next.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console

from engine.media import IMAGE_SUFFIXES, is_image_path
from engine.stages.sink import CRASH_SAFE_MUXING

log = logging.getLogger(__name__)
console = Console(stderr=True)

# What a folder given as input contributes: pictures, and videos of the containers FFmpeg reads everywhere.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".ts", ".mts", ".flv", ".wmv", ".mpg",
                  ".mpeg")


def expand(inputs: Iterable[str]) -> list[Path]:
    """The files to anonymize: each file as given, a folder's pictures and videos (not its subfolders) by name."""
    files: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in
                           IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not found:
                raise ValueError(f"{path} holds no photo ({', '.join(IMAGE_SUFFIXES)}) or video "
                                 f"({', '.join(VIDEO_SUFFIXES)})")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return files


def output_for(source: Path, folder: Path, taken: set[Path]) -> Path:
    """`folder/<name>`: a picture keeps its type (PNG where OpenCV cannot write it), a video its container where
    Blurcast writes it crash-safe, else MP4; a name already given in this run gets -1, -2..."""
    if is_image_path(source):
        suffix = source.suffix.lower()
    else:
        suffix = source.suffix.lower() if source.suffix.lower() in CRASH_SAFE_MUXING else ".mp4"
    out, n = folder / f"{source.stem}{suffix}", 0
    while out in taken:
        n += 1
        out = folder / f"{source.stem}-{n}{suffix}"
    taken.add(out)
    return out


def run_all(args: argparse.Namespace, run_one: Callable[[argparse.Namespace], int],
            errors: tuple[type[BaseException], ...]) -> int:
    """Each input through `run_one` (the single-input `run`) into the folder `args.output`."""
    if args.vcam or args.preview or args.out or args.live:
        raise ValueError("several inputs, or a folder, are anonymized file by file into a folder: give -o FOLDER, "
                         "without --vcam, --preview, --out or --live")
    if not args.output:
        raise ValueError("several inputs, or a folder, need -o FOLDER: each is written there under its own name")
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"-o {folder} is a file; several inputs, or a folder, need a folder to write into")
    sources = expand(args.input)
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[Path] = set()
    failed: list[tuple[Path, str]] = []
    for n, source in enumerate(sources, 1):
        out = output_for(source, folder, taken)
        console.print(f"[bold][{n}/{len(sources)}][/] {source} -> {out}")
        try:
            code = run_one(argparse.Namespace(**{**vars(args), "input": str(source), "output": str(out)}))
        except errors as exc:
            console.print(f"[bold red]error:[/] {source}: {exc}", soft_wrap=True)
            failed.append((source, str(exc)))
            continue
        if code:
            failed.append((source, f"exit status {code}"))
    written = len(sources) - len(failed)
    console.print(f"{written} of {len(sources)} anonymized into {folder}"
                  + (f"; failed: {', '.join(str(p) for p, _ in failed)}" if failed else ""), soft_wrap=True)
    return 1 if failed else 0
