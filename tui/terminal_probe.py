"""What the terminal draws (Kitty graphics, Sixel) and its cell size, asked once before the app takes the
terminal, without losing or inventing keys.

textual-image asks on its own at import, each question with a 0.1 s timeout, reading stdin a byte at a time:
over SSH (a round trip above 0.1 s) the answers come late, its parser eats their first bytes and the rest
(`?1;2c`) reached the app as keys (`?` opened the help panel), and a key typed meanwhile was read as a bad
answer and dropped. Here every question is followed by DA1 (`ESC [ c`), which every terminal answers, in order:
its answer closes the exchange whatever the link's latency. Bytes that are no answer are the user's typing and
are handed to the app, which replays them as keys. An answer later than WAIT_S reaches the app's input, where
KeyParser drops it."""

from __future__ import annotations

import logging
import os
import re
import select
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any

from textual import events
from textual._xterm_parser import XTermParser  # the parser Textual's own driver reads keys with
from textual.keys import Keys
from textual.message import Message

try:
    import fcntl
    import termios
except ImportError:  # native Windows: no termios, so no probe (half blocks); the UI still runs
    fcntl = termios = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

KITTY_QUERY = "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"  # a 1-pixel query image: a Kitty terminal says OK
CELL_QUERY = "\x1b[16t"  # the cell size in pixels (xterm), asked only when the window-size ioctl has no pixels
DA1_QUERY = "\x1b[c"  # primary device attributes: every terminal answers; `4` among them means Sixel
# Only a terminal that answers nothing waits this long (DA1 ends the exchange otherwise): long enough for a slow
# SSH round trip, since an answer later than this reaches the app as input.
WAIT_S = 5.0

_KITTY = re.compile(r"\x1b_G([^\x1b]*)\x1b\\")
_CELL = re.compile(r"\x1b\[6;(\d+);(\d+)t")
_DA1 = re.compile(r"\x1b\[\?([\d;]*)c")
_ANSWER = re.compile(f"{_KITTY.pattern}|{_CELL.pattern}|{_DA1.pattern}")  # any answer to the questions above


@dataclass(frozen=True)
class TerminalAnswer:
    graphics: str | None = None  # "sixel" or "kitty" when the terminal draws pictures
    cell: tuple[int, int] | None = None  # (width, height) of a cell in pixels, when the terminal said
    typed: str = ""  # what the user typed while the terminal was asked: the app replays it
    complete: bool = False  # the DA1 answer came (else the terminal answered nothing in time)


def parse_answers(data: str) -> TerminalAnswer:
    """The terminal's answers in `data`, and what is left once they are cut out (the user's typing)."""
    da1 = _DA1.search(data)
    kitty = _KITTY.search(data)
    cell = _CELL.search(data)
    sixel = da1 is not None and "4" in da1.group(1).split(";")
    kitty_ok = kitty is not None and kitty.group(1).endswith(";OK")
    typed = _CELL.sub("", _KITTY.sub("", _DA1.sub("", data, count=1), count=1), count=1)
    # Enter typed before the question, while the terminal was still cooked, reads "\n" (ICRNL): the app, in raw
    # mode, reads Enter as "\r" and "\n" as ctrl+j
    typed = typed.replace("\n", "\r")
    return TerminalAnswer(graphics="sixel" if sixel else "kitty" if kitty_ok else None,
                          cell=(int(cell.group(2)), int(cell.group(1))) if cell else None,
                          typed=typed, complete=da1 is not None)


def ask_terminal(stdin: IO[Any] | None = None, stdout: IO[Any] | None = None,
                 wait_s: float = WAIT_S) -> TerminalAnswer:
    """Ask the terminal on `stdin`/`stdout` (default: this process's) what it draws; an empty answer off a tty
    or without termios."""
    stdin = stdin or sys.__stdin__
    stdout = stdout or sys.__stdout__
    if termios is None or not (stdin and stdout and stdin.isatty() and stdout.isatty()):
        return TerminalAnswer()
    fd = stdin.fileno()
    cell = window_cell(stdout.fileno())
    data = b""
    with _cbreak(fd):
        os.write(stdout.fileno(), (KITTY_QUERY + ("" if cell else CELL_QUERY) + DA1_QUERY).encode())
        deadline = time.monotonic() + wait_s
        while not _DA1.search(data.decode(errors="replace")):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                log.warning("the terminal answered no device-attributes query in %.1f s", wait_s)
                break
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            data += chunk
    answer = parse_answers(data.decode(errors="replace"))
    return replace(answer, cell=cell) if cell else answer


def window_cell(fd: int) -> tuple[int, int] | None:
    """(width, height) of a cell in pixels from the window-size ioctl, where the terminal fills in its pixels."""
    try:
        rows, cols, width, height = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    except OSError:
        return None
    if not (rows and cols and width >= cols and height >= rows):
        return None
    return width // cols, height // rows


@contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Keys and answers come byte by byte and unechoed (the answers would be printed otherwise); Enter stays
    CR (ICRNL off), as the app reads it in raw mode, not LF (ctrl+j there)."""
    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[0] &= ~termios.ICRNL  # iflag
    mode[3] &= ~(termios.ECHO | termios.ICANON)  # lflag
    mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


class KeyParser(XTermParser):
    """Textual's key parser, less the terminal's answers to the questions above: one later than WAIT_S (a very
    slow link) comes after the app took the terminal, and typed as keys its `?` opened the help panel."""

    def feed(self, data: str) -> Iterable[Message]:
        kept = _ANSWER.sub("", data)  # an answer usually arrives whole, in one read
        return super().feed(kept) if kept or not data else ()  # feed("") means end of input: only when given

    def _sequence_to_key_events(self, sequence: str, alt: bool = False) -> Iterable[events.Key]:
        if _DA1.fullmatch(sequence) or _CELL.fullmatch(sequence):  # an answer split over two reads
            yield events.Key(Keys.Ignore, sequence)
            return
        yield from super()._sequence_to_key_events(sequence, alt)


def ignore_late_answers() -> None:
    """Have Textual's terminal driver read keys with KeyParser. Best effort: another Textual may build its parser
    elsewhere, and then a late answer is typed as before."""
    try:
        from textual.drivers import linux_driver
    except ImportError:  # no such driver here (Windows)
        return
    if getattr(linux_driver, "XTermParser", None) is XTermParser:
        linux_driver.XTermParser = KeyParser  # type: ignore[misc]
    else:
        log.warning("this Textual reads keys elsewhere: a terminal answer later than %.0f s is typed", WAIT_S)


def use_graphics(answer: TerminalAnswer) -> None:
    """Make textual-image draw as `answer` says without asking the terminal again (its own questions are
    the ones that lost keys): its cell size is set, its renderable chosen here."""
    from textual_image import _terminal

    _terminal.get_cell_size._result = _terminal.CellSize(*(answer.cell or (10, 20)))  # type: ignore[attr-defined]
    with _not_a_tty():  # its import-time probes run only on a tty
        import textual_image.renderable as renderable
    from textual_image.renderable.sixel import Image as SixelImage
    from textual_image.renderable.tgp import Image as KittyImage

    renderable.Image = SixelImage if answer.graphics == "sixel" else KittyImage  # type: ignore[misc]
    import textual_image.widget  # noqa: F401  (its Image follows renderable.Image, read at import)


@contextmanager
def _not_a_tty() -> Iterator[None]:
    class _Quiet:
        def isatty(self) -> bool:
            return False

        def __getattr__(self, name: str) -> Any:
            return getattr(saved, name)

    saved = sys.__stdout__
    sys.__stdout__ = _Quiet()  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        sys.__stdout__ = saved  # type: ignore[misc]
