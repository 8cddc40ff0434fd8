"""Anonymize stage: blur, pixelate or fill face regions, and the only maker of `SafeFrame`.

Sinks accept nothing but a `SafeFrame`, and only `Anonymizer` can make one, so no code path can hand a sink
a frame that did not pass through here. Strong blur is done on a downscaled region and scaled back: a
naive `GaussianBlur(sigma=30)` on a 200x200 face costs more than running the detector (22 ms, measured).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from engine.config import Settings
from engine.stages.detect import area_scale

_TOKEN = object()
# A detector places a small face's box to within about its finest stride (YuNet's 8 px at its input), whatever the
# face's size, and a camera moving between frames shifts it further: at 1080p's 2/3 scale that is 12 px, half of a
# 22 px crowd face, where the margin (0.25 of the box) gives 5 px. Faces whose box was off by that much were blurred
# but half shown (WIDER Meeting_26: a 22 px face 13 px off its box, 9 frames; bench/leak_classes.py, `covered`). So
# the margin is at least this many input pixels of the main detection pass, in the frame's pixels: it only grows
# boxes under about 4 such strides (48 px at 1080p), the faces whose box is the least sure.
MARGIN_FLOOR_NETWORK_PX = 8.0
# Hard mosaic block edges redraw the face's outline: measured on the dev clip, a plain 7-block mosaic left
# 3.6 % of bystander face-frames visible to score_video.py; with edges softened by 0.3 of a block, none.
MOSAIC_EDGE_SOFTENING = 0.3
# A whole frame hidden (panic, pause, a detector that failed) keeps at most this many blocks across its short side,
# and blocks at least WHOLE_FRAME_MIN_BLOCK px: a fixed 1/32 had left a 4K close-up's face 68 blocks tall, which YuNet
# still found (0.89) and a viewer still knew.
WHOLE_FRAME_BLOCKS = 12
WHOLE_FRAME_MIN_BLOCK = 32


class Region(NamedTuple):
    """Where to anonymize: the face box grown by the margin, and that cut to the frame. `passes` 2: a face given
    twice (its track's box and its detection), anonymized once as if twice (`_pair_up`)."""

    clipped: tuple[int, int, int, int]
    grown: tuple[int, int, int, int]
    passes: int = 1


class SafeFrame:
    """A frame that has been through the anonymizer. Construct only via `Anonymizer`.

    While the look-ahead holds it, it may also keep the original pixels of faces blurred only because they were
    not recognised yet (`Anonymizer.reveal`); those are private to the anonymizer and dropped (`seal`) before the
    frame is sent."""

    __slots__ = ("_anonymized", "_originals", "_shown", "image", "index", "whole_frame")

    def __init__(self, image: np.ndarray, index: int, whole_frame: bool, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("SafeFrame is made only by the Anonymizer")
        self.image = image
        self.index = index
        self.whole_frame = whole_frame
        # track id -> (the region its boxes were anonymized in, its original pixels, its own boxes, their union)
        self._originals: dict[int, tuple[tuple[int, int, int, int], np.ndarray, list[np.ndarray], np.ndarray]] = {}
        # every box anonymized in it: (box, found in that frame, the region it was anonymized in, None if none). The
        # region itself, not its margin: a later settings change (margin, detect_width: the margin's floor) makes a
        # new anonymizer, whose regions for the same boxes would differ from what was blurred.
        self._anonymized: list[tuple[np.ndarray, bool, tuple[int, int, int, int] | None]] = []
        self._shown: list[tuple[int, int, int, int]] = []  # the regions `reveal` gave their original pixels back

    def copy(self) -> SafeFrame:
        """A copy of an anonymized frame is still anonymized (benchmarks replay one frame several ways)."""
        return SafeFrame(self.image.copy(), self.index, self.whole_frame, _TOKEN)



def whole_frame_blocks(width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of the blocks a whole hidden frame is averaged into: the same few across the short side at any
    size, so that a face filling the frame is never more than WHOLE_FRAME_BLOCKS blocks tall."""
    block = max(WHOLE_FRAME_MIN_BLOCK, min(width, height) / WHOLE_FRAME_BLOCKS)
    return max(1, round(width / block)), max(1, round(height / block))

class Anonymizer:
    def __init__(self, settings: Settings) -> None:
        self.mode = settings.mode
        self.shape = settings.shape
        self.strength = settings.strength
        self.margin = region_margin(settings.shape, settings.margin)
        self.detect_width = settings.detect_width
        self._floor = (0, 0, 0.0)  # (width, height, px): the margin's floor for frames of that size

    def apply(self, frame: np.ndarray, index: int, boxes: Iterable[np.ndarray],
              guesses: Iterable[np.ndarray] = (), keep: Iterable[np.ndarray] = (),
              revealable: Mapping[int, list[np.ndarray]] | None = None) -> SafeFrame:
        """Anonymize every box (x1, y1, x2, y2) in place, each grown by the margin.

        `guesses` are predicted places of faces the detector lost, with a fade no deeper than a 256 px region's
        (`_cover_region`); `keep` are recognised faces found in this frame. Where the two conflict the recognised
        face wins (a lost track's growing box must not blur the streamer standing there now); `boxes`, faces
        found in this frame, are anonymized last and always win. `revealable`: track id -> that face's own boxes
        among them, faces blurred only for want of recognition so far, whose original pixels the frame keeps for
        `reveal` (file mode's look-ahead).
        """
        height, width = frame.shape[:2]
        boxes, guesses = [np.asarray(b, np.float32) for b in boxes], list(guesses)
        originals = {track: self._original(frame, own) for track, own in (revealable or {}).items() if own}
        saved = [(r.clipped, frame[r.clipped[1]:r.clipped[3], r.clipped[0]:r.clipped[2]].copy())
                 for r in self._regions(keep, width, height, 0.0)] if guesses else []
        for region in self._one_by_one(frame, list(self._regions(guesses, width, height, self.margin))):
            self._cover_region(frame, region)
        for (x1, y1, x2, y2), pixels in saved:
            frame[y1:y2, x1:x2] = pixels
        for region in self._one_by_one(frame, list(self._found_regions(boxes, width, height))):
            self._anonymize_region(frame, region)
        safe = SafeFrame(frame, index, False, _TOKEN)
        safe._originals = {track: kept for track, kept in originals.items() if kept is not None}
        if safe._originals:
            safe._anonymized = (self._anonymized_regions(boxes, True, width, height)
                                + self._anonymized_regions(guesses, False, width, height))
        return safe

    def _one_by_one(self, frame: np.ndarray, regions: list[Region]) -> list[Region]:
        """A crowd's regions (BULK_MIN_REGIONS or more in one call) covered together (`_cover_crowd`), size class by
        size class (BULK_CLASSES, then one class for all larger); the regions left to cover one by one: all of them
        when they are fewer (or for mosaic, fill and the ellipse), none in a crowd. A class of fewer than
        BULK_MIN_REGIONS joins the next larger one and is blurred at that one's bound (the last class: at its largest
        region): more blur."""
        if self.mode != "blur" or self.shape != "box" or len(regions) < BULK_MIN_REGIONS:
            return regions
        sides = [_long_side(r) for r in regions]
        bounds = (*BULK_CLASSES, max(sides))
        groups: list[tuple[list[Region], int]] = []
        pending: list[Region] = []
        for i, (smaller, largest) in enumerate(zip((0, *bounds), bounds, strict=False)):
            pending += [r for r, side in zip(regions, sides, strict=True) if smaller < side <= largest]
            last = i == len(bounds) - 1
            if len(pending) >= BULK_MIN_REGIONS or (last and pending):
                groups.append((pending, largest))
                pending = []
        # The largest class first: a smaller face's region cut from its own cover last has no edge inside it (a
        # larger class's cover pasted over part of a small face drew an edge there: a 19 px face of the linzaer 5 photo
        # clip, at the scorer's bound, showed in one frame)
        for group, largest in reversed(groups):
            self._cover_crowd(frame, group, largest)
        return []

    def _cover_crowd(self, frame: np.ndarray, regions: list[Region], largest: int) -> None:
        """Many regions in one pass: the part of the frame they span blurred once, twice over at the blur of a region
        `largest` px (their class's bound, or the largest region's), and each region's pixels taken from it, opaque to
        its edge. Each region one by one was ~0.2 ms of Python and OpenCV calls: a live 1080p crowd of ~140 faces with
        its lost tracks' guesses (~600 regions) took 70 ms of the frame loop a frame. No fade: a hard edge drew detail
        on a blurred neighbour's face where the original met the cover; here a neighbour of the class is cut from the
        same cover, and every edge lies a margin (a quarter of the face) away from its own face."""
        x1, y1 = min(r.clipped[0] for r in regions), min(r.clipped[1] for r in regions)
        x2, y2 = max(r.clipped[2] for r in regions), max(r.clipped[3] for r in regions)
        cover = self._cover(frame[y1:y2, x1:x2], passes=2, size=largest)
        for r in regions:
            rx1, ry1, rx2, ry2 = r.clipped
            frame[ry1:ry2, rx1:rx2] = cover[ry1 - y1:ry2 - y1, rx1 - x1:rx2 - x1]

    def _anonymized_regions(self, boxes, found: bool, width: int, height: int) -> list:
        """`SafeFrame._anonymized` entries for `boxes`: each with the region it is anonymized in."""
        out = []
        for box in boxes:
            box = np.asarray(box, np.float32)
            region = self._grow(box, width, height, self.margin)
            out.append((box, found, region.clipped if region is not None else None))
        return out

    def _original(self, frame: np.ndarray, own: list[np.ndarray]):
        """The pixels a face's boxes will be anonymized over: the region of their union, which holds each box's
        region and the region of a pair of them (`_pair_up`)."""
        own = [np.asarray(b, np.float32) for b in own]
        union = np.concatenate([np.min(own, axis=0)[:2], np.max(own, axis=0)[2:]])
        region = self._grow(union, frame.shape[1], frame.shape[0], self.margin)
        if region is None:
            return None
        x1, y1, x2, y2 = region.clipped
        return region.clipped, frame[y1:y2, x1:x2].copy(), own, union

    def reveal(self, safe: SafeFrame, box: np.ndarray, track_id: int) -> np.ndarray | None:
        """Show again, in a frame held back, a face it kept the original of (`apply`'s `revealable`), as if it had
        been recognised then (`apply`'s `keep`): another face found in that frame wins (reaching into the face's
        box, nothing is shown); a lost face's guess or a later backfill reaching into its region leaves only its
        `box` shown; else its whole region gets its original pixels back. Returns the box whose region (grown by
        the margin) was shown, for `backfill`'s `keep` and to hide it again; None when nothing was shown."""
        kept = safe._originals.pop(track_id, None)
        if kept is None or safe.whole_frame:
            return None
        region, pixels, own, union = kept
        height, width = safe.image.shape[:2]
        box = np.asarray(box, np.float32)
        face = self._grow(box, width, height, 0.0)
        if face is None:
            return None
        whole = True
        for other, found, grown in safe._anonymized:  # each with the region it was anonymized in
            if any(other is b or np.array_equal(other, b) for b in own):
                continue
            if grown is None or not _intersects(grown, region):
                continue
            if found and _intersects(grown, face.clipped):
                return None
            whole = False
        x1, y1, x2, y2 = region if whole else face.clipped
        rx, ry = region[0], region[1]
        safe.image[y1:y2, x1:x2] = pixels[y1 - ry:y2 - ry, x1 - rx:x2 - rx]
        safe._shown.append((x1, y1, x2, y2))
        return union if whole else box

    def hide_shown(self, safe: SafeFrame, visible: Iterable[np.ndarray]) -> SafeFrame:
        """Anonymize again, in a frame held back, the faces `visible` in it and every region `reveal` showed in it
        (the person left the facebank meanwhile). The regions as they were shown, each covered whole: a settings
        change since (margin, detect_width) made this anonymizer's regions of the same boxes smaller."""
        boxes = [np.asarray(b, np.float32) for b in visible]
        boxes += [np.asarray(r, np.float32) for r in safe._shown]  # grown by the margin, so covered to its edges
        safe._shown = []
        return self.backfill(safe, boxes) if boxes else safe

    @staticmethod
    def seal(safe: SafeFrame) -> SafeFrame:
        """The frame as it is sent: the originals it kept for `reveal` dropped."""
        safe._originals, safe._anonymized, safe._shown = {}, [], []
        return safe

    def _found_regions(self, boxes: Iterable[np.ndarray], width: int, height: int) -> Iterable[Region]:
        """A face found this frame comes twice, at its track's box and at its raw detection (nearly the same box:
        median IoU 0.99 on the 1080p dev clip), and was anonymized twice: half the anonymizer's time. Each such
        pair is now one region over both boxes, worked as two passes would (`passes` 2); a small face keeps its
        two real passes (`PAIR_MIN_SIZE`). Mosaic keeps its two real passes: one pass of it over a pair's union
        was not measured."""
        boxes = [np.asarray(b, np.float32) for b in boxes]
        if self.mode == "mosaic":
            yield from self._regions(boxes, width, height, self.margin)
            return
        for box, passes in _pair_up(boxes):
            region = self._grow(box, width, height, self.margin)
            if region is not None:
                yield region._replace(passes=passes)

    def backfill(self, safe: SafeFrame, boxes: Iterable[np.ndarray], keep: Iterable[np.ndarray] = ()) -> SafeFrame:
        """Anonymize more boxes on a frame already anonymized (engine/stages/lookahead.py: a face found later
        is hidden in the frames before it too). `keep`, the faces visible in that frame, stay as they were:
        a neighbour's backfill must not blur the streamer. Done on the CPU copy, also behind a device."""
        frame = safe.image
        height, width = frame.shape[:2]
        saved = [(r.clipped, frame[r.clipped[1]:r.clipped[3], r.clipped[0]:r.clipped[2]].copy())
                 for r in self._regions(keep, width, height, 0.0)]
        boxes = [np.asarray(b, np.float32) for b in boxes]
        if safe._originals:
            safe._anonymized += self._anonymized_regions(boxes, False, width, height)  # a face shown later: its box
        for region in self._regions(boxes, width, height, self.margin):
            # A backfill is a guess (a face carried back along its velocity, grown each frame back): covered as a
            # lost face's guess is, its fade no deeper than a 256 px region's, all of its box covered.
            self._cover_region(frame, region)
        for (x1, y1, x2, y2), pixels in saved:  # pixels of the anonymized frame: nothing raw comes back
            frame[y1:y2, x1:x2] = pixels
        return safe

    def _regions(self, boxes: Iterable[np.ndarray], width: int, height: int,
                 margin: float) -> Iterable[Region]:
        for box in boxes:
            region = self._grow(box, width, height, margin)
            if region is not None:
                yield region

    def whole(self, frame: np.ndarray, index: int) -> SafeFrame:
        """The whole frame made unrecognisable: panic, pause, or a detector that failed."""
        height, width = frame.shape[:2]
        small = cv2.resize(frame, whole_frame_blocks(width, height), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), 1.5)
        frame[:] = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        return SafeFrame(frame, index, True, _TOKEN)

    def _margin_floor(self, width: int, height: int) -> float:
        """The margin's floor in the pixels of a width x height frame: MARGIN_FLOOR_NETWORK_PX at its main pass's
        scale."""
        if self._floor[:2] != (width, height):
            scale = area_scale(width, height, self.detect_width) if self.detect_width > 0 else 0.0
            self._floor = (width, height, MARGIN_FLOOR_NETWORK_PX / scale if scale > 0 else 0.0)
        return self._floor[2]

    def _grow(self, box: np.ndarray, width: int, height: int, margin: float) -> Region | None:
        x1, y1, x2, y2 = (float(v) for v in box)
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        if margin > 0:  # a face's box (not a kept face's, grown by 0): grown at least by the floor
            floor = self._margin_floor(width, height)
            mx, my = max(mx, floor), max(my, floor)
        grown = (int(x1 - mx), int(y1 - my), int(np.ceil(x2 + mx)), int(np.ceil(y2 + my)))
        clipped = (max(0, grown[0]), max(0, grown[1]), min(width, grown[2]), min(height, grown[3]))
        if clipped[2] - clipped[0] < 2 or clipped[3] - clipped[1] < 2:
            return None
        return Region(clipped, grown)

    def _cover_region(self, frame: np.ndarray, region: Region) -> None:
        """A guess's region, or a large found face's box region: covered like a face's, but its fade is the box
        template's edge at the scale of a region at most FADE_REGION_PX wide. A guess (a lost track's growing box, a
        weak box grown by its margin) can be 600-1,660 px wide after a shot cut, and a fade a sixth of that wide was
        most of its cost (up to 15 such guesses took 21-24 ms of a live frame). The fade stays soft: a hard edge
        crossing a neighbour's face box draws new detail there, and score_video.py counted a fully blurred 30 px
        crowd face visible (0.80). `passes` 2 leaves (1 - alpha)^2 of the original, as `_soft_mask` does."""
        x1, y1, x2, y2 = region.clipped  # always the box's profile: an ellipse's guess covers its whole box
        gx1, gy1, gx2, gy2 = region.grown
        roi = frame[y1:y2, x1:x2]
        across = _edge_profile(gx2 - gx1)[x1 - gx1: x2 - gx1]
        down = _edge_profile(gy2 - gy1)[y1 - gy1: y2 - gy1]
        (ax1, ax2), (ay1, ay2) = _opaque_span(across), _opaque_span(down)
        band = _band((ax1, ay1, ax2, ay2), roi.shape[0], roi.shape[1])
        originals = [roi[rows, cols].copy() for rows, cols in band]
        _into(roi, self._cover(roi, out=roi, passes=region.passes))
        for (rows, cols), original in zip(band, originals, strict=True):
            weight, strip = np.outer(down[rows], across[cols]), roi[rows, cols]
            if region.passes > 1:
                weight = 1.0 - (1.0 - weight) ** region.passes
            _into(strip, cv2.blendLinear(strip, original, weight, 1.0 - weight, dst=strip))

    def _anonymize_region(self, frame: np.ndarray, region: Region) -> None:
        x1, y1, x2, y2 = region.clipped
        gx1, gy1, gx2, gy2 = region.grown
        if self.shape == "box" and max(gx2 - gx1, gy2 - gy1) > FADE_REGION_PX:
            # A close face's fade stops deepening at FADE_REGION_PX's: a sixth of a 1,050 px region each side was 57 %
            # of it to blend (a 700 px face took 5.4 ms, 1.6 now). More of its margin is opaque: never less hidden.
            self._cover_region(frame, region)
            return
        roi = frame[y1:y2, x1:x2]  # a view: the cover and the blend are written straight into the frame
        # A soft edge: a hard one draws a new sharp contour where the face outline was. The fade is laid over
        # the whole grown region and then cut to the frame: a face at the frame's edge is covered up to it.
        alpha = cv2.resize(_soft_mask(self.shape, passes=region.passes), (gx2 - gx1, gy2 - gy1),
                           interpolation=cv2.INTER_LINEAR)
        alpha = alpha[y1 - gy1: y2 - gy1, x1 - gx1: x2 - gx1]
        # Where the template is opaque the blend equals the cover, so only the fading band keeps its original
        # pixels to blend with. Everything is done in place, on views of the frame: a 750 px face's region
        # took 5.5 ms when the cover, the interior copy and contiguous copies of each strip were separate arrays.
        band = _band(_opaque_part(self.shape, region), roi.shape[0], roi.shape[1])
        originals = [roi[rows, cols].copy() for rows, cols in band]
        _into(roi, self._cover(roi, out=roi, passes=region.passes))
        for (rows, cols), original in zip(band, originals, strict=True):
            weight, strip = alpha[rows, cols], roi[rows, cols]
            _into(strip, cv2.blendLinear(strip, original, weight, 1.0 - weight, dst=strip))

    def _cover(self, roi: np.ndarray, out: np.ndarray | None = None, passes: int = 1,
               size: int | None = None) -> np.ndarray:
        """What replaces the region: into `out` when given (the region itself: it is read before it is written).
        `passes` 2 blurs twice: a second pass would have blurred the first one's blurred thumbnail again. `size`: the
        blur of a region this large, for a roi holding many (a crowd's); the region's own size by default."""
        h, w = roi.shape[:2]
        if self.mode == "fill":
            if out is None:
                return _filled(roi)
            out[:] = roi.mean(axis=(0, 1)).astype(roi.dtype)
            return out
        if self.mode == "mosaic":
            blocks = max(2, round(12 - 9 * self.strength))  # blocks across the (grown) region
            bw, bh = blocks, max(1, round(blocks * h / w))
            small = _area_down(roi, bw, bh)
            # Soften the block edges at 8 px a block, then scale up: the same picture as blurring at full size
            # (mean difference 0.07 grey levels) for 0.5 ms instead of 6 ms on a 300x400 region.
            blocky = cv2.resize(small, (bw * 8, bh * 8), interpolation=cv2.INTER_NEAREST)
            blocky = cv2.GaussianBlur(blocky, (0, 0), MOSAIC_EDGE_SOFTENING * 8)
            return cv2.resize(blocky, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)
        # Gaussian blur with sigma proportional to the face, run on a copy downscaled so sigma is ~2 px.
        sigma = (size or max(w, h)) * (0.08 + 0.32 * self.strength)
        factor = max(1.0, sigma / 2.0)
        sw, sh = max(1, round(w / factor)), max(1, round(h / factor))
        small = _area_down(roi, sw, sh)
        for _ in range(passes):
            small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)


# A crowd (`_cover_crowd`): where at least BULK_MIN_REGIONS regions are covered at once, they are covered together,
# class by class of size (their grown long side up to each bound), each class blurred as a region of its bound would be:
# ~5 ms for a 1080p frame against ~0.2 ms a region one by one. Until stop 54 a class of fewer stayed one by one, and so
# did every region over 512 px: in a live panning crowd those were a lost face's growing guesses, ~21 a frame of
# 350-1,000 px (3 megapixels of fades a frame), and WIDER Parade's anonymizing took 24 CPU ms a frame, 14 all together;
# live it went from 15 to 20-24 fps (docs/measurements.md, stop 54).
BULK_MIN_REGIONS = 32
BULK_CLASSES = (64, 128, 256, 512)
# A guess's fade (`_cover_region`), and a found face's in a box wider than this, is the box template's as for a
# region this wide at most: 4 px a template cell, a fade ~44 px deep, however large the region.
FADE_REGION_PX = 256
OPAQUE_ALPHA = 0.9999  # from here a pixel is the cover: what is left of the original is under 0.03 of a grey level


@lru_cache(maxsize=512)
def _edge_profile(length: int) -> np.ndarray:
    """Alpha along one side of a guess's region `length` px long: the box template's profile through its centre at
    each end, scaled as for a region of min(length, FADE_REGION_PX) px, opaque in between."""
    template = _soft_mask("box")
    half = template[template.shape[0] // 2, : template.shape[0] // 2].astype(np.float64)
    scale = min(length, FADE_REGION_PX) / template.shape[0]  # px a template cell
    centres = np.arange(length) + 0.5
    cells = np.minimum(centres, length - centres) / scale - 0.5  # where each pixel falls on the template
    profile = np.interp(cells, np.arange(len(half)), half)
    profile[cells >= len(half) - 1] = 1.0
    profile = profile.astype(np.float32)
    profile.setflags(write=False)  # cached: shared by every region of this length
    return profile


def _opaque_span(profile: np.ndarray) -> tuple[int, int]:
    """First and one-past-last index of the run where `profile` is opaque (empty when it never is)."""
    inside = np.flatnonzero(profile >= OPAQUE_ALPHA)
    return (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)


def _area_down(roi: np.ndarray, width: int, height: int) -> np.ndarray:
    """`roi` averaged down to width x height by whole blocks of pixels: OpenCV's integer-factor path, 4x faster
    than a fractional INTER_AREA on a large face (3.3 -> 0.75 ms, 1050x1080 to 7x7). The last pixels past the
    whole blocks (fewer than `width` columns, `height` rows) are left out of the averages."""
    h, w = roi.shape[:2]
    kx, ky = max(1, w // max(width, 1)), max(1, h // max(height, 1))
    if width * kx > w or height * ky > h:  # a block smaller than a pixel: plain resize
        return cv2.resize(roi, (width, height), interpolation=cv2.INTER_AREA)
    if width * kx * height * ky >= BLOCK_SUM_MIN_PX and height <= BLOCK_SUM_MAX_ROWS:
        return _block_means(roi[: height * ky, : width * kx], width, height)
    return cv2.resize(roi[: height * ky, : width * kx], (width, height), interpolation=cv2.INTER_AREA)


# A large region averaged down to a few blocks: summing rows with cv2.reduce (vectorised, a view of the frame)
# takes a quarter of the time of INTER_AREA's integer path, whose per-pixel table is not vectorised beyond 2x
# (a 1200x1080 face to 5x5: 1.08 -> 0.36 ms). The same block means, but for a mean exactly on .5, which OpenCV rounds
# either way depending on the block's size (62.5 -> 63 for 117x114 blocks, -> 62 for 384x216): one grey level in a
# cover's few-pixel thumbnail, 1 of 352 calls on a selfie clip. Small regions or many block rows (even at 32):
# INTER_AREA.
BLOCK_SUM_MIN_PX = 100_000
BLOCK_SUM_MAX_ROWS = 24


def _block_means(block: np.ndarray, width: int, height: int) -> np.ndarray:
    """`block` (height x width whole blocks of pixels) averaged per block: the exact sum, as a float32, times the
    float32 1 / area, rounded half to even (INTER_AREA's bytes but for some exact .5 means: BLOCK_SUM_MIN_PX)."""
    channels = block.shape[2] if block.ndim == 3 else 1
    kx, ky = block.shape[1] // width, block.shape[0] // height
    rows = block.reshape(height, ky, width * kx * channels)  # a view: each block row's pixel rows
    sums = np.empty((height, width * kx * channels), np.int32)  # exact (float32 is exact only to 2^24; CV_64F is
    for i in range(height):                                       # 5x slower here)
        sums[i] = cv2.reduce(rows[i], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
    blocks = sums.reshape(height, width, kx, channels).sum(axis=2, dtype=np.int64)  # a few thousand values
    means = blocks.astype(np.float32) * np.float32(1.0 / (kx * ky))
    means = np.rint(means).astype(block.dtype)
    return means if block.ndim == 3 else means[..., 0]


# Two boxes overlapping this much are one face given twice (a track's box and the detection matched to it).
SAME_FACE_IOU = 0.5
# Faces smaller than this (the union's longer side, px) keep two real passes. One union pass covers a face within
# ~0.025 visibility of two passes either way; on a small face cut by the frame's edge, at 0.49 with two passes,
# that tipped it to 0.52, visible (linzaer 25, track 267, frame 23). Two passes on a small face cost little.
PAIR_MIN_SIZE = 48.0


def _intersects(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _pair_up(boxes: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
    """Boxes with the passes each needs: a pair of one face's boxes becomes their union, worked twice over; the
    union holds both boxes, and its region (grown by the margin of its larger size) both regions, each box
    lying as deep inside its fade as inside its own. Pairs are taken best overlap first; a pair whose union is
    under `PAIR_MIN_SIZE` stays two boxes of one pass each."""
    n = len(boxes)
    if n < 2:
        return [(b, 1) for b in boxes]
    stacked = np.stack(boxes)
    ious = _iou_matrix(stacked)
    rows, cols = np.nonzero(np.triu(ious, 1) >= SAME_FACE_IOU)  # a crowd has ~600 boxes: sort only the pairs
    used: set[int] = set()
    out: list[tuple[np.ndarray, int]] = []
    for k in np.argsort(-ious[rows, cols], kind="stable"):
        i, j = int(rows[k]), int(cols[k])
        if i in used or j in used:
            continue
        union = np.concatenate([np.minimum(stacked[i, :2], stacked[j, :2]), np.maximum(stacked[i, 2:], stacked[j, 2:])])
        if max(union[2] - union[0], union[3] - union[1]) < PAIR_MIN_SIZE:
            continue  # both boxes stay, each its own pass (fail closed: see PAIR_MIN_SIZE)
        used |= {i, j}
        out.append((union, 2))
    return out + [(boxes[k], 1) for k in range(n) if k not in used]


def _iou_matrix(b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)


def _long_side(region: Region) -> int:
    return max(region.grown[2] - region.grown[0], region.grown[3] - region.grown[1])


def _into(view: np.ndarray, result: np.ndarray) -> None:
    """OpenCV writes into a `dst` view of the frame and returns that view; should it ever return a new array
    instead, the frame must still get the pixels (fail closed)."""
    if result is not view:
        view[:] = result


def _band(opaque: tuple[int, int, int, int], height: int, width: int) -> list[tuple[slice, slice]]:
    """The strips of a height x width region around its opaque rectangle (region coordinates): where the
    template fades and the cover must be blended. The whole region when there is no opaque part."""
    ix1, iy1, ix2, iy2 = opaque
    if ix2 - ix1 < 2 or iy2 - iy1 < 2:
        return [(slice(0, height), slice(0, width))]
    strips = [(slice(0, iy1), slice(0, width)), (slice(iy2, height), slice(0, width)),
              (slice(iy1, iy2), slice(0, ix1)), (slice(iy1, iy2), slice(ix2, width))]
    return [(rows, cols) for rows, cols in strips if rows.stop > rows.start and cols.stop > cols.start]


def _opaque_part(shape: str, region: Region) -> tuple[int, int, int, int]:
    """The rectangle of the clipped region (its own coordinates) where the resized template is opaque: there
    the blend equals the cover. Linear resizing reads template cells i and i + 1 for an output pixel whose
    source position lies between them, so both must be inside the opaque run."""
    lo, hi = _opaque_run(shape, region.passes)
    (x1, y1, x2, y2), (gx1, gy1, gx2, gy2) = region.clipped, region.grown
    size = _soft_mask(shape).shape[0]

    def span(g1: int, g2: int, c1: int, c2: int) -> tuple[int, int]:
        scale = (g2 - g1) / size  # output pixels per template cell
        # output pixel x reads cells floor(sx) and floor(sx) + 1, sx = (x + 0.5) / scale - 0.5: both in [lo, hi]
        first = int(np.ceil((lo + 0.5) * scale - 0.5)) + 1  # one pixel inside, for rounding
        last = int(np.ceil((hi + 0.5) * scale - 0.5)) - 2
        return max(0, g1 + first - c1), max(0, min(c2, g1 + last + 1) - c1)
    ix1, ix2 = span(gx1, gx2, x1, x2)
    iy1, iy2 = span(gy1, gy2, y1, y2)
    return ix1, iy1, ix2, iy2


@lru_cache(maxsize=8)
def _opaque_run(shape: str, passes: int = 1) -> tuple[int, int]:
    """First and last template cell of the largest opaque square around the centre (alpha >= 0.9999 in each
    cell); hi < lo when there is none."""
    mask = _soft_mask(shape, passes=passes)
    centre, best = mask.shape[0] // 2, 0
    for half in range(1, centre + 1):
        lo, hi = centre - half, centre + half - 1
        if mask[lo:hi + 1, lo:hi + 1].min() < 0.9999:
            break
        best = half
    return centre - best, centre + best - 1


def _filled(roi: np.ndarray) -> np.ndarray:
    """A solid patch in the region's mean colour: no detail at all, and less jarring than black."""
    return np.broadcast_to(roi.mean(axis=(0, 1)).astype(roi.dtype), roi.shape).copy()


# Alpha from which a face's corner counts as covered when an ellipse region is sized.
COVERED_ALPHA = 0.9


def region_margin(shape: str, margin: float) -> float:
    """How far each face box is grown before it is anonymized.

    A box region covers the face box and `margin` around it. An ellipse inscribed in the same region would
    leave the face box's corners out (measured on the dev clip: 1.5 % of bystander face-frames visible at
    margin 0.25, 25 % at margin 0), so an ellipse grows by what its opaque part needs to cover the whole face
    box, and then by `margin` on top of that.
    """
    if shape != "ellipse":
        return margin
    return margin + (_ellipse_cover() - 1.0) / 2


@lru_cache(maxsize=1)
def _ellipse_cover() -> float:
    """How many times wider than a face box the ellipse region must be for the box's corners to be opaque."""
    mask = _soft_mask("ellipse")
    size = mask.shape[0]
    centre = (size - 1) / 2
    for factor in np.arange(1.0, 3.0, 0.01):
        offset = 0.5 * size / factor  # the face box's corner, from the centre along each axis
        if cv2.getRectSubPix(mask, (1, 1), (centre + offset, centre + offset))[0, 0] >= COVERED_ALPHA:
            return float(factor)
    raise AssertionError("the ellipse template cannot cover a box")  # the template is fixed: never reached


@lru_cache(maxsize=8)
def _soft_mask(shape: str, size: int = 64, passes: int = 1) -> np.ndarray:
    """Alpha template: 1 over the face, fading to 0 across the outer ~6 % (the margin zone). Resized per
    region, which is far cheaper than blurring a mask at every region's size. `passes` 2: what two passes
    leave of the original is (1 - alpha)^2, so one pass with 1 - (1 - alpha)^2 leaves the same."""
    if passes > 1:
        return (1.0 - (1.0 - _soft_mask(shape, size)) ** passes).astype(np.float32)
    pad = max(1, round(0.06 * size))
    mask = np.zeros((size, size), np.float32)
    if shape == "ellipse":
        cv2.ellipse(mask, (size // 2, size // 2), (size // 2 - pad, size // 2 - pad), 0, 0, 360, 1.0, -1)
    else:
        mask[pad: size - pad, pad: size - pad] = 1.0
    return cv2.GaussianBlur(mask, (0, 0), pad / 2)
