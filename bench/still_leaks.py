"""Photos: the corpus's 13 photo clips' first frames, each as a PNG through `blurcast run P.png -o out.png
--no-facebank`, with the anonymizer's margin floor (`MARGIN_FLOOR_NETWORK_PX`) at each value given; faces visible
by the scorer's measure (`face_visibility` >= 0.5, faces of 10 px and more, `ignore` left out).

    python bench/still_leaks.py 0 8
    python bench/still_leaks.py now: wide:yunet.STILL_ENLARGED_MAX_PX=inf    # or variants (bench/photo_leaks.py)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import photo_leaks, suite  # noqa: E402
from evaluation.video import face_visibility  # noqa: E402

RUN = ("import sys\nfrom engine.stages import anonymize\nanonymize.MARGIN_FLOOR_NETWORK_PX = {floor}\n"
       "from blurcast.cli import main\nsys.exit(main(['run', {src!r}, '-o', {out!r}, '--no-facebank']))")


def run(setting: str, src: Path, out: Path) -> None:
    """`setting`: a margin floor, or a variant `LABEL:MODULE.CONST=VALUE,...` as bench/photo_leaks.py takes."""
    if ":" in setting:
        photo_leaks.blurcast(src, out, out.parent / "home", setting.partition(":")[2])
        return
    code = RUN.format(floor=float(setting), src=str(src), out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO)


def visible(frame, out, faces: list[dict]) -> tuple[int, int]:
    """(faces visible, faces scored)."""
    grey_in, grey_out = (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) for img in (frame, out))
    shown = scored = 0
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        x1, y1 = max(0, x1), max(0, y1)
        if x2 - x1 < 10 or y2 - y1 < 10:
            continue
        scored += 1
        shown += face_visibility(grey_in[y1:y2, x1:x2], grey_out[y1:y2, x1:x2]) >= 0.5
    return shown, scored


def main() -> int:
    floors = sys.argv[1:] or ["8"]
    tmp = Path(tempfile.mkdtemp(prefix="blurcast-stills-"))
    totals, faces = dict.fromkeys(floors, 0), 0
    for clip in suite.corpus(["wider", "linzaer"]):
        ok, frame = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE))).read()
        if not ok:
            raise SystemExit(f"cannot read {clip.name}")
        src = tmp / f"{clip.name[:40]}.png"
        cv2.imwrite(str(src), frame)
        truth = [f for f in json.loads(clip.gt.read_text())["faces"] if f["frame"] == 0 and not f["ignore"]]
        row = []
        for floor in floors:
            out = tmp / "out.png"
            run(floor, src, out)
            shown, scored = visible(frame, cv2.imread(str(out)), truth)
            totals[floor] += shown
            row.append(shown)
        faces += scored
        print(f"{clip.name[:40]:40} {scored:4} faces, visible {row}", flush=True)
    print(f"{faces} faces; visible by floor: {totals}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
