"""Blurcast's terminal UI: steers the background engine through its control API only.

The UI never sees a raw camera frame: it reads telemetry and a small, already-anonymized preview, and it
sends commands. Quitting it (or losing the SSH session) leaves the engine running.
"""
