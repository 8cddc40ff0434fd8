"""A one-line slider for a number, driven by keys (←/→, shift or PgUp/PgDn for big steps, Home/End) or the
mouse (click or drag on the bar). Textual has no slider of its own."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

LABEL_WIDTH = 11
VALUE_WIDTH = 7
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
    Slider:focus { background: $boost; }
    Slider:focus > .slider--knob { color: $accent; }
    Slider:disabled { opacity: 60%; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"slider--label", "slider--bar", "slider--track", "slider--knob"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right", "step(1)", "More", show=False),
        Binding("left", "step(-1)", "Less", show=False),
        Binding("shift+right,pageup", f"step({BIG_STEP})", show=False),
        Binding("shift+left,pagedown", f"step(-{BIG_STEP})", show=False),
        Binding("home", "extreme(-1)", show=False),
        Binding("end", "extreme(1)", show=False),
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

    def __init__(self, label: str, minimum: float, maximum: float, step: float, value: float | None = None, *,
                 fmt: str = "{:.2f}", name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        if not minimum < maximum or step <= 0:
            raise ValueError("a slider needs minimum < maximum and step > 0")
        self.label = label
        self.minimum, self.maximum, self.step = minimum, maximum, step
        self.fmt = fmt
        self._decimals = max(0, -int(f"{step:e}".split("e")[1]))
        self.set_reactive(Slider.value, self.validate_value(minimum if value is None else value))

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
                self.post_message(self.Changed(self, self.value))
        else:
            self.value = value

    @property
    def fraction(self) -> float:
        return (self.value - self.minimum) / (self.maximum - self.minimum)

    # --- input ------------------------------------------------------------------------------------------------
    def action_step(self, steps: int) -> None:
        self.set_value(self.value + steps * self.step, user=True)

    def action_extreme(self, direction: int) -> None:
        self.set_value(self.maximum if direction > 0 else self.minimum, user=True)

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
    def render(self) -> Text:
        start, width = self._bar_span()
        knob = round(self.fraction * (width - 1))
        text = Text(no_wrap=True, overflow="crop")
        text.append(f"{self.label[:start - 1]:<{start}}", style=self.get_component_rich_style("slider--label"))
        text.append("━" * knob, style=self.get_component_rich_style("slider--bar"))
        text.append("●", style=self.get_component_rich_style("slider--knob"))
        text.append("─" * (width - knob - 1), style=self.get_component_rich_style("slider--track"))
        text.append(f"{self.fmt.format(self.value):>{VALUE_WIDTH}}")
        return text
