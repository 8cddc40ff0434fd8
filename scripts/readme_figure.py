"""Make docs/after.png: four frames of Blurcast's output on the dev clip with the performer enrolled.

    blurcast eval CLIP --gt GT --allow PHOTO -o /tmp/allow.mp4 && python scripts/readme_figure.py /tmp/allow.mp4

Only the anonymized output is used: bystanders' raw faces never enter the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

FRAMES = (5, 100, 170, 228)


def main(video: str, out: str = "docs/after.png") -> None:
    cap = cv2.VideoCapture(video)
    picked, index = {}, 0
    while len(picked) < len(FRAMES):
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"{video} has fewer than {max(FRAMES) + 1} frames")
        if index in FRAMES:
            picked[index] = cv2.resize(frame, (480, 270), interpolation=cv2.INTER_AREA)
        index += 1
    tiles = [picked[i] for i in FRAMES]
    grid = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(out, grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main(*sys.argv[1:])
