"""The facebank: the people whose faces may stay visible, enrolled from photos (see `facebank.store`)."""

from facebank.enrol import EnrolError, Enroller, Enrolment
from facebank.store import Facebank, FacebankError, ImageRecord, Person, RefreshReport, default_path, home_dir

__all__ = [
    "EnrolError",
    "Enroller",
    "Enrolment",
    "Facebank",
    "FacebankError",
    "ImageRecord",
    "Person",
    "RefreshReport",
    "default_path",
    "home_dir",
]
