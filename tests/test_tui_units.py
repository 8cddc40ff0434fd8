"""The UI's pieces without an engine: slider, half-block preview, path completion, formatting, messages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from textual.app import App, ComposeResult
from textual.widgets import DirectoryTree, Input

from engine.client import EnginePaths
from tui.facebank_link import people_views
from tui.format import face_row, similarity_cell
from tui.messages import EngineLost, EngineStats
from tui.screens.facebank import expand_paths
from tui.screens.output import source_problem
from tui.suggest import PathSuggester
from tui.widgets.preview import fit, half_block_lines, resize
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
    assert [str(c) for c in face_row(face, 0.5)][:3] == ["4", "80px", "blurred (2 lost)"]


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

    asyncio.run(scenario())
