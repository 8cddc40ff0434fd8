"""The UI's pieces without an engine: slider, half-block preview, path completion, formatting, messages."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from textual.app import App, ComposeResult
from textual.widgets import DirectoryTree, Input

from engine.client import EnginePaths
from tui.app import start_failure
from tui.facebank_link import people_views
from tui.format import face_row, in_view, lookahead_done, similarity_cell, status_rows
from tui.messages import EngineLost, EngineStats
from tui.screens.facebank import expand_paths
from tui.screens.output import source_problem
from tui.suggest import PathSuggester
from tui.widgets.graphics_preview import detect_graphics, labelled
from tui.widgets.preview import STATE_RGB, Preview, face_boxes, fit, half_block_lines, outline, resize
from tui.widgets.slider import Slider


class SliderApp(App):
    def __init__(self) -> None:
        super().__init__()
        self.changes: list[float] = []

    def compose(self) -> ComposeResult:
        yield Slider("threshold", 0.0, 1.0, 0.01, 0.56, id="s")

    def on_slider_changed(self, event: Slider.Changed) -> None:
        self.changes.append(event.value)


def test_slider_keys_mouse_and_clamping():
    async def scenario() -> None:
        app = SliderApp()
        async with app.run_test(size=(60, 3)) as pilot:
            slider = app.query_one(Slider)
            slider.focus()
            await pilot.press("right", "right", "left")
            assert slider.value == pytest.approx(0.57)
            await pilot.press("shift+right")
            assert slider.value == pytest.approx(0.67)
            await pilot.press("end", "right")
            assert slider.value == 1.0, "clamped at the maximum"
            slider.value = -3
            assert slider.value == 0.0, "validate_value clamps"
            slider.value = 0.123456
            assert slider.value == 0.12, "snapped to the step"
            changes = len(app.changes)
            slider.set_value(0.5)
            await pilot.pause()
            assert len(app.changes) == changes, "a change from code posts no Changed message"
            await pilot.click(Slider, offset=(slider.size.width - 8, 0))  # the bar's right end
            assert slider.value == 1.0
            await pilot.click(Slider, offset=(11, 0))  # the bar's left end
            assert slider.value == 0.0
            assert app.changes[:3] == pytest.approx([0.57, 0.58, 0.57])

    asyncio.run(scenario())


def test_slider_rejects_a_bad_range():
    with pytest.raises(ValueError):
        Slider("x", 1.0, 0.0, 0.1)


def test_preview_fits_the_aspect_and_averages_when_shrinking():
    assert fit(96, 54, 32, 9) == (32, 18)
    assert fit(96, 54, 80, 9) == (32, 18), "limited by height"
    image = np.zeros((54, 96, 3), np.uint8)
    image[:, 48:] = 255
    small = resize(image, 2, 2)
    assert small.shape == (2, 2, 3) and small[0, 0, 0] == 0 and small[0, 1, 0] == 255
    lines = half_block_lines(small)
    assert len(lines) == 1 and len(lines[0]) == 2 and lines[0][0].text == "▀"
    assert resize(image, 200, 100).shape == (100, 200, 3), "nearest when growing"


def test_similarity_is_shown_against_the_threshold():
    assert similarity_cell(0.712, 0.56).plain == "0.71 ≥ 0.56 ✓"
    assert similarity_cell(0.12, 0.56).plain == "0.12 < 0.56"
    assert similarity_cell(None, 0.56).plain == "—"
    face = {"track_id": 4, "size": 80.4, "score": 0.9, "state": "blurred", "lost_frames": 2, "identity": None,
            "similarity": None}
    assert [str(c) for c in face_row(face, 0.5)][:3] == ["4", "80px", "blurred: lost"]


def test_face_rows_say_why_and_show_only_plausible_candidates():
    stranger = {"track_id": 5, "size": 60.0, "score": 0.9, "state": "blurred", "lost_frames": 0,
                "identity": "Lin", "similarity": -0.14}
    cells = [str(c) for c in face_row(stranger, 0.49)]
    assert cells[2] == "blurred: below threshold" and cells[3] == "—", "no 'Lin -0.14 < 0.49' for a stranger"
    near = {**stranger, "similarity": 0.45}
    assert str(face_row(near, 0.49)[3]) == "Lin? 0.45 < 0.49"
    engine_says = {**stranger, "reason": "overlap", "candidate": None}
    assert [str(c) for c in face_row(engine_says, 0.49)][2:4] == ["blurred: overlap", "—"]
    new = {**stranger, "identity": None, "similarity": None}
    assert str(face_row(new, 0.49)[2]) == "blurred: not recognised yet"
    me = {**stranger, "state": "visible", "similarity": 0.71}
    assert [str(c) for c in face_row(me, 0.49)][2:4] == ["visible", "Lin 0.71 ≥ 0.49 ✓"]
    ghost = {**stranger, "size": 517.0, "lost_frames": 22}
    assert in_view([me, ghost]) == [me], "a lost track's growing prediction is no row"


def test_face_cells_fit_their_columns_at_80_columns():
    """Every reason the engine gives fits the state column whole (a walkthrough saw "blurred: not recognised" cut),
    and a long name is cut before the similarity figures are."""
    from engine import faces as engine_faces  # the test reads the engine's list; the UI does not import it
    from tui.format import FACE_COLUMNS
    widths = {key: width for key, _, width in FACE_COLUMNS}
    reasons = [v for k, v in vars(engine_faces).items() if k.isupper() and isinstance(v, str)]
    assert "not recognised yet" in reasons and len(reasons) >= 8
    for reason in reasons:
        cell = str(face_row({"state": "blurred", "reason": reason}, 0.5)[2])
        assert len(cell) <= widths["state"], cell
    long = {"state": "visible", "identity": "Lin-Manuel Miranda Hamilton", "similarity": 0.71, "lost_frames": 0}
    cell = str(face_row(long, 0.56)[3])
    assert len(cell) <= widths["match"] and cell.endswith("… 0.71 ≥ 0.56 ✓"), cell
    assert sum(widths.values()) + 2 * len(FACE_COLUMNS) + 2 <= 80, "cells padded by 1 each side, the border 2"


def test_preview_outlines_faces_in_their_state_colour_with_the_tables_id():
    faces = [{"track_id": 3, "box": [320, 0, 640, 180], "state": "visible", "lost_frames": 0},
             {"track_id": 7, "box": [0, 180, 160, 360], "state": "blurred", "lost_frames": 0}]
    boxes = {b.track_id: b for b in face_boxes(faces, (640, 360), (64, 36))}
    assert (boxes[3].x1, boxes[3].y1, boxes[3].x2, boxes[3].y2) == (32, 0, 63, 18)
    assert boxes[3].rgb == STATE_RGB["visible"] and boxes[7].rgb == STATE_RGB["blurred"]
    image = np.zeros((36, 64, 3), np.uint8)
    outline(image, boxes[3])
    assert tuple(image[0, 40]) == STATE_RGB["visible"] and tuple(image[10, 40]) == (0, 0, 0), "outline only"

    preview = Preview()
    preview._faces, preview._source_size, preview.selected = faces, (640, 360), 7
    lines = preview._draw(np.zeros((36, 64, 3), np.uint8))
    row = "".join(seg.text for seg in lines[0])
    assert row[33] == "3", "the id is written inside its box's top-left corner"
    assert "".join(seg.text for seg in lines[18 // 2]).find("7") == 1  # box 7 starts at pixel row 18


def test_a_failed_start_is_one_line_with_the_way_out():
    reason = ("the engine exited at start (code 2); see /x/engine.log:\n[ WARN:0@1.6] global cap_v4l.cpp:913 open\n"
              "[ERROR:0@1.617] global obsensor_uvc_stream_channel.cpp:163 Camera index out of range\n"
              "error: cannot open camera 0: it is absent or busy (another program may hold it;\n"
              "`v4l2-ctl --list-devices` lists cameras)")
    assert start_failure(reason) == "cannot open camera 0: it is absent or busy · o: pick a video file or URL instead"
    assert start_failure("the engine did not answer within 90 s; see /x/engine.log") == \
        "the engine did not answer within 90 s; see /x/engine.log"


def test_engine_status_rows_in_words():
    t = {"fps": 29.9, "latency_p50_ms": 20.0, "latency_p95_ms": 31.0, "frames": 10, "dropped": 1, "whole_frames": 0,
         "faults": {"detector-deadline": 2}, "source": {"spec": "0", "kind": "camera", "width": 1280, "height": 720,
                                                      "state": "running"},
         "sinks": ["vcam", "file"], "outputs": [{"name": "vcam", "path": None}, {"name": "file", "path": "/r.mp4"}],
         "settings": {"panic": True}, "pid": 77, "facebank": {"people": 1, "photos": 3}, "faces": []}
    rows = dict(status_rows(t))
    assert rows["state"] == "PANIC: every frame blurred · pid 77"
    assert rows["outputs"] == "virtual camera; recording → /r.mp4"
    assert rows["facebank"] == "1 person (3 photos)"
    assert rows["faults"] == "2× the detector missed its deadline (whole frame blurred)"
    assert "look-ahead" not in rows, "no look-ahead, no row"
    rows = dict(status_rows({**t, "lookahead_frames": 12, "backfilled": 4, "revealed": 9}))
    assert rows["look-ahead"] == ("12 frames held: 4 faces found late hidden in earlier frames, "
                                  "9 recognised late shown in earlier frames")
    assert "small faces" not in rows, "no tile pass (a small frame), no row"
    rows = dict(status_rows({**t, "tiles": {"a_frame": 3, "of": 6, "every": 1}}))
    assert rows["small faces"] == "3 of 6 full-resolution tiles searched a frame"
    rows = dict(status_rows({**t, "tiles": {"a_frame": 1, "of": 6, "every": 2}}))
    assert rows["small faces"] == "1 of 6 full-resolution tiles searched a frame, on every 2 frames (behind)"


def test_lookahead_done_says_what_the_held_frames_did_only_while_it_holds():
    assert lookahead_done({"lookahead_frames": 0, "backfilled": 4, "revealed": 9}) == ""
    assert lookahead_done({}) == ""
    held = {"lookahead_frames": 3, "backfilled": 4, "revealed": 9}
    assert lookahead_done(held) == "so far 4 hidden late, 9 shown late"
    assert lookahead_done({"lookahead_frames": 3}) == "so far 0 hidden late, 0 shown late"
    coasting = {"lookahead_frames": 1, "backfilled": 236, "settings": {"lookahead_frames": 0}}
    assert lookahead_done(coasting) == "", "the slider is off: the frame coasting holds is not its doing"
    held = dict(status_rows(coasting))["look-ahead"]
    assert held.startswith("1 frame held while coasting (far behind; the slider is off)")


def test_path_completion(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "lin.png").write_bytes(b"")
    (tmp_path / "photos" / "notes.txt").write_text("")
    suggester = PathSuggester(";", (".png",))

    async def suggest(value: str) -> str | None:
        return await suggester.get_suggestion(value)

    assert asyncio.run(suggest(f"{tmp_path}/ph")) == f"{tmp_path}/photos/"
    assert asyncio.run(suggest(f"{tmp_path}/photos/")) == f"{tmp_path}/photos/lin.png"
    assert asyncio.run(suggest(f"{tmp_path}/photos/n")) is None, "files of other kinds are not offered"
    assert asyncio.run(suggest(f"a.png; {tmp_path}/photos/l")) == f"a.png; {tmp_path}/photos/lin.png"


def test_enrol_paths_and_source_checks(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    files, problems = expand_paths(f"{tmp_path}; {tmp_path / 'missing.png'}; {tmp_path / 'empty'}")
    assert files == [str(tmp_path / "a.jpg")]
    assert problems == [f"no such file: {tmp_path / 'missing.png'}", f"no images in the folder {tmp_path / 'empty'}"]
    assert source_problem("camera", "0") is None
    assert "number" in source_problem("camera", "front")
    assert "No such video file" in source_problem("file", "/no/such.mp4")
    assert source_problem("url", "rtsp://cam/stream") is None
    # A home folder that does not exist is a message, not a crash (Path.expanduser raises on it).
    assert expand_paths("~no_such_user_blurcast/me.png")[1][0].startswith("cannot read ~no_such_user_blurcast")
    assert "No such video file" in source_problem("file", "~no_such_user_blurcast/clip.mp4")


def test_people_views_read_the_engines_facebank_list():
    record = {"path": "/b.png", "face_px": 300.0, "sharpness": 900.0, "score": 0.97, "grade": "good"}
    people = [{"name": "B", "images": [record, {**record, "face_px": 60.0, "grade": "old model"}]},
              {"name": "a", "images": [{"path": "/a.png"}]}, {"name": "c", "photos": 0}]
    views = people_views(people)
    assert [p.name for p in views] == ["a", "B", "c"]
    assert [i.grade for i in views[1].images] == ["good", "old model"]
    assert views[1].grades == "good ×1, old model ×1"
    assert views[1].images[0].figures == "300px · sharp 900 · det 0.97"
    assert views[0].images[0].grade == "?"
    assert views[2].images == ()


def test_per_frame_messages_replace_older_ones():
    assert EngineStats({"frames": 2}).can_replace(EngineStats({"frames": 1}))
    assert not EngineStats({}).can_replace(EngineLost("x"))


def test_restart_button_and_browse_picker(tmp_path, monkeypatch):
    import tui.screens.facebank as facebank_screen
    from tui.app import make_app

    class NoFacebank:
        def __init__(self, link) -> None:
            pass

        def people(self):
            return []

    monkeypatch.setattr(facebank_screen, "FacebankLink", NoFacebank)
    app = make_app(EnginePaths(tmp_path), attach=False)
    starts: list[bool] = []
    monkeypatch.setattr(app, "ensure_engine", lambda: starts.append(True))

    async def scenario() -> None:
        async with app.run_test() as pilot:
            app.post_message(EngineStats({"fps": 1.0, "settings": {}}))
            app.post_message(EngineLost("the engine closed the telemetry stream"))
            await pilot.pause()
            assert app.engine_state == "lost"
            await pilot.click("#restart")
            assert starts == [True], "the Restart button starts the engine"
            await pilot.press("f", "b")
            tree = app.screen.query_one(DirectoryTree)
            assert tree.path == Path.home()
            app.screen.on_directory_tree_file_selected(SimpleNamespace(path=tmp_path / "me.png"))
            app.screen.on_directory_tree_file_selected(SimpleNamespace(path=tmp_path / "me2.jpg"))
            assert app.screen.query_one("#paths", Input).value == f"{tmp_path / 'me.png'}; {tmp_path / 'me2.jpg'}"
            await pilot.press("b")
            assert not app.screen.query(DirectoryTree), "b closes the picker"
            await pilot.press("b")  # again: from the folder of the last path typed (home reached nothing else)
            tree = app.screen.query_one(DirectoryTree)
            assert Path(tree.path) == tmp_path and str(tmp_path) in str(tree.border_title)
            tree.focus()
            await pilot.press("backspace")
            assert Path(tree.path) == tmp_path.parent, "Backspace goes up a folder"
            assert app.screen.query_one("#paths", Input).value.endswith("me2.jpg"), "the paths typed are kept"

    asyncio.run(scenario())


def test_terminal_graphics_preview_draws_outlines_and_ids_into_the_picture():
    """Kitty/Sixel terminals get the picture itself (no such terminal in CI: the drawing is what is checked)."""
    preview = Preview()
    faces = [{"track_id": 3, "box": [320, 0, 640, 180], "state": "visible", "lost_frames": 0}]
    preview._faces, preview._source_size, preview.selected = faces, (640, 360), None
    image = np.asarray(labelled(np.zeros((360, 640, 3), np.uint8), preview))
    assert tuple(image[0, 400]) == STATE_RGB["visible"], "outlined in the visible colour"
    corner = image[2:14, 322:334]
    assert (corner == 0).any() and (corner == STATE_RGB["visible"]).all(axis=-1).any(), "an id label in the corner"
    assert detect_graphics().graphics is None, "not a terminal here: half blocks"


def test_the_live_screen_uses_the_graphics_preview_where_the_terminal_has_it(tmp_path):
    from tests.test_tui_snapshots import TELEMETRY, synthetic_preview
    from tui.app import make_app
    from tui.messages import PreviewFrame
    from tui.widgets.graphics_preview import GraphicsPreview

    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)
    app.graphics = "kitty"  # what detect_graphics says in Kitty; textual-image falls back to its own cells here

    async def scenario() -> None:
        async with app.run_test() as pilot:
            app.post_message(EngineStats(TELEMETRY))
            await pilot.pause()
            preview = app.screen.query_one("#preview", GraphicsPreview)
            app.screen.post_message(PreviewFrame(96, 54, synthetic_preview()))
            await pilot.pause(0.2)
            picture = preview.query_one("#picture")
            assert picture.display and picture.image.size == (96, 54)
            assert app.screen._preview_width() == 640

    asyncio.run(scenario())


def test_a_click_on_a_face_in_the_preview_picks_its_row(tmp_path):
    from tests.test_tui_snapshots import TELEMETRY, synthetic_preview
    from tui.app import make_app
    from tui.messages import PreviewFrame

    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            app.post_message(EngineStats(TELEMETRY))
            await pilot.pause(0.3)
            app.post_message(EngineStats(TELEMETRY))  # the table repaints at most 5 times a second
            app.screen.post_message(PreviewFrame(96, 54, synthetic_preview()))
            await pilot.pause(0.3)
            preview = app.screen.query_one(Preview)
            cells = [(x, y) for y in range(preview.content_size.height) for x in range(preview.content_size.width)
                     if preview.face_at(x, y) == 7]
            assert cells, "face 7 is outlined somewhere in the preview"
            x, y = cells[len(cells) // 2]
            region = preview.content_region
            await pilot.click(offset=(region.x + x, region.y + y))
            await pilot.pause()
            assert app.screen.selected == 7
            table = app.screen.query_one("#faces")
            assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "7"

    asyncio.run(scenario())


def test_lookahead_cost_is_its_frames_at_the_processed_rate():
    from tui.format import lookahead_cost, lookahead_rate

    assert lookahead_cost(0, 30) == ("off", "off, no delay")
    assert lookahead_cost(8, 29.97) == ("8 +267ms", "+267 ms at 30 fps processed")
    assert lookahead_cost(30, 30)[0] == "30 +1.0s" and lookahead_cost(30, 1)[0] == "30 +30.0s"
    assert lookahead_cost(4, None)[0] == "4 fr" and "unknown" in lookahead_cost(4, 0)[1]
    assert max(len(lookahead_cost(n, fps)[0]) for n in range(31) for fps in (1, 5, 25, 29.97, 60)) < 10  # VALUE_WIDTH
    source = {"fps": 30.0}
    assert lookahead_rate({"fps": 14.8, "source": source}) == (14.8, "processed"), "the engine sheds: its rate"
    assert lookahead_rate({"fps": 0.0, "source": source}) == (30.0, "source rate"), "nothing measured yet"
    assert lookahead_rate({"source": {"fps": None}}) == (None, "")


def test_the_lookahead_slider_costs_frames_at_the_rate_the_engine_processes(tmp_path):
    """A 30 fps source the engine processes at 15 fps (it sheds): 8 held frames go out 533 ms late, not 267."""
    from tests.test_tui_snapshots import LIMITS, TELEMETRY
    from tui.app import make_app

    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)
    shedding = {**TELEMETRY, "fps": 15.0, "source": {**TELEMETRY["source"], "fps": 30.0},
                "settings": {**TELEMETRY["settings"], "lookahead_frames": 8}}

    async def scenario() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            app.limits = LIMITS
            app.post_message(EngineStats(shedding))
            await pilot.pause()
            slider = app.screen.query_one("#lookahead-frames", Slider)
            assert slider.shown() == "8 +533ms"
            await pilot.press("a")
            help_line = str(app.screen.query_one("#slider-help").render())
            assert "+533 ms at 15 fps processed" in help_line, help_line
            app.post_message(EngineStats({**shedding, "fps": 15.3}))  # a wobble of the measured rate
            await pilot.pause()
            assert slider.shown() == "8 +533ms", "the figure holds while the rate wobbles"
            app.post_message(EngineStats({**shedding, "fps": 30.0}))  # the engine keeps up again
            await pilot.pause()
            assert slider.shown() == "8 +267ms"

    asyncio.run(scenario())


def test_stream_urls_are_shown_without_their_secrets():
    from tui.format import masked_url

    assert masked_url("srt://relay:9000?streamid=live/me&passphrase=hunter2hunter2") == \
        "srt://relay:9000?streamid=***&passphrase=***"
    assert masked_url("rtmps://live.twitch.tv/app/live_123_abc") == "rtmps://live.twitch.tv/app/***"
    assert masked_url("srt://:9001?mode=listener") == "srt://:9001?mode=listener"


def test_keys_panel_and_palette_list_the_new_controls(tmp_path):
    """`?` on the live screen lists a (look-ahead), on the output screen k (stream options); the palette offers
    both and each takes the focus to its control."""
    from textual.command import CommandPalette
    from textual.widgets import HelpPanel

    from tests.test_tui_snapshots import TELEMETRY, feed
    from tui.app import make_app

    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)

    def keys_text() -> str:
        """What the keys panel lists: the screen's active bindings (at 80x24 a long description wraps)."""
        assert app.screen.query(HelpPanel)
        return " ".join(f"{key} {b.binding.description}" for key, b in app.screen.active_bindings.items())

    async def palette(pilot, words: str) -> None:
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        assert CommandPalette.is_open(app)
        await pilot.press(*words)
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.3)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await feed(pilot, TELEMETRY, preview=False)
            await pilot.press("question_mark")
            await pilot.pause()
            assert "a Look-ahead" in keys_text()
            await pilot.press("escape")  # closes it too (a walkthrough, stop 43)
            await pilot.pause()
            assert not app.screen.query(HelpPanel)
            await pilot.press("question_mark", "o", "question_mark")
            await pilot.pause()
            assert "k Stream options" in keys_text()
            await pilot.press("question_mark")
            await palette(pilot, "Look-ahead")
            assert app.current_mode == "live" and app.focused.id == "lookahead-frames"
            await palette(pilot, "Stream options")
            assert app.current_mode == "output" and app.focused.id == "stream-keyframe"

    asyncio.run(scenario())


def test_the_figures_say_the_obs_sync_offset_while_frames_go_out():
    from tui.format import figures

    t = {"fps": 30.0, "sinks": ["vcam"], "obs_sync_offset_ms": 290}
    assert "output vcam · OBS sync 290 ms" in str(figures(t))
    assert "OBS sync" not in str(figures({**t, "sinks": []}))  # nothing goes out: no offset to set
    assert "OBS sync" not in str(figures({**t, "obs_sync_offset_ms": None}))


def test_the_figures_give_the_delay_to_the_outputs_where_the_engine_measures_it():
    """The viewer's delay (frames held back included) is the figure shown; an engine that does not measure it (an
    older one, or no frame out yet) still gets its processing latency shown, named as such."""
    from tui.format import figures, status_rows

    t = {"fps": 30.0, "latency_p50_ms": 28.4, "latency_p95_ms": 52.0, "output_delay_p50_ms": 49.2,
         "output_delay_p95_ms": 71.3}
    assert "delay p50 49 / p95 71 ms" in str(figures(t))
    assert "latency p50 28 / p95 52 ms" in str(figures({k: v for k, v in t.items() if "output" not in k}))
    words = dict(status_rows({**t, "state": "live"}))
    assert words["delay"].startswith("p50 49 / p95 71 ms") and words["latency"].startswith("p50 28 / p95 52 ms")


@pytest.mark.parametrize("refused", [False, True])
def test_telemetry_after_a_slider_move_keeps_it_unless_the_engine_refused_it(tmp_path, refused):
    """Telemetry can reach the screen between a key press and the screen's handling of that move (found as a CI
    flake: two → presses gave +0.01): the slider remembers its move and ignores the older value. When the engine
    refused the move (`set` failed), the next telemetry puts the knob back at once, not 2 s later."""
    from tests.test_tui_snapshots import LIMITS, TELEMETRY
    from tui.app import make_app
    from tui.messages import CommandFailed

    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)  # detached: no send is recorded

    async def scenario() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            app.limits = LIMITS
            app.post_message(EngineStats(TELEMETRY))
            await pilot.pause()
            slider = app.screen.query_one("#similarity-threshold", Slider)
            start = slider.value
            await pilot.press("s", "right", "right")
            if refused:
                app.post_message(CommandFailed("set", "refused by the engine"))
                await pilot.pause()
            app.post_message(EngineStats(TELEMETRY))  # the engine's value from before the presses
            await pilot.pause()
            assert slider.value == pytest.approx(start if refused else start + 0.02)

    asyncio.run(scenario())


def test_after_a_failed_enrolment_the_notice_offers_a_face_again(tmp_path, monkeypatch):
    """The engine reports its last enrolment until the next starts. A failure (a cut while gathering) shows its
    reason with the offer to try again, then, after ENROL_OUTCOME_S, the plain offer: before, the failure stayed
    on the notice for good and no face was offered again (found as a CI failure)."""
    import tui.screens.live as live_screen
    from tests.test_tui_snapshots import TELEMETRY
    from tui.app import make_app

    monkeypatch.setattr(live_screen, "STEADY_S", 0.0)
    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)
    failed = {**TELEMETRY, "facebank": {"people": 0, "photos": 0, "embedded": 0},
              "faces": [{**f, "state": "blurred", "identity": None} for f in TELEMETRY["faces"]],
              "enrolment": {"name": "Lin", "track_id": 8, "state": "failed", "progress": 1.0, "frames": 30,
                            "message": "the frames show more than one person"}}

    async def scenario() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            notice = app.screen.query_one("#notice")
            for _ in range(2):  # the offer needs a face seen in two telemetry updates
                app.post_message(EngineStats(failed))
                await pilot.pause(live_screen.TABLE_EVERY_S + 0.05)
            text = str(notice.render())
            assert "enrolling Lin failed: the frames show more than one person" in text and "Is #3 you?" in text
            monkeypatch.setattr(live_screen, "ENROL_OUTCOME_S", 0.0)
            app.post_message(EngineStats(failed))
            await pilot.pause(live_screen.TABLE_EVERY_S + 0.05)
            text = str(notice.render())
            assert "failed" not in text and "Is #3 you? e keeps that face visible" in text

    asyncio.run(scenario())


def test_coasted_frames_are_said_only_when_there_are_some():
    from tui.format import figures, status_rows

    t = {"fps": 24.0, "frames": 900, "dropped": 12, "whole_frames": 0, "coasted_frames": 310}
    assert "coasted 310" in str(figures(t))
    assert "310 coasted on the tracks" in dict(status_rows(t))["frames"]
    quiet = {**t, "coasted_frames": 0}
    assert "coasted" not in str(figures(quiet)) and "coasted" not in dict(status_rows(quiet))["frames"]


def test_why_the_engine_did_not_start_stays_and_a_picked_source_ends_the_old_question(tmp_path, monkeypatch):
    """The telemetry reader retries every half second: its socket error must not replace the engine's own reason;
    and a source picked after a failed start is the one wanted, not the command line's (no stale "switch back?")."""
    from tui.app import make_app
    from tui.messages import EngineStartFailed

    app = make_app(EnginePaths(tmp_path), attach=False, requested_source=str(tmp_path / "README.md"))
    monkeypatch.setattr(app, "ensure_engine", lambda: None)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            app.post_message(EngineStartFailed("error: cannot read video README.md: not a video"))
            await pilot.pause()
            app.post_message(EngineLost("telemetry stream lost: [Errno 2] No such file or directory"))
            await pilot.pause()
            assert app.engine_state == "lost" and "not a video" in app.engine_reason
            note = app.screen.query_one("#preview")._note
            assert note == "no picture (start failed)", "it never ran: not \"engine lost\""
            app.switch_source(str(tmp_path / "clip.mp4"), loop=True)
            assert app.requested_source is None
            assert app.engine_link.engine_args == ["--source", str(tmp_path / "clip.mp4"), "--loop"]

    asyncio.run(scenario())


def test_r_after_a_source_picked_since_the_crash_retries_that_source(tmp_path, monkeypatch):
    """The lost engine's saved launch is for `r` right after the loss; once another source is picked (and its start
    failed), `r` retries the picked one, not the crashed engine's."""
    from engine.client import save_launch
    from tui.app import make_app

    paths = EnginePaths(tmp_path)
    save_launch(paths, ["--source", "/crashed/source.mp4", "--loop"])  # as the lost engine (this pid) saved it
    app = make_app(paths, attach=False)
    monkeypatch.setattr(app, "ensure_engine", lambda: None)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            app.post_message(EngineStats({"fps": 1.0, "settings": {}, "pid": os.getpid()}))
            await pilot.pause()
            app.post_message(EngineLost("the engine closed the telemetry stream"))
            await pilot.pause()
            app.switch_source(str(tmp_path / "picked.mp4"))
            app._starting = False  # its start failed
            app.action_restart_engine()
            assert app.engine_link.engine_args == ["--source", str(tmp_path / "picked.mp4")]

    asyncio.run(scenario())


def test_the_facebank_screen_says_when_a_photo_was_taken_though_soft() -> None:
    """The engine's `facebank_add` reply names the photos it took though soft; the screen's message carries the
    warning (it was only a line in the engine's log, which a UI user never sees)."""
    from tui.facebank_link import FacebankLink
    from tui.screens.facebank import FacebankScreen

    class Replies:
        def __init__(self, reply: dict) -> None:
            self.reply = reply

        def request(self, cmd: str, **args) -> dict:
            assert cmd == "facebank_add"
            return self.reply

    soft = FacebankLink(Replies({"name": "Lin", "added": 1, "soft": [["/photos/me [1].png", 17.4]]}))
    message = FacebankScreen._apply(soft, "add", "Lin", ["/photos/me [1].png"], None)
    assert message.startswith("Enrolled Lin from 1 new photo(s).")
    assert "Warning: taken, but soft: me [1].png (sharpness 17)" in message and "add a sharper photo" in message
    sharp = FacebankLink(Replies({"name": "Lin", "added": 1, "soft": []}))
    assert "Warning" not in FacebankScreen._apply(sharp, "add", "Lin", ["/photos/me.png"], None)
    older = FacebankLink(Replies({"name": "Lin", "added": 1}))  # an engine from before the field
    assert FacebankScreen._apply(older, "add", "Lin", ["/photos/me.png"], None).endswith("The engine uses it now.")


class _SlowEngine:
    """A control socket that answers each request `delay` s late with `reply`, or closes without a word (None)."""

    def __init__(self, root: Path, delay: float, reply: dict | None) -> None:
        import socket
        import threading

        self.requests: list[dict] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(EnginePaths(root).socket))
        self.server.listen(4)
        self.delay, self.reply = delay, reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import json
        import time

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                self.requests.append(json.loads(stream.readline()))
                time.sleep(self.delay)
                if self.reply is not None:
                    stream.write((json.dumps(self.reply) + "\n").encode())
                    stream.flush()

    def close(self) -> None:
        self.server.close()


def test_a_facebank_change_is_given_time_past_the_links_timeout(tmp_path):
    """Regression (a review, stop 54): the UI's facebank changes waited the link's fixed 5 s. The engine holds its
    enrolment lock while it enrols (five 8000x4500 photos took over 5 s on 2 busy cores; a remove waits behind an
    enrolment), so the UI said "timed out" and the engine saved the change after. Each change now waits as the CLI
    does (`facebank_timeout`: 120 s, and 30 s a photo)."""
    from tui.facebank_link import FacebankLink
    from tui.link import EngineLink

    engine = _SlowEngine(tmp_path, delay=1.0, reply={"ok": True, "name": "Lin", "added": 2, "soft": []})
    try:
        link = EngineLink(paths=EnginePaths(tmp_path), timeout=0.3)  # the answer comes after the link's own timeout
        added, soft = FacebankLink(link).add("Lin", ["/photos/a.png", "/photos/b.png"])
        assert (added, soft) == (2, None)
        assert engine.requests[0]["cmd"] == "facebank_add" and "wait" not in engine.requests[0]
        engine.reply = {"ok": True, "removed": "Lin"}
        assert FacebankLink(link).remove("Lin") == "Lin"
    finally:
        engine.close()


def test_a_facebank_change_that_got_no_answer_is_not_called_a_failure(tmp_path):
    """The engine took the change and went away (or answered past even that wait): the words say it may still be
    made, and the screen reads the list again later, instead of "failed" over a change the engine then saved."""
    from tui.facebank_link import FacebankLink
    from tui.link import EngineLink, NoAnswer
    from tui.screens.facebank import unanswered_words

    engine = _SlowEngine(tmp_path, delay=0.0, reply=None)
    try:
        with pytest.raises(NoAnswer) as raised:
            FacebankLink(EngineLink(paths=EnginePaths(tmp_path))).add("Lin", ["/photos/a.png"])
    finally:
        engine.close()
    words = unanswered_words("add", raised.value)
    assert "may still enrol them" in words and "read again" in words and "closed the connection" in words
    assert "may still remove them" in unanswered_words("remove", raised.value)
