"""Blurcast: real-time, fail-closed face anonymizing for live streams."""

__version__ = "0.1.0"
