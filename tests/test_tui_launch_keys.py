"""Keys at launch and while the engine is away, without an engine: what is replayed, queued or refused. The
terminal side (a pty playing the terminal) is in test_tui_terminal.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from textual.widgets import Input

from engine.client import EnginePaths
from tests.helpers import until
from tests.test_tui_snapshots import TELEMETRY
from tui.app import make_app
from tui.messages import EngineLost, EngineStats
from tui.screens.confirm import ConfirmScreen
from tui.terminal_probe import TerminalAnswer


def with_switch(name: str, on: bool) -> dict[str, Any]:
    return {**TELEMETRY, "settings": {**TELEMETRY["settings"], name: on}}


@pytest.mark.parametrize(("name", "key"), [("panic", "p"), ("paused", "space")])
def test_an_off_confirmed_while_the_engine_is_lost_is_not_sent_to_the_next_engine(tmp_path, name, key):
    """Panic on, the engine lost, p and y: the off was queued and sent to whatever engine answered next (faces
    back on air with no fresh confirm). It is refused with a notice; an on asked while lost is still sent."""
    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)
    sent: list[tuple[str, dict[str, Any]]] = []
    app.engine_link.request = lambda cmd, **args: sent.append((cmd, args))  # the engine's side: what reached it

    async def scenario() -> None:
        async with app.run_test() as pilot:
            app.post_message(EngineStats(with_switch(name, True)))
            app.post_message(EngineLost("connection refused"))
            await until(pilot, lambda: app.engine_state == "lost", what="the engine lost")
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirm")
            await pilot.press("y")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="the answer")
            app.post_message(EngineStats(with_switch(name, True)))  # an engine answers again
            await until(pilot, lambda: app.engine_state == "live", what="the engine back")
            await pilot.pause(0.3)
            assert sent == [], "the off was kept and sent to the engine that answered next"
            assert app.switch_state(name), "still on, as the engine says"
            assert any("not answering" in n.message for n in app._notifications), "a notice says nothing was sent"

            app.post_message(EngineStats(with_switch(name, False)))
            app.post_message(EngineLost("connection refused"))
            await until(pilot, lambda: app.engine_state == "lost", what="the engine lost again")
            await pilot.press(key)  # on: one key, kept for the engine that answers next
            app.post_message(EngineStats(with_switch(name, False)))
            await until(pilot, lambda: sent, what="the on sent once the engine answered")
            assert sent == [(name.removesuffix("d"), {"on": True})]

    asyncio.run(scenario())


def test_a_textual_image_whose_internals_differ_falls_back_to_half_blocks(monkeypatch, caplog):
    """Another textual-image version (no `CellSize`) raised AttributeError out of the launch in Kitty/Sixel
    terminals; only ImportError was caught."""
    import textual_image._terminal

    from tui.widgets import graphics_preview

    monkeypatch.delattr(textual_image._terminal, "CellSize")
    monkeypatch.setattr(graphics_preview, "ask_terminal",
                        lambda: TerminalAnswer(graphics="kitty", cell=(9, 18), typed="f", complete=True))
    with caplog.at_level(logging.WARNING, logger=graphics_preview.log.name):
        answer = graphics_preview.detect_graphics()
    assert (answer.graphics, answer.typed) == (None, "f")
    assert "half blocks" in caplog.text and "CellSize" in caplog.text


def test_keys_typed_while_the_terminal_was_asked_act_at_launch(tmp_path):
    """The typed-ahead keys replay before anything else: f shows the facebank screen, a then text then Enter
    fills the name and moves on (Enter, not ctrl+j), a last lone Escape leaves the field (it was dropped: the
    parser was never told the input ended)."""
    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)
    app.typed_ahead = "f"

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.current_mode == "facebank", what="f: the facebank screen")
            for typed in ("a", "Me\r", "\x1b"):  # as separate launches would replay them, one screen state each
                before = app.focused
                app.typed_ahead = typed
                app._replay_typed_ahead()
                await until(pilot, lambda b=before, t=typed: app.focused is not b or t == "Me\r", what=repr(typed))
                await pilot.pause(0.1)
                if typed == "a":
                    assert app.focused.id == "name"
                elif typed == "Me\r":
                    assert app.screen.query_one("#name", Input).value == "Me" and app.focused.id == "paths"
                else:
                    assert not isinstance(app.focused, Input), "Escape left the field"

    asyncio.run(scenario())


def test_enter_typed_ahead_acts_on_the_face_under_the_cursor(tmp_path):
    from tui.screens.enrol import EnrolScreen

    app = make_app(EnginePaths(tmp_path), start_engine=False, attach=False)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            app.post_message(EngineStats(TELEMETRY))
            table = app.screen.query_one("#faces")
            await until(pilot, lambda: table.row_count > 0, what="faces in the table")
            app.typed_ahead = "\r"
            app._replay_typed_ahead()
            await until(pilot, lambda: isinstance(app.screen, EnrolScreen), what="Enter: this is me")

    asyncio.run(scenario())


def test_a_late_terminal_answer_is_not_typed():
    """An answer later than WAIT_S reaches the app's input: `?1;2c` opened the help panel. Dropped whole or
    split over reads; the keys around it stay."""
    from tui.terminal_probe import KeyParser

    def keys(*reads: str) -> list[str]:
        parser = KeyParser()
        events = [e for data in (*reads, "") for e in parser.feed(data)]
        return [e.key for e in events if hasattr(e, "key")]

    assert keys("a\x1b[?62;4;22cb") == ["a", "b"]
    assert keys("a\x1b[?1;", "2cb") == ["a", "b"]
    assert keys("\x1b_Gi=31;OK\x1b\\\x1b[6;20;10t", "q") == ["q"]
    assert keys("\x1b[A?") == ["up", "question_mark"], "keys and sequences that are no answer stay"

