"""The UI's screens: live view, facebank, source & output."""
