"""Outputs beside the virtual camera, file and window of engine/stages/sink.py: network streams
(engine/stages/sinks/stream.py)."""

from engine.stages.sinks.stream import StreamSink, redact, stream_format

__all__ = ["StreamSink", "redact", "stream_format"]
