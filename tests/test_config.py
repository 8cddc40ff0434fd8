"""Settings: validated, changed atomically, and a damaged file never loses the user's data silently."""

from __future__ import annotations

import json

import pytest

from engine.config import RECOGNIZER, SCALE_KEY, Settings, load_settings, save_settings


def test_updates_are_validated_and_all_or_nothing():
    base = Settings()
    with pytest.raises(ValueError, match="strength"):
        base.updated({"margin": 0.3, "strength": 2})
    with pytest.raises(ValueError, match="unknown setting"):
        base.updated({"blurriness": 1})
    assert base.updated({"panic": "on", "confidence": "0.4"}) == Settings(panic=True, confidence=0.4)


def test_round_trip_and_damaged_file_is_kept_aside(tmp_path):
    path = tmp_path / "settings.json"
    save_settings(Settings(margin=0.4), path)
    assert load_settings(path).margin == 0.4
    path.write_text('{"margin": 0.4, "strength": ')  # a crash mid-write by some other tool
    assert load_settings(path) == Settings()
    aside = tmp_path / "settings.bad.json"
    assert aside.read_text().startswith('{"margin"'), "the damaged file is kept for the user"
    path.write_text(json.dumps({"strength": 9}))
    assert load_settings(path) == Settings()


def test_a_setting_an_older_version_saved_is_dropped_not_the_whole_file(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"upscale_every": 2, "strength": 0.9}))
    assert load_settings(path).strength == 0.9
    assert path.exists() and not path.with_suffix(".bad.json").exists()


@pytest.mark.parametrize("unsafe", [
    {"confidence": 0.95}, {"similarity_threshold": 0.0}, {"hold_seconds": 0.0},
    # Measured on the corpus (engine/config.py): each of these let bystanders' faces out.
    {"confidence": 0.9}, {"margin": 0.0}, {"margin": 0.1}, {"detect_width": 160},
])
def test_no_setting_may_let_faces_out_unblurred(unsafe):
    """A detector bar above real faces' scores, a match bar strangers pass, no hold, a box edge that fades
    across the face, a detection too coarse for small faces: refused."""
    with pytest.raises(ValueError):
        Settings().updated(unsafe)


def test_a_value_a_tighter_limit_refuses_is_dropped_alone_panic_and_recognition_stay(tmp_path):
    """An upgrade that tightens a limit (margin >= 0.15) must not switch panic off or recognition back on by
    throwing the whole file away; NaN is refused like any out-of-range value."""
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"margin": 0.1, "panic": True, "recognition": False, "confidence": float("nan")}))
    loaded = load_settings(path)
    assert (loaded.panic, loaded.recognition, loaded.margin, loaded.confidence) == (True, False, 0.25, 0.5)
    assert json.loads((tmp_path / "settings.bad.json").read_text())["margin"] == 0.1, "the original is kept"
    assert load_settings(path) == loaded, "the settings file was rewritten clean"
    path.write_text(json.dumps({"strength": 9}))
    load_settings(path)
    assert (tmp_path / "settings.bad-1.json").exists(), "an earlier aside file is never overwritten"
    with pytest.raises(ValueError, match="finite"):
        Settings().updated({"confidence": "nan", "low_confidence": "nan"})


def test_a_threshold_saved_for_another_recognizer_is_not_carried_over(tmp_path):
    """A settings file from before SFace holds MobileFaceNet's threshold (0.52 was its default; on SFace's scale it
    is the strong-match level and would blur the streamer far more often): dropped, everything else kept."""
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"similarity_threshold": 0.52, "strength": 0.9, "panic": True}))
    loaded = load_settings(path)
    assert (loaded.similarity_threshold, loaded.strength, loaded.panic) == (Settings().similarity_threshold, 0.9, True)
    saved = json.loads(path.read_text())
    assert saved[SCALE_KEY] == RECOGNIZER and saved["similarity_threshold"] == Settings().similarity_threshold
    save_settings(loaded.updated({"similarity_threshold": 0.45}), path)
    assert load_settings(path).similarity_threshold == 0.45, "a threshold saved for this recognizer is kept"
