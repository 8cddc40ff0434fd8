"""YuNet 2023mar (MIT, OpenCV Zoo): 3.2 ms at 640x360 on 2 CPU cores, WIDER FACE val AP .884/.866/.750."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache

import cv2
import numpy as np

from engine.config import Settings
from engine.cpu_load import usable_cores
from engine.faces import Detections, box_iou, overlaps
from engine.models.backends import NetworkRunner, OnnxRuntimeRunner, make_runner
from engine.models.cuda_plans import CROP_SIDES, crop_canvas
from engine.models.weights import model_path
from engine.noise import NOISY_SIGMA, noise_sigma, smoothed
from engine.stages.detect import area_scale, detection_scale, letterbox, merge, network_batch, nms
from engine.stages.detectors.parallel import FrameParallelDetector
from engine.stages.detectors.second_look import cell_areas, mirror, second_look

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
NMS_IOU = 0.3
REFINE_PX = 160  # face width at which `refine` looks again: landmarks as sharp as a 2x pass gives them
# Tiles: where the main pass shrinks the frame (1080p detected at 1280x720), faces under ~25 px shrink below
# what YuNet finds. Each frame also looks at one tile of the frame at its own resolution, in turn; a face a
# tile finds starts a track, which the tracker holds (and the anonymizer blurs) until the tile comes back.
TILE_BELOW_SCALE = 0.8  # tiles run only when the main pass scales the frame below this
TILE_BUDGET = 0.5  # a tile's pixels (before overlap), relative to the main pass's: 1080p measured +26 % a frame
TILE_MAX_FACE = 80  # px in a 1080p frame: a tile keeps only small faces (the main pass sees large ones whole)...
# ...that is, faces up to this wide at the main pass's scale (53 px: 80 at 1080p's 2/3). At 4K the main pass shrinks
# the frame by 3, and a fixed 80 px left the 80-160 px faces to the main pass at 27-53 px, where it scores them weakly:
# WIDER Parade at 4K leaked 74 face-frames of 5,549 against 51 at 1080p (a robustness sweep; 57 with this bound).
TILE_MAX_FACE_MAIN = TILE_MAX_FACE * 1280 / 1920
TILE_CYCLE = 6  # frames until every tile has come back (0.2 s at 30 fps): below the shortest hold, and within
#                 the tracker's wait for a weak face's second sighting (engine/stages/track.py)
TILE_OVERLAP_MARGIN = 16  # px beyond the largest face a tile keeps: every such face lies whole inside some tile
# Second look (file mode, detectors/second_look.py): small weak detections looked at again, enlarged and mirrored.
MIRROR_MAIN = 1  # file mode: the main pass also on the mirrored frame (YuNet finds profiles facing one way better)
MIRROR_TILES = 0  # file mode: tiles also mirrored (clear faces only). Not kept: WIDER 301 -> 276 leaked, 1.45x CPU
# File mode, a noisy frame (engine/noise.py): the main pass also on its input smoothed. Only its boxes from
# REPEAT_START_SCORE up count (engine/stages/track.py): all of them took the dev clip's performer under noise from
# 99.3 % shown to 91.9 %, these keep him at 100 % and hide 53 of the 56 face-frames that went out.
DENOISED_KEEP = 0.3
SECOND_LOOK_FROM = 0.1  # weakest detection worth it (below, mostly texture)
SECOND_LOOK_BELOW = 0.5  # the default confidence: stronger ones start a face anyway
# A face far larger than the main pass's input holds (someone leaning into the lens, the face as tall as the frame)
# is seen there as its parts, scored 0.3-0.6 each, with boxes that cover half of it; the frame at a third of that
# scale sees it whole at 0.64-0.93 (stop 30: a portrait enlarged past a 1080p frame, 6 face-frames half shown live).
# Live mode only: file mode's mirrored pass, second look and look-ahead already hid that portrait in every frame.
# It runs only where the main pass saw something of such a face (`_doubtful_large`; on every frame it cost 8 CPU ms
# a live 1080p frame), and only its clear, large boxes that the main pass did not find whole count (where it did,
# the main pass's box and landmarks are the sharper ones). HUGE_SCALE 0 turns it off.
HUGE_SCALE = 0.35  # of the main pass's scale
HUGE_MIN_PX = 256  # box size at the main pass's scale
HUGE_NEW_IOU = 0.5  # a main-pass box overlapping it this much is the same face, found whole
SECOND_LOOK_MAX_FACE = 40  # px in the frame: larger weak faces are weak for other reasons (hidden, turned away)
SECOND_LOOK_BUDGET = 1.0  # the mosaic's pixels at most, relative to the main pass's, strongest boxes first; 0.5 -> 1.0:
#   WIDER 1080p crowds 206 -> 189 leaked face-frames, +23 % detection CPU there (bench/recall_price.py, README)
SECOND_LOOK_PX = 40  # face width on the closer look...
SECOND_LOOK_SCALE = 2.0  # ...enlarged at least this much (a weak box is often larger than the face in it)
SECOND_LOOK_CONTEXT = 1.0  # face sizes of surroundings on each side
SECOND_LOOK_WIDTH = 640  # mosaic row width
SECOND_LOOK_RETRY = 4  # frames before a place whose second look found nothing is looked at again: in a crowd the
#                        budget then reaches more of the weak boxes instead of the same strongest ones every frame


# A still image (a photo, a one-frame video) has no next frame to confirm a weak face, as video's tracker does
# (engine/stages/track.py): views of the picture at other scales and mirrored confirm each other instead. A box
# under `confidence` is a face when it scores at least STILL_BAR in STILL_VIEWS of the views. Measured on the first
# frames of the corpus's 13 photo clips as stills (1,020 faces, `score_video.py`): 26 left visible as one frame of
# video, 13 with scales (0.5, 2) and 2 views, 9 with these scales and 3 views; boxes on no annotated face, on 48
# frames of the fully annotated clips: 2 as video, 13, 14 (5 scales and 2 views: 8 visible, 31 such boxes).
# `refinds`: a weak box beside a recognised face looked at again on its own (engine/faces.py, GHOST_RECHECK_*)
REFIND_WIDTHS = (64, 112, 200)  # px: the box's width in each look
REFIND_BAR = 0.3  # STILL_BAR: a real weak face reaches it in one of them (65 of 109 found at 0.2-0.6 in the corpus)
REFIND_IOU = 0.5
REFIND_CONTEXT = 0.5  # box sizes of surroundings on each side
STILL_SCALES = (0.35, 0.5, 0.7, 1.4, 2.0)  # relative to the main pass's scale, each also mirrored
STILL_MAX_PIXELS = 4096 * 2304  # the enlarged view's size at most (a 4K photo is not enlarged 2x to 8K)
STILL_BAR = 0.3  # 0.35: 14 visible, 11 boxes on no face
STILL_VIEWS = 3
STILL_MATCH_IOU = 0.3  # a weak face's boxes move between views more than a clear face's
# The enlarged views are there for faces too small for the main pass: a box in them that the main pass would see
# wider than this (its input pixels) is a face the main pass scores well if it is one, so it does not count (as a
# tile keeps only faces under TILE_MAX_FACE). They had scored a seated man's lap and clasped hands (a box 190 px
# wide at the main scale, 0.45-0.57 in three views) and blurred a fifth of a group photo. Measured at stop 30
# (bench/photo_leaks.py, bench/still_leaks.py): faces left visible 0 of 692 in 26 photos and 11 of 1,105 in 26
# photos at 1080p, the same with no bound and at 64, 48, 32 or 24 px; from no bound to 48 px, 6 photos lose blurred
# patches on no face (a lap: 23 % of the picture; clasped hands; 0.6-7 % of the others), 2 of them only below 64.
STILL_ENLARGED_MAX_PX = 48.0
# A photo stored sideways or upside down with no orientation tag (a messenger or a scanner dropped it): YuNet finds
# faces turned up to ~40 degrees, so such a photo's faces were mostly left visible (WIDER Parade turned a quarter:
# 105 of 134). The picture is also looked at turned a quarter, a half and three quarters (np.rot90's k) at the main
# scale, plain and mirrored; where a turn shows more clear faces (SIDEWAYS_SCORE in both) than the picture as stored,
# it is searched turned as well, with every view above, and the boxes of both are kept. Not per box: on a turned
# picture YuNet scores 0.6-0.8 boxes across shoulders and backgrounds (a portrait turned a quarter), and the views'
# company did not filter them out (bench/photo_leaks.py: a fifth to three fifths of three upright photos blurred).
STILL_TURNS = (1, 2, 3)
SIDEWAYS_SCORE = 0.7

# A picture with no colour (an infrared night camera, a black-and-white filter, old footage): YuNet leans on colour,
# and misses small and dark faces in it (bench/suite.py --degrade gray, file mode: the store-aisle clip's 12-19 px
# faces 65 of 89 face-frames visible, the dev clip 23 of 538; in colour 0 and 0). CenterFace, on its own, misses
# others there (backs of heads turning: 9 of 29); file mode searches such frames with both (`colourless_help`).
MONOCHROME_LEVELS = 3  # channels further apart than this at a pixel: colour (a grey picture through 4:2:0: 0-1)
# ...at more than this share of the pixels sampled (every 8th row and column): a coloured logo or timestamp drawn over
# a grey picture stays under it. Not one frame of the corpus's colour clips is under 10 % (1,183 frames, every 4th).
MONOCHROME_SHARE = 0.05
MONOCHROME_RANGE = 16  # levels between its darkest and brightest pixels at least: a flat frame (black, the warm-up's
#                        blank one, a fade) is no picture at all
MONOCHROME_CHECK_EVERY = 30  # live: frames between two looks at whether the picture has colour, until it has none


def monochrome(frame: np.ndarray) -> bool:
    """Whether a BGR picture has no colour: its three channels the same but at a few pixels."""
    sample = frame[::8, ::8].astype(np.int16)
    spread = np.maximum(np.abs(sample[..., 0] - sample[..., 1]), np.abs(sample[..., 1] - sample[..., 2]))
    return bool((spread > MONOCHROME_LEVELS).mean() <= MONOCHROME_SHARE and np.ptp(sample) >= MONOCHROME_RANGE)


class YuNetDetector:
    name = "yunet"

    def __init__(self, runner: NetworkRunner, detect_width: int) -> None:
        self.runner = runner
        self.runner_name = runner.name
        self.detect_width = detect_width
        self.tiles = False  # video only (the pipeline turns it on): a photo is detected in one deterministic pass
        self.tile_cycle = TILE_CYCLE  # frames until every tile came back; file mode spends its headroom on fewer
        self._tile_turn = 0
        # Live mode, only while the engine cannot keep up (engine/runner.py): the tile pass runs on every
        # `tile_every`-th frame, the tracker holding what tiles found in between, so that every frame still
        # goes out at the source's rate rather than input frames being dropped.
        self.tile_every = 1
        self.tile_seconds: float | None = None  # wall time of one tile, a running mean (live: runner.py)
        # Live on OpenVINO (the pipeline sets it): this frame's tiles are searched on a thread of their own while the
        # main pass runs; the same boxes as one after the other. Live 1080p30 on the Xeon, 3 runs each: the delay a
        # viewer gets p95 54-62 -> 44-54 ms at the same CPU (docs/measurements.md, stop 41).
        self.tiles_alongside = False
        self._tile_thread: ThreadPoolExecutor | None = None
        self._closed = False
        self._calls = 0
        self.second_look = False  # file mode (the pipeline turns it on): weak small faces looked at again
        self.colourless_help = False  # file mode (the pipeline turns it on): a monochrome frame also by CenterFace
        self._centerface = None  # made at the first monochrome frame, on `backend`
        self.backend = "auto"
        self._warned_colourless = False
        self._rejected: list[tuple[np.ndarray, int]] = []  # (box, frame) of second looks that found nothing
        # A still image (the pipeline sets it): the `confidence` a box needs in one view; weaker boxes need
        # STILL_VIEWS views. None for video.
        self.still: float | None = None
        # CUDA plans every new input shape (engine/models/cuda_plans.py): there the crops looked at again go onto a
        # few square canvases, planned now on the network's thread, while the engine starts.
        self._crop_canvas = crop_canvas if getattr(runner, "plans_per_shape", False) else None
        if self._crop_canvas is not None:
            runner.warm([network_batch(runner, np.zeros((side, side, 3), np.uint8)) for side in CROP_SIDES],
                        "yunet crops")

    def detect(self, frame: np.ndarray, min_score: float) -> Detections:
        if self.still is not None:
            return self._detect_still(frame, min_score, self.still)
        found, scale = self.passes(frame, min_score, with_tiles=not (self._calls + 1) % max(1, self.tile_every))
        return self.finish(frame, found, scale, min_score)

    def _detect_still(self, frame: np.ndarray, min_score: float, confidence: float) -> Detections:
        """A still image: the passes video gets, plus the picture at STILL_SCALES, plain and mirrored; a box is kept
        when it reaches `confidence` in video's passes, or STILL_BAR in STILL_VIEWS views (`corroborated`). A picture
        that shows more clear faces turned (STILL_TURNS) is searched so too."""
        found = self._still_views(frame, min_score, confidence)
        quarters = self._sideways(frame, int((found.score >= SIDEWAYS_SCORE).sum()))
        if quarters:
            turned = np.ascontiguousarray(np.rot90(frame, quarters))
            # the second look's places looked at in vain are the upright picture's: other places once turned
            rejected, self._rejected = self._rejected, []
            try:
                more = turned_back(self._still_views(turned, min_score, confidence), quarters, frame.shape)
            finally:
                self._rejected = rejected
            found = merge([found, more], NMS_IOU)
        return found

    def _still_views(self, frame: np.ndarray, min_score: float, confidence: float) -> Detections:
        bar = max(min_score, min(STILL_BAR, confidence))
        views = [self.finish(frame, *self.passes(frame, bar), bar)]
        main = detection_scale(frame, self.detect_width)
        area = frame.shape[0] * frame.shape[1]
        for factor in STILL_SCALES:
            scale = min(main * factor, np.sqrt(STILL_MAX_PIXELS / max(area, 1)))
            plain, flipped = self._detect_at(frame, scale, bar), self._detect_mirrored(frame, scale, bar)
            if scale > main:
                plain, flipped = (_narrower(v, STILL_ENLARGED_MAX_PX / main) for v in (plain, flipped))
            views += [plain, mirror(flipped, frame.shape[1])]
        self._last_input = None
        return corroborated(views, confidence, bar, STILL_VIEWS, STILL_MATCH_IOU)

    def _sideways(self, frame: np.ndarray, upright: int) -> int:
        """The quarter turns (STILL_TURNS) at which the picture shows the most clear faces, if more than `upright`
        (as stored); else 0. A face counts where its turned view and that view mirrored both score SIDEWAYS_SCORE;
        between turns with as many, the higher scores win (YuNet finds many faces upside down as well)."""
        best, best_rank = 0, (upright, float("inf"))
        for quarters in STILL_TURNS:
            turned = np.ascontiguousarray(np.rot90(frame, quarters))
            scale = detection_scale(turned, self.detect_width)
            plain = self._detect_at(turned, scale, SIDEWAYS_SCORE)
            flipped = mirror(self._detect_mirrored(turned, scale, SIDEWAYS_SCORE), turned.shape[1])
            both = (overlaps(plain.xyxy, flipped.xyxy)[0] >= STILL_MATCH_IOU).any(axis=1) \
                if len(plain) and len(flipped) else np.zeros(len(plain), bool)
            rank = (int(both.sum()), float(plain.score[both].sum()))
            if rank[0] > best_rank[0] or (rank[0] == best_rank[0] and best and rank[1] > best_rank[1]):
                best, best_rank = quarters, rank
        self._last_input = None
        return best

    @property
    def frame_only(self) -> bool:
        """Whether `passes` depends on the frame alone (every tile each frame, no shedding), so that another
        detector like this one may run it for a later frame at the same time (detectors/parallel.py)."""
        return self.tile_cycle == 1 and self.tile_every == 1 and self.still is None

    def in_parallel(self) -> FrameParallelDetector | None:
        """This detector with twins that run the passes of later frames at the same time (file mode,
        detectors/parallel.py), where that pays: onnxruntime on the CPU, at least 2 cores to run on. A twin gets
        one onnxruntime thread on up to 3 cores (two frames then fill 2 cores), two from 4."""
        if type(self) is not YuNetDetector or not isinstance(self.runner, OnnxRuntimeRunner) or usable_cores() < 2:
            return None
        threads = 1 if usable_cores() < 4 else 2
        return FrameParallelDetector(self, lambda: YuNetDetector(OnnxRuntimeRunner(model_path("yunet"), threads),
                                                                 self.detect_width))

    def passes(self, frame: np.ndarray, min_score: float, with_tiles: bool = True) -> tuple[Detections, float]:
        """The passes over the frame itself: the main pass, its mirror (file mode) and this frame's tiles, and the
        main pass's scale. Boxes down to the second look's bar in file mode; `finish` applies `min_score`."""
        scale = detection_scale(frame, self.detect_width)
        bar = min(min_score, SECOND_LOOK_FROM) if self.second_look else min_score
        tiled = self.tiles and scale < TILE_BELOW_SCALE and with_tiles
        aside = self._tiles_aside() if tiled and self.tiles_alongside else None
        searching = aside.submit(self._search_tiles, frame, scale, bar) if aside is not None else None
        try:
            found = self._main_passes(frame, scale, bar)
        except BaseException:  # never two tile searches at once (the tile turn), nor one left running on a frame gone
            if searching is not None:
                wait([searching])
            raise  # the main pass's error, not the tiles'
        searched = searching.result() if searching is not None else None
        if tiled:
            clear = found[found.score >= min_score]
            found = merge([found, self._tile_pass(frame, scale, clear, bar, searched)], NMS_IOU)
        self._last_input = None  # holds a frame
        return found, scale

    def _main_passes(self, frame: np.ndarray, scale: float, bar: float) -> Detections:
        """The passes over the whole frame: the main pass, its mirror and smoothed copy (file mode), the huge faces."""
        found = self._detect_at(frame, scale, bar)
        if self.second_look and MIRROR_MAIN:
            flipped = mirror(self._detect_mirrored(frame, scale, bar), frame.shape[1])
            # Only its clear faces: its weak boxes, added to the plain pass's, started tracks on texture and hands
            # (two weak sightings start a face, engine/stages/track.py): +50 % false blurs on the real clips.
            flipped = flipped[flipped.score >= SECOND_LOOK_BELOW]
            found = merge([found, flipped], NMS_IOU)
        # Measured on every frame (0.3 ms): the passes depend on the frame alone, so that two frames detected at once
        # (detectors/parallel.py) find what one at a time would, whichever twin takes which frame.
        if self.second_look and noise_sigma(frame) > NOISY_SIGMA:
            denoised = self._detect_image(smoothed(letterbox(frame, scale)), scale, bar)
            found = merge([found, denoised[denoised.score >= DENOISED_KEEP]], NMS_IOU)
        if HUGE_SCALE and not self.second_look and _doubtful_large(found, scale, frame.shape):
            found = merge([found, self._huge_faces(frame, scale, found)], NMS_IOU)
        return found

    def _tiles_aside(self) -> ThreadPoolExecutor | None:
        """The tiles' own thread; None once closed (the caller's thread searches them then)."""
        if self._tile_thread is None and not self._closed:
            self._tile_thread = ThreadPoolExecutor(1, thread_name_prefix="yunet-tiles")
        return None if self._closed else self._tile_thread

    def close(self) -> None:
        """Ends the tiles' thread (Pipeline.close); a later detection searches its tiles in the caller's thread."""
        self._closed = True
        if self._tile_thread is not None:
            self._tile_thread.shutdown(wait=False)

    def warm_huge(self, frame: np.ndarray) -> None:
        """The huge-face pass once on `frame` (Pipeline.warm_up): its input shape prepared before the first frame,
        as the main pass's is; a blank frame never opens its gate."""
        if HUGE_SCALE and not self.second_look:
            self._huge_faces(frame, detection_scale(frame, self.detect_width), Detections.empty())
            self._last_input = None

    def _huge_faces(self, frame: np.ndarray, scale: float, found: Detections) -> Detections:
        """Clear faces too large for the main pass, from the frame at HUGE_SCALE of its scale, that no clear box
        `found` holds whole already."""
        huge = self._detect_at(frame, scale * HUGE_SCALE, SECOND_LOOK_BELOW)
        huge = huge[(huge.xyxy[:, 2] - huge.xyxy[:, 0]) * scale >= HUGE_MIN_PX]
        clear = found.xyxy[found.score >= SECOND_LOOK_BELOW]
        if len(huge) and len(clear):
            huge = huge[overlaps(huge.xyxy, clear)[0].max(axis=1) < HUGE_NEW_IOU]
        return huge

    def finish(self, frame: np.ndarray, found: Detections, scale: float, min_score: float) -> Detections:
        """`passes`' boxes after the second look (file mode), which remembers the places it looked at in vain
        over the last frames: frames must go through `finish` one at a time, in order."""
        self._calls += 1
        if self.second_look:
            found = self._look_again(frame, found, scale)  # the passes' scale, should detect_width change meanwhile
        self._last_input = None
        if self.colourless_help and monochrome(frame):
            found = merge([found, self._colourless_detector().detect(frame, min_score)], NMS_IOU)
        elif not self._warned_colourless and self._calls % MONOCHROME_CHECK_EVERY == 1 and monochrome(frame):
            self._warned_colourless = True  # live: CenterFace would cost 5-10x YuNet a frame; the user is told
            log.warning("the picture has no colour (an infrared or black-and-white camera): YuNet misses small and "
                        "dim faces without colour, and live mode has no time for a second detector")
        return found[found.score >= min_score]

    def _colourless_detector(self):
        if self._centerface is None:
            from engine.stages.detectors import centerface

            log.info("a picture with no colour: searched by CenterFace as well (YuNet misses small faces there)")
            self._centerface = centerface.create(Settings(detect_width=self.detect_width, backend=self.backend))
        self._centerface.detect_width = self.detect_width  # a detect size changed mid-file (configure)
        return self._centerface

    def _look_again(self, frame: np.ndarray, found: Detections, scale: float) -> Detections:
        """Small weak detections looked at again, enlarged and mirrored (detectors/second_look.py); one that
        scores clearly there is replaced by what that look found, the rest stay as they were: it only adds faces."""
        width = found.xyxy[:, 2] - found.xyxy[:, 0]
        weak = (found.score >= SECOND_LOOK_FROM) & (found.score < SECOND_LOOK_BELOW) & (width <= SECOND_LOOK_MAX_FACE)
        strong = found.xyxy[found.score >= SECOND_LOOK_BELOW]
        self._rejected = [(box, at) for box, at in self._rejected if self._calls - at < SECOND_LOOK_RETRY]
        recent = np.stack([box for box, _ in self._rejected]) if self._rejected else None
        # Only the weak small boxes are checked (a crowd at the 0.1 bar has hundreds of boxes in all): one on a
        # face already found is part of it; one looked at in vain lately is not looked at again yet.
        picked = np.array([k for k in np.flatnonzero(weak)
                           if not (len(strong) and _covered_by(found.xyxy[k], strong) >= 0.5)
                           and not (recent is not None and _max_iou(found.xyxy[k], recent) >= 0.5)], dtype=np.intp)
        picked = picked[np.argsort(-found.score[picked], kind="stable")]
        budget = SECOND_LOOK_BUDGET * scale * scale * frame.shape[0] * frame.shape[1]
        picked = picked[cell_areas(found.xyxy[picked], SECOND_LOOK_PX, SECOND_LOOK_SCALE, SECOND_LOOK_CONTEXT).cumsum()
                        <= budget]
        if not len(picked):
            return found
        look = lambda image: self._detect_at(_derived(image), 1.0, SECOND_LOOK_FROM, crop=True)  # noqa: E731
        again = second_look(frame, found[picked], look,
                            SECOND_LOOK_PX, SECOND_LOOK_SCALE, SECOND_LOOK_CONTEXT, SECOND_LOOK_WIDTH)
        # Only a clear face counts: a weak box merely raised to 0.3-0.5 would start tracks on texture when seen twice.
        better = again.score >= SECOND_LOOK_BELOW
        self._rejected += [(found.xyxy[k], self._calls) for k in picked[again.score < SECOND_LOOK_BELOW]]
        if not better.any():
            return found
        rest = np.setdiff1d(np.arange(len(found)), picked[better])
        return merge([found[rest], again[better]], NMS_IOU)

    def _tile_pass(self, frame: np.ndarray, scale: float, found: Detections, min_score: float,
                   searched: list[Detections] | None = None) -> Detections:
        """The small faces in this frame's turn of tiles, at the frame's own resolution, but for parts of the faces
        `found` whole. Every tile comes back within TILE_CYCLE frames, however many there are (a low detect_width
        or a 4K frame makes many), so a face only a tile sees is found again before its track's hold runs out.
        `searched`: the tiles' search already made (`tiles_alongside`)."""
        parts = self._search_tiles(frame, scale, min_score) if searched is None else searched
        if len(found):  # part of a face the main pass found whole is that face, not a new one
            parts = [part[_coverage(part.xyxy, found.xyxy) < 0.5] if len(part) else part for part in parts]
        return merge(parts, NMS_IOU) if len(parts) > 1 else parts[0]

    def _search_tiles(self, frame: np.ndarray, scale: float, min_score: float) -> list[Detections]:
        """Each tile of this frame's turn searched: its small faces not cut by its edges."""
        largest = tile_max_face(scale)
        tiles = tile_grid(frame.shape[1], frame.shape[0], TILE_BUDGET * scale * scale, largest)
        per_frame = -(-len(tiles) // max(1, self.tile_cycle))
        parts = []
        started = time.perf_counter()
        for _ in range(per_frame):
            self._tile_turn = (self._tile_turn + 1) % len(tiles)
            parts.append(self._one_tile(frame, tiles[self._tile_turn], Detections.empty(), min_score, largest))
        # Live mode prices more tiles a frame with it (runner.py). Beside the main pass it is timed sharing the cores
        # with it, so it overstates what one more tile adds to a frame: live mode then asks for more tiles a bit later.
        one = (time.perf_counter() - started) / per_frame
        self.tile_seconds = one if self.tile_seconds is None else 0.8 * self.tile_seconds + 0.2 * one
        return parts

    def tiles_per_frame(self, width: int, height: int, cycle: int) -> int:
        """Tiles a width x height frame's tile pass searches each frame at `cycle` (0 where it has none)."""
        scale = area_scale(width, height, self.detect_width)
        if not self.tiles or scale >= TILE_BELOW_SCALE:
            return 0
        return -(-len(tile_grid(width, height, TILE_BUDGET * scale * scale, tile_max_face(scale))) // max(1, cycle))

    def _one_tile(self, frame: np.ndarray, tile: tuple[int, int, int, int], found: Detections,
                  min_score: float, largest: float = TILE_MAX_FACE) -> Detections:
        x1, y1, x2, y2 = tile
        # Searched alongside the main pass (live), this `_last_input` may replace the main pass's: only file mode's
        # mirrored pass reads it, and file mode searches its tiles after the main pass.
        dets = self._detect_at(frame[y1:y2, x1:x2], 1.0, min_score)
        if self.second_look and MIRROR_TILES:
            flipped = mirror(self._detect_at(_derived(frame[y1:y2, x1:x2][:, ::-1]), 1.0, min_score), x2 - x1)
            dets = merge([dets, flipped[flipped.score >= SECOND_LOOK_BELOW]], NMS_IOU)
        dets = dets.shifted(x1, y1)
        if not len(dets):
            return dets
        b = dets.xyxy
        small = (b[:, 2] - b[:, 0]) <= largest
        # A box touching a tile edge inside the frame may be a cut face: a neighbouring tile sees it whole.
        edge = 2.0
        cut = ((x1 > 0) & (b[:, 0] <= x1 + edge)) | ((y1 > 0) & (b[:, 1] <= y1 + edge))
        cut |= ((x2 < frame.shape[1]) & (b[:, 2] >= x2 - edge)) | ((y2 < frame.shape[0]) & (b[:, 3] >= y2 - edge))
        keep = small & ~cut
        if len(found):  # part of a face the main pass found whole is that face, not a new one
            keep &= _coverage(b, found.xyxy) < 0.5
        return dets[keep]

    def refine(self, frame: np.ndarray, xyxy: np.ndarray, face_px: float = REFINE_PX) -> Detections:
        """The face in box `xyxy` detected again in a crop scaled so that it is about `face_px` wide.

        Recognition needs precise landmarks: on the dev clip, landmarks from a native 640x360 pass made the
        performer match in 81 % of his frames, those of a 2x pass in 96 %. Re-detecting only the faces about
        to be embedded costs about a millisecond each instead of a 2x pass over the whole frame.
        Returns the one detection that overlaps the box best, or no detection.
        """
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        size = max(x2 - x1, y2 - y1, 1.0)
        scale = min(max(face_px / size, 0.25), 4.0)
        h, w = frame.shape[:2]
        pad = 0.5 * size
        cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
        cx2, cy2 = int(min(w, x2 + pad)), int(min(h, y2 + pad))
        if cx2 - cx1 < 4 or cy2 - cy1 < 4:
            return Detections.empty()
        found = self._detect_at(frame[cy1:cy2, cx1:cx2], scale, 0.3, crop=True)
        if not len(found):
            return found
        found = found.shifted(cx1, cy1)
        overlap = [box_iou(box, (x1, y1, x2, y2)) for box in found.xyxy]
        best = int(np.argmax(overlap))
        return found[[best]] if overlap[best] >= 0.5 else Detections.empty()

    def refinds(self, frame: np.ndarray, xyxy: np.ndarray) -> bool:
        """Whether a fresh look at the region of box `xyxy`, scaled so that the box is each of REFIND_WIDTHS px
        wide, finds it again (a box overlapping it by REFIND_IOU, scoring REFIND_BAR). A real face is found at
        several sizes; the ghost YuNet puts beside a large tilted or smeared face, at none (engine/faces.py)."""
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        w, h = x2 - x1, y2 - y1
        height, width = frame.shape[:2]
        cx1, cy1 = int(max(0, x1 - REFIND_CONTEXT * w)), int(max(0, y1 - REFIND_CONTEXT * h))
        cx2, cy2 = int(min(width, x2 + REFIND_CONTEXT * w)), int(min(height, y2 + REFIND_CONTEXT * h))
        if w < 4 or h < 4 or cx2 - cx1 < 4 or cy2 - cy1 < 4:
            return True  # nothing to look at: not evidence of a ghost
        try:
            for face_px in REFIND_WIDTHS:
                found = self._detect_at(frame[cy1:cy2, cx1:cx2], face_px / w, REFIND_BAR, crop=True).shifted(cx1, cy1)
                if any(box_iou(box, xyxy) >= REFIND_IOU for box in found.xyxy):
                    return True
        finally:
            self._last_input = None
        return False

    def _detect_mirrored(self, frame: np.ndarray, scale: float, min_score: float) -> Detections:
        """The pass `_detect_at(frame, scale)` just made, on the mirrored frame. Its input is that pass's resized
        frame mirrored, not the mirrored frame resized again, where the two are the same pixels (`_flip_commutes`:
        1080p, 720p, 1440p, 4K are). A 1080p flip and resize fewer: the detector's CPU a 1080p dev-clip frame
        138.7 -> 133.0 ms mean with `_coverage` (bench/detector_ab.py, interleaved, the same detections)."""
        last, self._last_input = self._last_input, None
        if last is not None and last[0] is frame and last[1] == scale and _flip_commutes(*frame.shape, scale):
            image = last[2]
            h, w = max(1, round(frame.shape[0] * scale)), max(1, round(frame.shape[1] * scale))
            flipped = np.zeros_like(image)
            _into(flipped[:h, :w], cv2.flip(image[:h, :w], 1, dst=flipped[:h, :w]))
            return self._detect_image(flipped, scale, min_score)
        return self._detect_at(_derived(frame[:, ::-1]), scale, min_score)

    _last_input: tuple[np.ndarray, float, np.ndarray] | None = None  # (frame, scale, its letterboxed input)

    def _detect_at(self, frame: np.ndarray, scale: float, min_score: float, crop: bool = False) -> Detections:
        """`crop`: a region looked at again (refine, second look), which on CUDA goes onto a crop canvas."""
        # BGR, 0..255: YuNet's own input convention
        image = letterbox(frame, scale, canvas=self._crop_canvas if crop else None)
        self._last_input = (frame, scale, image) if frame.ndim == 3 else None
        return self._detect_image(image, scale, min_score)

    def _detect_image(self, image: np.ndarray, scale: float, min_score: float) -> Detections:
        outputs = self.runner.run(network_batch(self.runner, image))
        return self._decode(outputs, image.shape[:2], scale, min_score)

    def _decode(self, outputs: list[np.ndarray], size: tuple[int, int], scale: float, min_score: float) -> Detections:
        cls, obj, bbox, kps = outputs[0:3], outputs[3:6], outputs[6:9], outputs[9:12]
        boxes, scores, marks = [], [], []
        for i, (stride, grid) in enumerate(zip(STRIDES, _anchor_grid(*size), strict=True)):
            score = np.sqrt(np.clip(cls[i][0, :, 0], 0, 1) * np.clip(obj[i][0, :, 0], 0, 1))
            keep = score >= min_score
            if not keep.any():
                continue
            g, b, k = grid[keep], bbox[i][0][keep], kps[i][0][keep]
            centre = (g + b[:, :2]) * stride
            wh = np.exp(b[:, 2:4]) * stride
            boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1))
            scores.append(score[keep])
            marks.append((g[:, None, :] + k.reshape(-1, 5, 2)) * stride)
        if not boxes:
            return Detections.empty()
        xyxy = np.concatenate(boxes).astype(np.float32) / scale
        score = np.concatenate(scores).astype(np.float32)
        landmarks = np.concatenate(marks).astype(np.float32) / scale
        keep = nms(xyxy, score, NMS_IOU)
        return Detections(xyxy[keep], score[keep], landmarks[keep])


def corroborated(views: list[Detections], confidence: float, bar: float, needed: int, match_iou: float) -> Detections:
    """The boxes of several views of one picture that reach `confidence` in the first view (video's own passes),
    or `bar` in `needed` views (boxes of different views overlapping by `match_iou`); duplicates removed by NMS."""
    joined = Detections(np.concatenate([v.xyxy for v in views]), np.concatenate([v.score for v in views]),
                        np.concatenate([v.landmarks for v in views]))
    if not len(joined):
        return joined
    view = np.concatenate([np.full(len(v), k) for k, v in enumerate(views)])
    trusted = (joined.score >= confidence) & (view == 0)  # the first view alone is trusted: the others need company
    keep = trusted.copy()
    weak = np.flatnonzero(~keep & (joined.score >= bar))
    if len(weak):
        overlap = overlaps(joined.xyxy[weak], joined.xyxy)[0] >= match_iou
        overlap &= joined.score[None, :] >= bar
        for row, i in enumerate(weak):
            keep[i] = len(np.unique(view[overlap[row]])) >= needed
    kept, trusted = joined[keep], trusted[keep]
    if not len(kept):
        return kept
    order = nms(kept.xyxy, kept.score, NMS_IOU)
    kept, trusted = kept[order], trusted[order]
    # An enlarged view of a close-up sees parts of the face (an eye) as faces: part of a clear face is that face
    # (a box there would blur an allowlisted face's eye), as a tile's boxes are (`_one_tile`).
    clear = kept.xyxy[kept.score >= confidence]
    if not len(clear):
        return kept
    area = (kept.xyxy[:, 2] - kept.xyxy[:, 0]) * (kept.xyxy[:, 3] - kept.xyxy[:, 1])
    clear_area = (clear[:, 2] - clear[:, 0]) * (clear[:, 3] - clear[:, 1])
    inside = (overlaps(kept.xyxy, clear)[1] >= 0.5) & (area[:, None] < 0.5 * clear_area[None, :])
    return kept[~(inside.any(axis=1) & ~trusted)]  # video's own clear faces stay (a face held up to a face)


def turned_back(found: Detections, quarters: int, shape: tuple[int, ...]) -> Detections:
    """Detections made on `np.rot90(picture, quarters)`, in the coordinates of the picture of `shape` (h, w, ...).
    A quarter turn (counter-clockwise as shown) takes the picture's point (x, y) to (y, w - x); its inverse takes
    the turned picture's (u, v) back to (w - v, u)."""
    h, w = shape[:2]
    points = np.concatenate([found.xyxy.reshape(-1, 2, 2), found.landmarks], axis=1)  # corners, then landmarks
    u, v = points[..., 0].copy(), points[..., 1].copy()
    for step in range(quarters % 4):  # the last turn first: the picture it turned was w wide after an even count
        width = w if (quarters - step - 1) % 2 == 0 else h
        u, v = width - v, u
    corners = np.stack([u[:, :2], v[:, :2]], axis=-1)
    xyxy = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).astype(np.float32)
    marks = np.stack([u[:, 2:], v[:, 2:]], axis=-1).astype(np.float32)
    return Detections(xyxy, found.score, marks)


def _doubtful_large(found: Detections, scale: float, shape: tuple[int, ...]) -> bool:
    """Whether the main pass saw something of a huge face: a box at least HUGE_MIN_PX tall at its scale that is
    weak or reaches past the frame (the parts of a face taller than the frame are both)."""
    xyxy = found.xyxy
    large = (xyxy[:, 3] - xyxy[:, 1]) * scale >= HUGE_MIN_PX
    past = (xyxy[:, 0] < 0) | (xyxy[:, 1] < 0) | (xyxy[:, 2] > shape[1]) | (xyxy[:, 3] > shape[0])
    return bool((large & ((found.score < SECOND_LOOK_BELOW) | past)).any())


def _narrower(found: Detections, width: float) -> Detections:
    """The boxes at most `width` wide."""
    return found[(found.xyxy[:, 2] - found.xyxy[:, 0]) <= width]


@lru_cache(maxsize=16)
def tile_max_face(scale: float) -> float:
    """The widest face (frame px) a tile keeps when the main pass runs at `scale`: TILE_MAX_FACE_MAIN at that scale,
    never under TILE_MAX_FACE (1080p's bound, unchanged)."""
    return max(float(TILE_MAX_FACE), TILE_MAX_FACE_MAIN / max(scale, 1e-3))


def tile_grid(width: int, height: int, budget: float,
              largest: float = TILE_MAX_FACE) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles (x1, y1, x2, y2) covering a width x height frame, each at most about `budget` of
    its area (plus the overlap, which holds a face `largest` px wide whole), in the order they are visited."""
    count = max(1, int(np.ceil(1.0 / max(budget, 1e-3))))
    cols = max(1, min(count, int(np.ceil(np.sqrt(count * width / height)))))
    rows = max(1, int(np.ceil(count / cols)))
    tw, th = -(-width // cols), -(-height // rows)
    half = (int(np.ceil(largest)) + TILE_OVERLAP_MARGIN) // 2
    return [(max(0, c * tw - half), max(0, r * th - half), min(width, (c + 1) * tw + half),
             min(height, (r + 1) * th + half)) for r in range(rows) for c in range(cols)]


def _coverage(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """`_covered_by` of each box in `boxes` (n x 4) by `others` (m x 4, m >= 1) at once, the same float32 values:
    a 1080p crowd's tiles give ~440 boxes a frame, one Python call each (WIDER Parade 1080p: detector CPU
    239.9 -> 235.5 ms a frame mean, bench/detector_ab.py --parts coverage)."""
    ix = np.clip(np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0]),
                 0, None)
    iy = np.clip(np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1]),
                 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (ix * iy).max(axis=1) / np.maximum(areas, np.float32(1e-9))


def _covered_by(box: np.ndarray, boxes: np.ndarray) -> float:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    return float((ix * iy).max() / max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-9))


def _derived(image: np.ndarray) -> np.ndarray:
    """A picture made from the frame (mirrored, a mosaic), contiguous and as a view: the device detector
    (engine/gpu/device.py) caches only source frames (base None) and would evict them for it."""
    if image.ndim == 3 and image.strides[1] < 0 and image.strides[0] > 0:
        # A mirrored view: numpy's copy of a negative stride took 8.7 ms CPU a 1080p frame, cv2.flip 0.3 ms
        # (the same pixels). OpenCV needs the unmirrored, positively strided view to flip.
        return cv2.flip(image[:, ::-1], 1)[:]
    return np.ascontiguousarray(image)[:]


@lru_cache(maxsize=16)
def _flip_commutes(height: int, width: int, channels: int, scale: float) -> bool:
    """Whether `letterbox` at `scale` of a mirrored height x width frame is its letterbox mirrored, pixel for
    pixel: OpenCV's linear resize weighs the two neighbours of an output pixel in fixed point, and the mirrored
    output pixel gets the same weights swapped only where its source position mirrors exactly (1920 -> 1280: at
    x.25 / x.75). Tried once per size on noise, where any weight that differs shows."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width, channels), dtype=np.uint8)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    mirrored_then_resized = letterbox(cv2.flip(noise, 1), scale)[:h, :w]
    return bool(np.array_equal(mirrored_then_resized, cv2.flip(letterbox(noise, scale)[:h, :w], 1)))


def _into(view: np.ndarray, result: np.ndarray) -> None:
    """OpenCV writes into a `dst` view and returns it; should it return a new array, the view still gets it."""
    if result is not view:
        view[:] = result


def _max_iou(box: np.ndarray, boxes: np.ndarray) -> float:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float((inter / np.maximum(areas + (box[2] - box[0]) * (box[3] - box[1]) - inter, 1e-9)).max())


@lru_cache(maxsize=64)  # frames come in one size; `refine` crops in a few dozen (multiples of 32)
def _anchor_grid(height: int, width: int) -> tuple[np.ndarray, ...]:
    """(col, row) of every anchor per stride, row-major."""
    return tuple(
        np.stack(np.meshgrid(np.arange(width // s), np.arange(height // s)), axis=-1).reshape(-1, 2).astype(np.float32)
        for s in STRIDES
    )


def _torch_module(path):
    from engine.models.yunet import YuNet

    return YuNet.from_onnx(path)


def create(settings: Settings, network: str = "yunet") -> YuNetDetector:
    """`network` "landmarker": the recognizer's own YuNet (engine/recognition/recognize.py), whose runner
    `make_runner` sets up apart from the stream's."""
    runner = make_runner(settings.backend, model_path("yunet"), _torch_module, network=network)
    detector = YuNetDetector(runner, settings.detect_width)
    detector.backend = settings.backend  # the second detector's too (photos keep onnxruntime: assemble.py)
    return detector
