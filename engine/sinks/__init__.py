"""Outputs beside engine/sink.py's virtual camera, file and window: network streams (engine/sinks/stream.py)."""

from engine.sinks.stream import StreamSink, redact, stream_format

__all__ = ["StreamSink", "redact", "stream_format"]
