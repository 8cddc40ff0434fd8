"""Render a terminal capture (ANSI text, e.g. `tmux capture-pane -e -p`) to a PNG for the README.

    tmux capture-pane -e -p -t blurcast > live.ansi && python scripts/ansi_to_png.py live.ansi docs/live.png

No SVG renderer is needed (none is installed on the rig): each cell is painted with Pillow in DejaVu Sans Mono;
half-block cells ("▀") are painted as two pixels-high rectangles, so the preview looks as the terminal shows it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rich.color import Color
from rich.console import Console
from rich.text import Text

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
FG, BG = (220, 220, 220), (18, 18, 24)
CELL_W, CELL_H, SIZE = 9, 18, 14


def _rgb(color: Color | None, fallback: tuple[int, int, int]) -> tuple[int, int, int]:
    if color is None or color.is_default:
        return fallback
    triplet = color.get_truecolor()
    return triplet.red, triplet.green, triplet.blue


def render(ansi: str, columns: int) -> Image.Image:
    lines = ansi.rstrip("\n").split("\n")
    image = Image.new("RGB", (columns * CELL_W, len(lines) * CELL_H), BG)
    draw = ImageDraw.Draw(image)
    fonts = {False: ImageFont.truetype(FONT, SIZE), True: ImageFont.truetype(BOLD, SIZE)}
    console = Console(width=columns, color_system="truecolor", force_terminal=True)
    for row, line in enumerate(lines):
        x = 0
        for segment in Text.from_ansi(line).render(console):
            style = segment.style
            fg = _rgb(style.color if style else None, FG)
            bg = _rgb(style.bgcolor if style else None, BG)
            if style and style.reverse:
                fg, bg = bg, fg
            for ch in segment.text:
                left, top = x * CELL_W, row * CELL_H
                draw.rectangle([left, top, left + CELL_W - 1, top + CELL_H - 1], fill=bg)
                if ch == "▀":
                    draw.rectangle([left, top, left + CELL_W - 1, top + CELL_H // 2 - 1], fill=fg)
                elif ch != " ":
                    draw.text((left, top), ch, font=fonts[bool(style and style.bold)], fill=fg)
                x += 1
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", help="ANSI text file, or - for stdin")
    parser.add_argument("png")
    parser.add_argument("--columns", type=int, default=80)
    args = parser.parse_args(argv)
    ansi = sys.stdin.read() if args.capture == "-" else Path(args.capture).read_text()
    render(ansi, args.columns).save(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
