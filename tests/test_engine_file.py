"""The dev clip through the whole engine in file mode, scored against its ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import score_independently

# Measured 0 / 389 with the defaults (docs/measurements.md); the bound leaves room for encoder differences.
LEAK_BOUND = 0.01
RUN_BOUND = 2


def _probe(path) -> tuple[int, int, int, float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS)


def _audio_streams(path) -> str:
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_type", "-of", "csv=p=0"]
    return subprocess.run([*cmd, str(path)], capture_output=True, text=True).stdout.strip()


def test_file_mode_keeps_every_frame_and_leaks_no_bystander(dev_clip, dev_gt, tmp_path):
    out = tmp_path / "anonymized.mp4"
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "blurcast", "eval", str(dev_clip), "--gt", str(dev_gt),
                           "-o", str(out), "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _probe(out)[:3] == _probe(dev_clip)[:3]
    assert abs(_probe(out)[3] - _probe(dev_clip)[3]) < 0.01
    assert _audio_streams(out) == _audio_streams(dev_clip), "audio is copied when the input has it"
    result = json.loads(report.read_text())
    assert result["frames_output"] == result["frames_input"] == 275
    assert result["bystander_face_frames"] > 300
    assert result["leak_rate"] <= LEAK_BOUND
    assert result["worst_leak_run"] <= RUN_BOUND
    # The independent scorer (no code shared with the engine) reads the written file the same way.
    independent = score_independently(dev_clip, out, dev_gt, tmp_path)
    assert independent["leak_rate"] <= LEAK_BOUND
    assert independent["worst_leak_run"] <= RUN_BOUND
    assert independent["bystander_visible"] == result["bystander_visible"]


def test_without_a_facebank_or_allow_no_recognizer_is_loaded(dev_clip, tmp_path):
    """`--no-facebank` without `--allow`: nobody can be shown or enrolled, so the recognizer (0.2-0.3 s to load)
    is not; with a facebank, or with `--allow PHOTO`, it is."""
    from blurcast.assemble import build_engine
    from engine.client import EnginePaths
    from engine.config import Settings
    from engine.service import ServeOptions
    from engine.stages.identify import NoIdentifier
    from tests.conftest import PERFORMER_PHOTO, need_data

    need_data(PERFORMER_PHOTO)
    paths = EnginePaths(tmp_path / "home")
    kinds = []
    for facebank, allow in ((False, []), (True, []), (False, [str(PERFORMER_PHOTO)])):
        engine = build_engine(ServeOptions(source=str(dev_clip)), Settings(backend="onnxruntime"), paths=paths,
                              use_facebank=facebank, allow=allow).engine
        try:
            kinds.append(type(engine.pipeline.identifier).__name__)
        finally:
            engine.close()
    assert kinds[0] == NoIdentifier.__name__
    assert kinds[1] == kinds[2] == "FacebankIdentifier"


def test_an_anamorphic_video_is_searched_and_written_as_a_player_shows_it(dev_clip, dev_gt, tmp_path):
    """A video whose pixels are not square (stored 3x narrower, shown at its width again: SAR 3:1) was searched as
    stored, where its faces are a third as wide: every one of its 69 bystander face-frames in these 90 frames was left
    visible, exit 0, and the output was written squeezed. It is now read and written as shown, with square pixels."""
    ff = ["ffmpeg", "-v", "error", "-y", "-i"]
    squeezed, reference = tmp_path / "squeezed.mp4", tmp_path / "reference.mkv"
    # -fps_mode passthrough: frame i stays frame i of the gt (the clip's picture starts after its sound)
    first = ["-fps_mode", "passthrough", "-frames:v", "90", "-an"]
    subprocess.run([*ff, str(dev_clip), *first, "-vf", "scale=214:360,setsar=3", "-c:v", "libx264", str(squeezed)],
                   check=True)
    subprocess.run([*ff, str(dev_clip), *first, "-c:v", "ffv1", str(reference)], check=True)
    out, shown = tmp_path / "out.mp4", tmp_path / "shown.mkv"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(squeezed), "-o", str(out), "--no-facebank"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    frames, width, height, _ = _probe(out)
    assert (frames, width, height) == (90, 642, 360)  # 214 x 3, square pixels
    subprocess.run([*ff, str(out), "-fps_mode", "passthrough", "-vf", "scale=640:360", "-c:v", "ffv1", str(shown)],
                   check=True)
    result = score_independently(reference, shown, dev_gt, tmp_path)
    assert result["bystander_face_frames"] >= 60
    assert result["leak_rate"] <= LEAK_BOUND and result["worst_leak_run"] <= RUN_BOUND


def test_pixel_aspect_gives_the_size_a_player_shows():
    from engine.stages.source import square_pixels_size

    assert square_pixels_size((1080, 1440), 4 / 3) == (1080, 1920)  # HDV
    assert square_pixels_size((480, 720), 32 / 27) == (480, 854)  # DV NTSC widescreen
    assert square_pixels_size((360, 1920), 1 / 3) == (1080, 1920)  # stored 3x wide: taller, nothing dropped
    assert square_pixels_size((200, 8000), 2 / 45) == (4500, 8000)
    assert square_pixels_size((1000, 8000), 2 / 45) == (1000, 356)  # 22,500 tall would be too many: narrower
    assert square_pixels_size((360, 640), 1.0) is None and square_pixels_size((360, 640), 1.005) is None


def test_eval_places_the_ground_truth_on_the_picture_as_shown_or_refuses_it(dev_clip, dev_gt, tmp_path):
    """`blurcast eval` placed 640x360 boxes on a video of another size unchecked: an anamorphic copy (480x360 shown at
    640x360) scored a 15 % leak where there was none. Boxes now go on the picture as shown, scaled to its size; a
    picture of another shape is refused before the run."""
    ff = ["ffmpeg", "-v", "error", "-y", "-i", str(dev_clip), "-fps_mode", "passthrough", "-frames:v", "60", "-an"]
    anamorphic, stretched = tmp_path / "anamorphic.mp4", tmp_path / "stretched.mp4"
    subprocess.run([*ff, "-vf", "scale=480:360,setsar=4/3", str(anamorphic)], check=True)
    subprocess.run([*ff, "-vf", "scale=480:360,setsar=1", str(stretched)], check=True)
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "blurcast", "eval", str(anamorphic), "--gt", str(dev_gt),
                           "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert result["frames_input"] == result["frames_output"] == 60
    assert result["bystander_face_frames"] >= 40 and result["leak_rate"] <= LEAK_BOUND
    assert "is for 275 frames" in done.stderr  # the ground truth's frame count is not the video's: said
    done = subprocess.run([sys.executable, "-m", "blurcast", "eval", str(stretched), "--gt", str(dev_gt)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "is for 640x360 frames" in done.stderr and "not the same picture" in done.stderr, done.stderr
    assert "anonymizing" not in done.stderr and "fps" not in done.stdout  # refused before the run


def test_an_interlaced_video_is_deinterlaced_not_read_black(dev_clip, dev_gt, tmp_path):
    """A camcorder's or capture card's interlaced video: OpenCV 5's reader fails to convert its frames and returns
    each one all black, so the whole output was black, exit 0. It is now decoded and deinterlaced by FFmpeg, and its
    faces are looked for."""
    flagged, reference = tmp_path / "interlaced.mp4", tmp_path / "reference.mkv"
    ff = ["ffmpeg", "-v", "error", "-y", "-i", str(dev_clip), "-fps_mode", "passthrough", "-frames:v", "60", "-an"]
    subprocess.run([*ff, "-vf", "setfield=tff", "-flags", "+ildct+ilme", "-c:v", "libx264", "-x264opts", "tff=1",
                    str(flagged)], check=True)
    subprocess.run([*ff, "-c:v", "ffv1", str(reference)], check=True)
    ok, first = cv2.VideoCapture(str(flagged)).read()
    _, clear = cv2.VideoCapture(str(reference)).read()
    # OpenCV "reads" each frame and returns a buffer it never filled: black in a fresh process, garbage in a used one
    assert ok and np.abs(first.astype(int) - clear).mean() > 10, "OpenCV reads this file (not the case tested)"
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(flagged), "-o", str(out), "--no-facebank"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _probe(out)[:3] == (60, 640, 360)
    ok, frame = cv2.VideoCapture(str(out)).read()
    assert ok and abs(frame.mean() - clear.mean()) < 3, "the output is not the picture"  # a dark first frame: mean 14
    result = score_independently(reference, out, dev_gt, tmp_path)
    assert result["bystander_face_frames"] >= 40
    assert result["leak_rate"] <= LEAK_BOUND and result["worst_leak_run"] <= RUN_BOUND


def test_a_video_without_colour_is_searched_by_a_second_detector(dev_clip, dev_gt, tmp_path):
    """An infrared night camera's or a black-and-white filter's video: YuNet leans on colour, and the dev clip in grey
    left its dim bystanders visible (23 of 538 face-frames, run 22; 0 in colour). File mode searches a frame with no
    colour with CenterFace as well."""
    from engine.stages.detectors.yunet import monochrome

    grey = tmp_path / "grey.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dev_clip), "-fps_mode", "passthrough", "-an", "-vf",
                    "format=gray,format=yuv420p", "-c:v", "libx264", "-crf", "14", str(grey)], check=True)
    _, coloured = cv2.VideoCapture(str(dev_clip)).read()
    _, colourless = cv2.VideoCapture(str(grey)).read()
    assert not monochrome(coloured) and monochrome(colourless)
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(grey), "-o", str(out), "--no-facebank"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = score_independently(grey, out, dev_gt, tmp_path)
    assert result["bystander_face_frames"] >= 300
    assert result["leak_rate"] <= LEAK_BOUND and result["worst_leak_run"] <= RUN_BOUND, result


def test_live_mode_says_once_that_a_picture_without_colour_is_searched_less_well(dev_clip, caplog):
    """Live mode has no time for the second detector (CenterFace costs 5-10x YuNet a frame): the user is told."""
    import logging

    from engine.config import Settings
    from engine.stages.detect import create_detector

    _, frame = cv2.VideoCapture(str(dev_clip)).read()
    detector = create_detector(Settings())  # as live mode has it: colourless_help off
    with caplog.at_level(logging.WARNING, logger="engine.stages.detectors.yunet"):
        detector.detect(frame, 0.5)
        grey = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        for _ in range(61):
            detector.detect(grey, 0.5)
    assert sum("has no colour" in r.getMessage() for r in caplog.records) == 1


def test_boxes_annotated_on_an_anamorphic_videos_stored_pixels_are_placed_on_it_as_shown(data_dir):
    """head_motion_d9 is 512x480 at SAR 15:16 (shown square), annotated as OpenCV decoded it: its boxes are
    stretched with the picture, not refused as another picture's."""
    from evaluation.video import box_scale, grey_frames

    video = data_dir / "video_unannotated" / "head_motion_d9.mp4"
    gt = Path(__file__).resolve().parents[1] / "bench" / "corpus" / "head_motion_d9.gt.json"
    first = next(grey_frames(video))
    assert first.shape == (512, 512)
    assert box_scale(gt, first, video) == (1.0, 512 / 480)


def test_an_interlaced_video_with_a_rotation_tag_comes_out_turned_not_sheared(dev_clip, tmp_path):
    """FFmpeg turns a picture by its rotation tag: the interlaced reader had framed the turned 360x640 picture as
    640x360, each frame a sheared copy of the picture, exit 0 (a review)."""
    from engine.stages.source import VideoSource

    ff = ["ffmpeg", "-v", "error", "-y", "-i", str(dev_clip), "-fps_mode", "passthrough", "-frames:v", "30", "-an"]
    stored, plain = tmp_path / "stored.mp4", tmp_path / "plain.mp4"
    subprocess.run([*ff, "-vf", "setfield=tff", "-flags", "+ildct+ilme", "-c:v", "libx264", "-x264opts", "tff=1",
                    str(stored)], check=True)
    subprocess.run([*ff, "-c:v", "libx264", str(plain)], check=True)
    tagged, tagged_plain = tmp_path / "tagged.mp4", tmp_path / "tagged_plain.mp4"
    for source, target in ((stored, tagged), (plain, tagged_plain)):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c", "copy", "-metadata:s:v:0",
                        "rotate=90", str(target)], check=True)
    read = VideoSource(str(tagged))
    first = read.read()
    read.close()
    _, turned_by_opencv = cv2.VideoCapture(str(tagged_plain)).read()  # the same picture, progressive
    assert first.shape == turned_by_opencv.shape == (640, 360, 3)
    assert np.abs(first.astype(int) - turned_by_opencv).mean() < 3, "not the picture OpenCV shows turned"
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(tagged), "-o", str(out), "--no-facebank"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _probe(out)[:3] == (30, 360, 640)
