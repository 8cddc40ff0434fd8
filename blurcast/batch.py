"""`blurcast run` on several files or a folder: each input in turn into one output folder, under its own name.

Every input and output is checked before the first frame: no output may land on an input (a later input would be
overwritten before it was read), and an input given twice is done once. An input that fails on its own (not a
picture or video, corrupt) is reported and the rest go on; the exit status says whether every one was written. Each
input gets an engine of its own, as a separate `run` would: no track or look-ahead state carries into the next file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.markup import escape

from blurcast.cli import console
from engine.media import IMAGE_SUFFIXES, UNREAD_PHOTO_SUFFIXES, VIDEO_SUFFIXES, is_image_path, unread_photo_hint
from engine.stages.sink import CRASH_SAFE_MUXING, SinkError
from engine.stages.source import SourceError, classify


def is_folder_output(output: str | None) -> bool:
    """`-o` names a folder to write into: one that exists, or a name ending in a path separator."""
    return output is not None and (Path(output).is_dir() or output.endswith((os.sep, "/")))


def expand(inputs: Iterable[str]) -> tuple[list[Path], list[str], list[Path]]:
    """The files to anonymize, each once: each file as given, a folder's photos and videos by name (not its
    subfolders, nor hidden files such as macOS's `._` copies); and what of the folders was passed over, said so
    (a photo left in a subfolder, or in a type Blurcast does not read, is not anonymized); and its photos of a type
    no decoder here reads (HEIC), which fail the run."""
    files: list[Path] = []
    passed_over: list[str] = []
    unread: list[Path] = []  # photos of a type no decoder here reads (HEIC): not anonymized, and the run says so
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            children = sorted(path.iterdir())
            entries = [p for p in children if p.is_file() and not p.name.startswith(".")]
            found = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
            heic = [p for p in entries if p.suffix.lower() in UNREAD_PHOTO_SUFFIXES]
            if not found and heic:  # a phone's export: say what to do, not only what is missing
                raise ValueError(f"{path} holds no photo Blurcast reads: {unread_photo_hint(heic[0])}")
            if not found:
                raise ValueError(f"{path} holds no photo ({', '.join(IMAGE_SUFFIXES)}) or video "
                                 f"({', '.join(VIDEO_SUFFIXES)})")
            passed_over += _passed_over(children, entries, found)
            unread += heic
            files += found
        elif classify(given) != "file" or (path.exists() and not path.is_file()):
            raise ValueError(f"{given} is not a photo or video file: cameras and URLs run on their own "
                             f"(`blurcast run {given} ...`)")
        elif not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        else:
            files.append(path)
    unique = {_key(p): p for p in reversed(files)}  # the first mention of each file, in order
    given = {_key(p) for p in files}  # one also given on its own fails there, once
    unread = [p for p in {_key(p): p for p in unread}.values() if _key(p) not in given]  # each photo once
    return [p for p in files if unique[_key(p)] is p], passed_over, unread


def _passed_over(children: list[Path], entries: list[Path], found: list[Path]) -> list[str]:
    """One line for each kind of thing in a folder that is not anonymized, naming a few of them."""
    kinds = [
        ("file(s) that are neither photos nor videos", [p.name for p in entries if p not in found
                                                        and p.suffix.lower() not in UNREAD_PHOTO_SUFFIXES]),
        ("subfolder(s), not searched (give them as inputs)", [f"{p.name}/" for p in children if p.is_dir()]),
        ("hidden file(s)", [p.name for p in children if p.is_file() and p.name.startswith(".")
                            and not p.name.startswith("._")]),  # macOS's `._` copies: nobody's photos
    ]
    return [f"{len(names)} {what}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
            for what, names in kinds if names]


def _key(path: Path) -> str:
    return os.path.normcase(str(path.resolve()))


def output_for(source: Path, folder: Path, taken: set[str]) -> Path:
    """`folder/<name>`: a picture keeps its type, a video its container where Blurcast writes it crash-safe, else
    MP4; a name already given in this run gets -1, -2..."""
    suffix = source.suffix.lower()
    if not is_image_path(source) and suffix not in CRASH_SAFE_MUXING:
        suffix = ".mp4"
    out, n = folder / f"{source.stem}{suffix}", 0
    while _key(out) in taken:
        n += 1
        out = folder / f"{source.stem}-{n}{suffix}"
    taken.add(_key(out))
    return out


def plan(args: argparse.Namespace) -> tuple[list[tuple[Path, Path]], list[str], list[Path]]:
    """(input, output) pairs and the files passed over; refuses, before anything is written, a plan that would
    write over one of its own inputs."""
    if args.vcam or args.preview or args.out or args.live:
        raise ValueError("writing into a folder (several inputs, a folder, or -o FOLDER) is file by file: drop "
                         "--vcam, --preview, --out and --live")
    if not args.output:
        raise ValueError("several inputs, or a folder, need -o FOLDER: each is written there under its own name")
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"-o {folder} is a file; several inputs, or a folder, need a folder to write into")
    if not folder.exists() and folder.suffix.lower() in IMAGE_SUFFIXES + tuple(CRASH_SAFE_MUXING):
        raise ValueError(f"-o {folder} looks like a file name, but several inputs need a folder to write into")
    sources, passed_over, unread = expand(args.input)
    taken: set[str] = set()
    pairs = [(source, output_for(source, folder, taken)) for source in sources]
    inputs = {_key(source) for source in sources}
    clash = next((out for _, out in pairs if _key(out) in inputs), None)
    if clash is not None:
        raise ValueError(f"{clash} is one of the inputs and would be overwritten: write into another folder")
    return pairs, passed_over, unread


def make_folder(folder: Path) -> None:
    """The output folder, created with its parents; a refusal (read-only place, a file on the way) is bad input,
    said in one line before any input is read."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from exc


def run_all(args: argparse.Namespace, run_one: Callable[[argparse.Namespace], int]) -> int:
    """Each input through `run_one` (the single-input `run`) into the folder `args.output`. Errors of one input
    (it cannot be read, or written) are reported and the next goes on; any other error stops the batch."""
    pairs, passed_over, unread = plan(args)
    folder = Path(args.output)
    make_folder(folder)
    for line in passed_over:
        console.print(f"passed over {escape(line)}", soft_wrap=True)
    failed: list[Path] = list(unread)
    for photo in unread:
        console.print(f"[bold red]error:[/] {escape(unread_photo_hint(photo) or str(photo))}", soft_wrap=True)
    done = 0
    for n, (source, out) in enumerate(pairs, 1):
        console.print(f"[bold][{n}/{len(pairs)}][/] {escape(str(source))} -> {escape(str(out))}")
        try:
            code = run_one(argparse.Namespace(**{**vars(args), "input": str(source), "output": str(out)}))
        except (SourceError, SinkError, FileNotFoundError) as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            failed.append(source)
            continue
        except BaseException:  # Ctrl-C, or an error no other input would escape: say where the batch stopped
            rest = len(pairs) - n
            console.print(f"stopped at {escape(str(source))}: {escape(str(out))} may be incomplete; {done} written"
                          + (f", {rest} not started" if rest else ""), soft_wrap=True)
            raise
        if code:
            failed.append(source)
        else:
            done += 1
    console.print(f"{done} of {len(pairs) + len(unread)} anonymized into {escape(str(folder))}"
                  + (f"; failed: {escape(', '.join(str(p) for p in failed))}" if failed else ""), soft_wrap=True)
    return 1 if failed else 0
