"""Pure formatting of telemetry for the screens (no I/O, easy to test)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.text import Text

DASH = "—"


def short_path(path: str, width: int = 36) -> str:
    """~ for the home folder, and the middle cut when still too long: the file name always shows."""
    home = str(Path.home())
    text = "~" + path[len(home):] if path == home or path.startswith(home + "/") else path
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


MATCH_WIDTH = 26  # the faces table's match column (FACE_COLUMNS): a long name is cut, the figures never
PLAUSIBLE = 0.3  # an engine that sends no `candidate`: a best match under this is no candidate, just noise


def blur_reason(face: dict[str, Any], threshold: float) -> str:
    """Why a face is blurred: the engine's `reason`, else read off the figures an older engine sends."""
    if face.get("reason"):
        return str(face["reason"])
    if face.get("lost_frames"):
        return "lost"
    if face.get("similarity") is None:
        return "not recognised yet"
    return "below threshold" if face["similarity"] < threshold else "not confirmed yet"


# The engine's longer reasons (engine/faces.py), worded to fit the state column at 80 terminal columns
SHORT_REASONS = {"overlaps another face": "overlap", "may be another face": "re-checking",
                 "too small to recognise": "too small"}


def state_cell(face: dict[str, Any], threshold: float = 1.0) -> Text:
    """'visible', or 'blurred: WHY' (not recognised yet, lost, overlap, below threshold...)."""
    if face.get("state") == "visible":
        return Text("visible", style="bold green")
    reason = blur_reason(face, threshold)
    return Text(f"blurred: {SHORT_REASONS.get(reason, reason)}", style="yellow")


def candidate(face: dict[str, Any]) -> dict[str, Any] | None:
    """The best enrolled match when it is plausible (the engine's `candidate`, or the same rule on its figures)."""
    if "candidate" in face:
        return face["candidate"] if isinstance(face["candidate"], dict) else None
    sim = face.get("similarity")
    if face.get("identity") and sim is not None and sim >= PLAUSIBLE:
        return {"name": face["identity"], "similarity": sim}
    return None


def match_cell(face: dict[str, Any], threshold: float) -> Text:
    """Who this face is (visible) or might be (a plausible candidate); a dash otherwise, so a stranger never
    reads as a near miss of someone ('Lin -0.14 < 0.49')."""
    if face.get("state") == "visible" and face.get("identity"):
        return _named(str(face["identity"]), face.get("similarity"), threshold)
    cand = candidate(face)
    if cand and cand.get("name"):
        return _named(f"{cand['name']}?", cand.get("similarity"), threshold)
    return Text(DASH, style="dim")


def _named(name: str, similarity: float | None, threshold: float, width: int = MATCH_WIDTH) -> Text:
    """'NAME 0.71 ≥ 0.56 ✓' within `width`: a long name is cut, never the figures the sliders are tuned by."""
    figures = similarity_cell(similarity, threshold) if similarity is not None else Text("")
    room = max(width - len(figures) - (1 if len(figures) else 0), 2)
    if len(name) > room:
        name = name[:room - 1] + "…"
    return Text(f"{name} " if len(figures) else name).append_text(figures)


def face_row(face: dict[str, Any], threshold: float, confidence: float | None = None) -> tuple[Any, ...]:
    """Cells for the faces table, in FACE_COLUMNS order. A detector score under the confidence slider is dim:
    such a detection only keeps an existing track alive (the tracker's second pass)."""
    score = face.get("score", 0) or 0
    weak = confidence is not None and score < confidence
    return (
        Text(str(face.get("track_id", "?")), justify="right", style="bold"),
        Text(f"{face.get('size', 0):.0f}px", justify="right"),
        state_cell(face, threshold),
        match_cell(face, threshold),
        Text(f"{score:.2f}", justify="right", style="dim" if weak else ""),
    )


def in_view(faces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Faces the detector sees now. Lost tracks are still blurred where they are predicted, but their growing
    predicted boxes are not faces in view: listing them made ghost rows ('517px (22 lost)')."""
    return [f for f in faces if not f.get("lost_frames")]


# (key, label, width): fixed widths, so a cell update never re-measures the table (fits 80 columns)
FACE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    # Track ids pass 1,000 within minutes of a busy stream and 100,000 within hours (the dev clip: ~5 new tracks a
    # second): 6 digits, or the number shown is not the one to type.
    ("id", "id", 6), ("size", "size", 5), ("state", "state", 27), ("match", "match vs threshold", MATCH_WIDTH),
    ("score", "det", 4),
)


def masked_url(url: str) -> str:
    """A stream URL fit to show: SRT passphrase and streamid, and an RTMP stream key (the last path part), as ***."""
    url = re.sub(r"(passphrase|streamid)=[^&]*", r"\1=***", url, flags=re.IGNORECASE)
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if scheme.lower().startswith("rtmp") and "/" in path:
        path = path.rsplit("/", 1)[0] + "/***"
    return scheme + sep + host + slash + path


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


def sync_words(t: dict[str, Any]) -> str:
    """The added video delay (look-ahead included) as OBS's audio Sync Offset wants it, while frames go out."""
    offset = t.get("obs_sync_offset_ms")
    return "" if offset is None or not t.get("sinks") else f" · OBS sync {offset} ms"  # nothing out: no matter


def delay_words(t: dict[str, Any]) -> tuple[str, str]:
    """The live figure of delay: capture to the outputs where the engine measures it (it counts the frames the
    look-ahead holds back, one while coasting: what a viewer waits), else capture to anonymized."""
    key = "output_delay" if t.get("output_delay_p50_ms") is not None else "latency"
    p50, p95 = number(t.get(f"{key}_p50_ms"), 0), number(t.get(f"{key}_p95_ms"), 0)
    return ("delay" if key == "output_delay" else "latency"), f"p50 {p50} / p95 {p95} ms"


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
         *delay_words(t)),
        ("frames", str(t.get("frames", 0)), "dropped", f"{t.get('dropped', 0)}   whole {t.get('whole_frames', 0)}"
         + (f"   coasted {t['coasted_frames']}" if t.get("coasted_frames") else "")),
        ("source", short_source(t.get("source")), "", ""),
        ("output", sinks_line(t.get("sinks")) + sync_words(t), "", ""),
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


FAULT_WORDS = {
    "detector-deadline": "the detector missed its deadline (whole frame blurred)",
    "detector-stalled": "the detector was still busy (whole frame blurred)",
    "detector-error": "the detector failed (whole frame blurred)",
    "detector-garbage": "the detector returned nonsense (whole frame blurred)",
    "identifier-error": "recognition failed (every face blurred)",
    "pipeline-error": "an error in the pipeline (whole frame blurred)",
    "settings-error": "a setting could not be applied",
}


def faults_words(faults: dict[str, int] | None) -> list[str]:
    """Each fault as 'COUNT× what happened'; unknown names are shown as they come."""
    return [f"{count}× {FAULT_WORDS.get(name, name)}" for name, count in sorted((faults or {}).items())]


OUTPUT_NAMES = {"vcam": "virtual camera", "file": "recording", "preview": "preview window"}


def outputs_words(t: dict[str, Any]) -> list[str]:
    """The engine's outputs with their paths (`outputs`), or the bare sink names from an older engine; then those
    that failed for good, with why."""
    outputs = [o for o in t.get("outputs") or [] if isinstance(o, dict)]
    words = [_output_words(OUTPUT_NAMES, o) for o in outputs] if outputs else list(t.get("sinks") or [])
    return words + [f"{what} STOPPED: {why}" for what, why in stopped_outputs(t)]


def stopped_outputs(t: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, why) of each output that failed and was closed (a recording on a full disk)."""
    stopped = t.get("stopped_outputs")
    if not isinstance(stopped, dict):
        return []
    return [("stream" if str(name).startswith("stream ") else OUTPUT_NAMES.get(str(name), str(name)), str(why))
            for name, why in sorted(stopped.items())]


def _output_words(names: dict[str, str], o: dict[str, Any]) -> str:
    """'recording → /r.mp4'; a stream says how the far end takes it: 'stream → srt://… (waiting, 230 dropped)'."""
    name = str(o.get("name"))
    words = "stream" if name.startswith("stream ") else names.get(name, name)
    words += f" → {o['path']}" if o.get("path") else ""
    if o.get("state") not in (None, "running"):
        words += f" ({o['state']}" + (f", {o['dropped']} dropped" if o.get("dropped") else "") + ")"
    return words


def status_rows(t: dict[str, Any]) -> list[tuple[str, str]]:
    """`blurcast engine status` in words: what an on-call streamer asks first comes first."""
    settings = t.get("settings") or {}
    whole = t.get("whole_frame")
    state = ("PANIC: every frame blurred" if settings.get("panic") else
             "PAUSED: every frame blurred" if settings.get("paused") else
             f"every frame blurred ({whole})" if whole else "live: strangers blurred, facebank visible")
    src = t.get("source") or {}
    bank = t.get("facebank") or {}
    people = bank.get("people")
    rows = [
        ("state", state + (f" · pid {t['pid']}" if t.get("pid") else "")),
        ("source", f"{src.get('spec', DASH)} ({src.get('kind', '?')}, {src.get('width', '?')}×"
                   f"{src.get('height', '?')}, {src.get('state', '?')})"),
        ("outputs", "; ".join(outputs_words(t)) or "none: nothing leaves the engine"),
        ("facebank", f"UNREADABLE, everybody blurred: {bank['error']}" if bank.get("error") else
                     DASH if people is None else f"{people} {'person' if people == 1 else 'people'}"
                                                 f" ({plural(bank.get('photos', 0), 'photo')})"),
        ("fps", f"{t.get('fps', 0):.1f}"),
        ("latency", f"p50 {number(t.get('latency_p50_ms'), 0)} / p95 {number(t.get('latency_p95_ms'), 0)} ms"
                    " (capture to anonymized)"),
    ]
    if t.get("output_delay_p50_ms") is not None:
        rows.append(("delay", f"p50 {number(t.get('output_delay_p50_ms'), 0)} / p95 "
                              f"{number(t.get('output_delay_p95_ms'), 0)} ms (capture to the outputs, frames held "
                              "back included)"))
    if t.get("obs_sync_offset_ms") is not None:
        rows.append(("OBS audio Sync Offset", f"{t['obs_sync_offset_ms']} ms (the stream's sound, to match the video)"))
    rows += [
        ("frames", f"{t.get('frames', 0)} ({t.get('dropped', 0)} input frames dropped, "
                   + (f"{t['coasted_frames']} coasted on the tracks (far behind), " if t.get("coasted_frames") else "")
                   + f"{t.get('whole_frames', 0)} whole-frame blurred)"),
        ("faults", "; ".join(faults_words(t.get("faults"))) or "none"),
        ("faces in view", str(len(in_view(t.get("faces") or [])))),
    ]
    if t.get("lookahead_frames"):
        rows.append(("look-ahead", lookahead_line(t)))
    if isinstance(t.get("tiles"), dict):
        rows.append(("small faces", tiles_line(t["tiles"])))
    enrol = t.get("enrolment")
    if isinstance(enrol, dict):
        rows.append(("enrolment", enrolment_line(enrol)))
    return rows


def tiles_line(tiles: dict[str, Any]) -> str:
    """How much of a large frame is searched at full resolution for small faces: live mode takes more tiles a frame
    with time to spare, fewer when behind."""
    line = f"{tiles.get('a_frame', '?')} of {tiles.get('of', '?')} full-resolution tiles searched a frame"
    if (tiles.get("every") or 1) > 1:
        line += f", on every {tiles['every']} frames (behind)"
    return line


def lookahead_line(t: dict[str, Any]) -> str:
    """What the look-ahead did with the frames it held: faces found late hidden back, faces recognised late shown."""
    held = t.get("lookahead_frames") or 0
    what = f"{held} frame{'s' if held != 1 else ''} held"
    if held and not _lookahead_set(t):  # the slider is off: live mode far behind holds one while it coasts
        what += " while coasting (far behind; the slider is off)"
    return (f"{what}: {t.get('backfilled', 0)} faces found late hidden in earlier frames, {t.get('revealed', 0)} "
            "recognised late shown in earlier frames")


def lookahead_done(t: dict[str, Any]) -> str:
    """What the look-ahead has done so far, for its slider's help line (short: the line is cut); '' while the slider
    is off (a frame held only while coasting is not the slider's doing)."""
    if not t.get("lookahead_frames") or not _lookahead_set(t):
        return ""
    return f"so far {t.get('backfilled', 0)} hidden late, {t.get('revealed', 0)} shown late"


def _lookahead_set(t: dict[str, Any]) -> bool:
    """Whether the look-ahead setting (the slider) holds frames; True when the telemetry does not say."""
    return bool((t.get("settings") or {}).get("lookahead_frames", 1))


def enrolment_line(e: dict[str, Any]) -> str:
    """Progress of an `enrol_track` from the telemetry's `enrolment`."""
    name, track = e.get("name", "?"), e.get("track_id", "?")
    state = e.get("state")
    if state == "gathering":
        return (f"enrolling {name} from face #{track}: gathering {100 * float(e.get('progress') or 0):.0f}% "
                f"({e.get('frames', 0)} frames) — keep the face in view, turn the head a little")
    if state == "saving":
        return f"enrolling {name}: saving {e.get('frames', 0)} frames…"
    if state == "done":  # the engine's own words say how many frames it kept
        return f"{name} is on the facebank: {e.get('message') or f'from face #{track}'}"
    if state == "failed":
        return f"enrolling {name} failed: {e.get('message') or 'no reason given'}"
    return f"enrolling {name}: {state}"


def lookahead_rate(t: dict[str, Any]) -> tuple[float | None, str]:
    """(frames a second, which rate) that a held frame waits for: the engine's measured output rate (its
    telemetry `fps`), below the source's when it sheds frames or cannot keep up; the source's until the engine
    has measured one; (None, '') while neither is known."""
    for rate, basis in ((t.get("fps"), "processed"), ((t.get("source") or {}).get("fps"), "source rate")):
        if isinstance(rate, int | float) and rate > 0:
            return float(rate), basis
    return None, ""


def lookahead_cost_ms(frames: float, fps: float | None) -> float | None:
    """The delay `frames` of look-ahead add at `fps` (None: the rate is not known yet)."""
    return 1000.0 * frames / fps if fps and fps > 0 else None


def lookahead_cost(frames: float, fps: float | None, basis: str = "processed") -> tuple[str, str]:
    """What the look-ahead costs: (the slider's value, e.g. 'off', '8 +267ms', '30 +1.0s' or '8 fr' while the
    rate is unknown; the words first on its help line, which a narrow panel cuts). `basis` names the rate."""
    n = round(frames)
    cost = lookahead_cost_ms(n, fps)
    if n == 0:
        return "off", "off, no delay"
    if cost is None:
        return f"{n} fr", f"+{n} frames of delay (rate unknown)"
    value = f"{n} +{cost:.0f}ms" if cost < 999.5 else f"{n} +{cost / 1000:.1f}s"
    return value, f"+{cost:.0f} ms at {fps:.3g} fps {basis}"  # 41 columns with its label: the 80x24 panel


def plural(n: int, word: str) -> str:
    """`1 photo`, `2 photos`."""
    return f"{n} {word}{'' if n == 1 else 's'}"
