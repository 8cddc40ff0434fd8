"""A one-line slider for a number, driven by keys (←/→, shift or PgUp/PgDn for big steps, Home/End, d for the
default, ↑/↓ to the previous/next slider) or the mouse (click or drag on the bar), in the manner of an OBS
property: a default mark (┊) on the track and a line of help saying what it trades. Textual has no slider."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

LABEL_WIDTH = 11
VALUE_WIDTH = 10  # room for a value and its cost, with a space before it: "29 +967ms" (the look-ahead)
BIG_STEP = 10


class Slider(Widget, can_focus=True):
    """`value` is clamped to [minimum, maximum] and snapped to `step`; a user change posts `Slider.Changed`,
    a change from code (`set_value`) does not."""

    DEFAULT_CSS = """
    Slider {
        height: 1;
        width: 1fr;
        min-width: 30;
    }
    Slider > .slider--label { text-style: bold; }
    Slider > .slider--bar { color: $primary; }
    Slider > .slider--track { color: $panel-lighten-2; }
    Slider > .slider--knob { color: $text; text-style: bold; }
    Slider > .slider--default { color: $text-muted; }
    Slider:focus { background: $boost; }
    Slider:focus > .slider--knob { color: $accent; }
    Slider:disabled { opacity: 60%; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"slider--label", "slider--bar", "slider--track", "slider--knob",
                                             "slider--default"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right", "step(1)", "More", show=False),
        Binding("left", "step(-1)", "Less", show=False),
        Binding("shift+right,pageup", f"step({BIG_STEP})", "Much more", show=False),
        Binding("shift+left,pagedown", f"step(-{BIG_STEP})", "Much less", show=False),
        Binding("home", "extreme(-1)", "Lowest", show=False),
        Binding("end", "extreme(1)", "Highest", show=False),
        Binding("d", "reset", "Default", show=False),  # the help line under the sliders says so
        Binding("down", "move(1)", "Next", show=False),
        Binding("up", "move(-1)", "Previous", show=False),
    ]

    value: reactive[float] = reactive(0.0, init=False)

    class Changed(Message):
        """The user moved the slider."""

        def __init__(self, slider: Slider, value: float) -> None:
            super().__init__()
            self.slider = slider
            self.value = value

        @property
        def control(self) -> Slider:
            return self.slider

    class Focused(Message):
        """This slider took the focus (the screen shows its help)."""

        def __init__(self, slider: Slider) -> None:
            super().__init__()
            self.slider = slider

    def __init__(self, label: str, minimum: float, maximum: float, step: float, value: float | None = None, *,
                 fmt: str = "{:.2f}", default: float | None = None, help: str = "", name: str | None = None,
                 id: str | None = None, classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.label = label
        self.fmt = fmt
        self.help = help
        self.default = default
        self.describe: Callable[[float], str] | None = None  # the value as shown, when more than `fmt` says
        self.known = value is not None  # False until a real value arrives: no minimum shown as if set
        # When the user last moved it (monotonic s), set at once: telemetry can reach the screen before this
        # move's Changed message does, and must not pull the knob back to the engine's older value.
        self.moved_at = float("-inf")
        self.set_range(minimum, maximum, step)
        self.set_reactive(Slider.value, self.validate_value(minimum if value is None else value))

    def set_range(self, minimum: float, maximum: float, step: float) -> None:
        if not minimum < maximum or step <= 0:
            raise ValueError("a slider needs minimum < maximum and step > 0")
        self.minimum, self.maximum, self.step = minimum, maximum, step
        self._decimals = max(0, -int(f"{step:e}".split("e")[1]))
        self.refresh()

    # --- value ------------------------------------------------------------------------------------------------
    def validate_value(self, value: float) -> float:
        clamped = min(self.maximum, max(self.minimum, float(value)))
        snapped = self.minimum + round((clamped - self.minimum) / self.step) * self.step
        return round(min(self.maximum, snapped), self._decimals + 2)

    def watch_value(self, value: float) -> None:
        self.refresh()

    def set_value(self, value: float, *, user: bool = False) -> None:
        """Set from code (`user=False`: no Changed message) or on the user's behalf."""
        if user:
            old = self.value
            self.value = value
            if self.value != old:
                self.moved_at = time.monotonic()
                self.post_message(self.Changed(self, self.value))
        else:
            self.value = value
        self.known = True
        self.refresh()

    def forget_move(self) -> None:
        """The engine refused the move: the next value it reports is taken at once."""
        self.moved_at = float("-inf")

    @property
    def fraction(self) -> float:
        return (self.value - self.minimum) / (self.maximum - self.minimum)

    # --- input ------------------------------------------------------------------------------------------------
    def action_step(self, steps: int) -> None:
        self.set_value(self.value + steps * self.step, user=True)

    def action_extreme(self, direction: int) -> None:
        self.set_value(self.maximum if direction > 0 else self.minimum, user=True)

    def action_reset(self) -> None:
        if self.default is not None:
            self.set_value(self.default, user=True)

    def action_move(self, direction: int) -> None:
        """↑/↓ walk the sliders in order; past the last one the focus goes on as Tab would.

        The focus moves at once, not with `focus()` (deferred to after the queued messages): keys that came in
        the same burst (typing fast over SSH) are matched to bindings against the focus when they are handled,
        so ↓→ must change the next slider, not this one."""
        siblings = [w for w in self.parent.query_children(Slider) if w.focusable] if self.parent else []
        index = siblings.index(self) + direction if self in siblings else -1
        if 0 <= index < len(siblings):
            self.screen.set_focus(siblings[index])
        elif direction > 0:
            self.screen.focus_next()
        else:
            self.screen.focus_previous()

    def on_focus(self) -> None:
        self.post_message(self.Focused(self))

    def _bar_span(self) -> tuple[int, int]:
        """(first column, width) of the bar inside the content area."""
        return LABEL_WIDTH, max(4, self.content_size.width - LABEL_WIDTH - VALUE_WIDTH)

    def _set_from_x(self, x: int) -> None:
        start, width = self._bar_span()
        fraction = min(1.0, max(0.0, (x - start) / max(1, width - 1)))
        self.set_value(self.minimum + fraction * (self.maximum - self.minimum), user=True)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        self.focus()
        self.capture_mouse()
        self._set_from_x(offset.x)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self.app.mouse_captured is self:
            self._set_from_x(event.get_content_offset_capture(self).x)

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self.app.mouse_captured is self:
            self.release_mouse()

    # --- drawing ----------------------------------------------------------------------------------------------
    def _column(self, value: float, width: int) -> int:
        return round((value - self.minimum) / (self.maximum - self.minimum) * (width - 1))

    def render(self) -> Text:
        start, width = self._bar_span()
        text = Text(no_wrap=True, overflow="crop")
        text.append(f"{self.label[:start - 1]:<{start}}", style=self.get_component_rich_style("slider--label"))
        if not self.known:
            text.append("…".center(width + VALUE_WIDTH), style=self.get_component_rich_style("slider--track"))
            return text
        knob = self._column(self.value, width)
        mark = self._column(self.default, width) if self.default is not None else -1
        for column in range(width):
            if column == knob:
                text.append("●", style=self.get_component_rich_style("slider--knob"))
            elif column == mark:
                text.append("┊", style=self.get_component_rich_style("slider--default"))
            elif column < knob:
                text.append("━", style=self.get_component_rich_style("slider--bar"))
            else:
                text.append("─", style=self.get_component_rich_style("slider--track"))
        text.append(f"{self.shown():>{VALUE_WIDTH}}")
        return text

    def shown(self, value: float | None = None) -> str:
        """The value as the slider writes it (`describe` when set, e.g. with what it costs)."""
        value = self.value if value is None else value
        return self.describe(value) if self.describe else self.fmt.format(value)
