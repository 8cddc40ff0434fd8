"""Small reusable widgets: Slider, Preview (half-block image), EngineBar (engine state line)."""

from tui.widgets.engine_bar import EngineBar
from tui.widgets.preview import Preview
from tui.widgets.slider import Slider

__all__ = ["EngineBar", "Preview", "Slider"]
