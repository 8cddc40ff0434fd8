"""Pure formatting of telemetry for the screens (no I/O, easy to test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text

DASH = "—"


def short_path(path: str, width: int = 36) -> str:
    """~ for the home folder, and the middle cut when still too long: the file name always shows."""
    home = str(Path.home())
    text = "~" + path[len(home):] if path.startswith(home + "/") else path
    if len(text) <= width:
        return text
    name = Path(text).name
    return name if len(name) >= width - 2 else "…" + text[-(width - 1):]


def number(value: float | None, digits: int = 1, unit: str = "") -> str:
    return DASH if value is None else f"{value:.{digits}f}{unit}"


def similarity_cell(similarity: float | None, threshold: float) -> Text:
    """'0.71 ≥ 0.56 ✓' when the face passes the threshold, '0.12 < 0.56' when it does not."""
    if similarity is None:
        return Text(DASH, style="dim")
    if similarity >= threshold:
        return Text(f"{similarity:.2f} ≥ {threshold:.2f} ✓", style="bold green")
    return Text(f"{similarity:.2f} < {threshold:.2f}", style="red")


def state_cell(face: dict[str, Any]) -> Text:
    if face.get("state") == "visible":
        return Text("visible", style="bold green")
    lost = face.get("lost_frames") or 0
    return Text("blurred" + (f" ({lost} lost)" if lost else ""), style="yellow" if lost else "")


def face_row(face: dict[str, Any], threshold: float) -> tuple[Any, ...]:
    """Cells for the faces table, in COLUMNS order."""
    return (
        Text(str(face.get("track_id", "?")), justify="right"),
        Text(f"{face.get('size', 0):.0f}px", justify="right"),
        state_cell(face),
        Text(face.get("identity") or DASH, style="" if face.get("identity") else "dim"),
        # no best match means an empty facebank: a similarity would compare against nobody
        similarity_cell(face.get("similarity") if face.get("identity") else None, threshold),
        Text(f"{face.get('score', 0):.2f}", justify="right"),
    )


# (key, label, width): fixed widths, so a cell update never re-measures the table (77 columns in all at 80x24)
FACE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("id", "id", 4), ("size", "size", 6), ("state", "state", 17), ("match", "best match", 20),
    ("similarity", "similarity", 14), ("score", "det", 4),
)


def source_line(source: dict[str, Any] | None) -> str:
    if not source:
        return DASH
    spec = str(source.get("spec", "?"))
    name = Path(spec).name if source.get("kind") == "file" else spec
    fps = source.get("fps")
    return (f"{source.get('kind', '?')} {name} {source.get('width', '?')}×{source.get('height', '?')}"
            + (f" @{fps:.0f}" if isinstance(fps, int | float) else "") + f" · {source.get('state', '?')}")


def sinks_line(sinks: list[str] | None) -> str:
    return ", ".join(sinks) if sinks else "none (nothing leaves the engine)"


def faults_line(faults: dict[str, int] | None) -> str:
    return ", ".join(f"{name} ×{count}" for name, count in sorted(faults.items())) if faults else "none"


def short_source(source: dict[str, Any] | None) -> str:
    """State and size first, so a narrow panel cuts the name, not the facts."""
    if not source:
        return DASH
    spec = str(source.get("spec", "?"))
    name = Path(spec).name if source.get("kind") == "file" else spec
    return f"{source.get('state', '?')} · {source.get('width', '?')}×{source.get('height', '?')} {name}"


def figures(t: dict[str, Any], stale: bool = False) -> Text:
    """The live figures block: five short lines that fit a 44-column panel (longer ones are cut)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    rows = [
        ("fps", f"{t.get('fps', 0):.1f}" + ("  (stale)" if stale else ""),
         "latency", f"p50 {number(t.get('latency_p50_ms'), 0)} / p95 {number(t.get('latency_p95_ms'), 0)} ms"),
        ("frames", str(t.get("frames", 0)), "dropped", f"{t.get('dropped', 0)}   whole {t.get('whole_frames', 0)}"),
        ("source", short_source(t.get("source")), "", ""),
        ("output", sinks_line(t.get("sinks")), "", ""),
        ("faults", faults_line(t.get("faults")), "", ""),
    ]
    for i, (k1, v1, k2, v2) in enumerate(rows):
        text.append(f"{k1:<7}", style="bold")
        text.append(v1 if not k2 else f"{v1:<{max(8, len(v1) + 1)}}")
        if k2:
            text.append(f"{k2} ", style="bold")
            text.append(v2)
        if i < len(rows) - 1:
            text.append("\n")
    if t.get("faults"):
        text.highlight_words(["faults"], style="bold red")
    return text
