"""Pathfinder (Long Range Arena): are the two circle markers joined by one dashed contour?

An image holds two target contours and a few shorter distractor contours, all kept apart from one
another. Label 1: both markers sit on the ends of the same target contour; label 0: one marker on
an end of each. Contours are chains of `contour_length` short dashes (paddles) whose direction
turns a little at each step (6, 9, 14 paddles = LRA's curv_baseline, curv_contour_length_9, _14).

Layout (LRA release): `pathfinder32/<difficulty>/imgs/<n>/sample_<i>.png` (8-bit greyscale,
32x32) and `pathfinder32/<difficulty>/metadata/<n>.npy`, a text file despite its suffix, one line
per image: `imgs/<n> sample_<i>.png <i> <label> <contour_length> <distractor_length>
<n_distractors>` (the loader reads the first four fields). The loader flattens an image to
L = 1024 grey values in [0, 1] (x `(n L 1)`), skips empty images and, as the release has no split,
puts ~10 % of images in test by a hash of their path and carves val from the rest.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from search_spaces.errors import DataError
from workers.data.tasks import (
    ArraySplit,
    TaskSplits,
    check_options,
    fit_len,
    test_mask,
    int_option,
    require_dir,
    resolve_len,
    split_sizes,
    split_val,
    task_info,
)

DIFFICULTY = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}
PER_FOLDER = 1000  # images per imgs/<n> folder and metadata/<n>.npy, as in the release
TEST_FRACTION = 0.1
DEFAULT_SIZE = {"train": 160000, "val": 20000, "test": 20000}
DEFAULTS = {"resolution": 32, "contour_length": 14, "n_distractors": 4}
TURN = 0.45  # max change of direction between paddles (radians)
DASH = 0.6  # drawn share of each paddle step; the rest is the gap between dashes


# --- drawing --------------------------------------------------------------------------------------


def _contour(rng: np.random.Generator, n_paddles: int, R: int, step: float, margin: float) -> np.ndarray | None:
    """Vertices `(n_paddles+1, 2)` of a smooth random walk inside the image, or None if it left."""
    r0, c0 = rng.uniform(margin, R - 1 - margin, size=2)
    angle = float(rng.uniform(0, 2 * np.pi))
    turns = rng.uniform(-TURN, TURN, size=(n_paddles, 8))  # (P 8) candidate turns per paddle
    lo, hi = margin, R - 1 - margin
    pts = [(r0, c0)]
    for k in range(n_paddles):
        for j in range(8):  # turn towards the inside when the next vertex would leave the image
            a = angle + turns[k, j]
            r, c = pts[-1][0] + step * math.sin(a), pts[-1][1] + step * math.cos(a)
            if lo <= r <= hi and lo <= c <= hi:
                break
            angle += math.pi / 4
        else:
            return None
        pts.append((r, c))
        angle = a
    return np.asarray(pts)  # (P+1 2) as (row, col)


def _dash_pixels(pts: np.ndarray, R: int, dash: float) -> np.ndarray:
    """Boolean `(R R)` mask of the paddles: the first `dash` share of each segment."""
    t = np.linspace(0.0, dash, 8)  # (T,)
    seg = pts[:-1, None, :] + t[None, :, None] * (pts[1:, None, :] - pts[:-1, None, :])  # (P T 2)
    ij = np.clip(np.rint(seg.reshape(-1, 2)).astype(int), 0, R - 1)  # (P*T 2)
    mask = np.zeros((R, R), dtype=bool)  # (R R)
    mask[ij[:, 0], ij[:, 1]] = True
    return mask


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Square dilation of a boolean `(R R)` mask by r pixels."""
    out = mask.copy()
    for _ in range(r):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


@lru_cache(maxsize=8)
def _grid(R: int) -> np.ndarray:
    return np.mgrid[0:R, 0:R]  # (2 R R)


def _disk(center: np.ndarray, R: int, radius: float) -> np.ndarray:
    rr, cc = _grid(R)  # (R R) each
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2  # (R R)


def draw_sample(rng: np.random.Generator, label: int, *, R: int = 32, contour_length: int = 14,
                n_distractors: int = 4) -> np.ndarray:
    """One uint8 `(R R)` image whose markers are connected iff `label` == 1."""
    scale = R / 32.0
    step, radius, margin = max(2.4 * scale, 1.6), max(2.0 * scale, 1.5), max(2.0 * scale, 1.5)  # markers >= 3x3
    gap = max(1, int(round(2 * scale)))
    for _ in range(200):
        occupied = np.zeros((R, R), dtype=bool)  # (R R)
        targets = []
        for _ in range(2):
            keep_out = _dilate(occupied, gap)  # (R R)
            for _ in range(50):
                pts = _contour(rng, contour_length, R, step, margin)
                if pts is None or np.hypot(*(pts[0] - pts[-1])) < 3 * radius:
                    continue  # markers of one contour must stay apart
                m = _dash_pixels(pts, R, 1.0) | _disk(pts[0], R, radius) | _disk(pts[-1], R, radius)  # gaps too
                if not (m & keep_out).any():
                    targets.append(pts)
                    occupied |= m
                    break
        if len(targets) == 2:
            break
    else:
        raise DataError(f"Pathfinder generator could not place two contours of length {contour_length} in {R}x{R}")
    img = np.zeros((R, R), dtype=bool)  # (R R)
    for pts in targets:
        img |= _dash_pixels(pts, R, DASH)
    a, b = targets
    ends = (a[0], a[-1]) if label == 1 else (a[0], b[0] if rng.integers(2) == 0 else b[-1])
    markers = _disk(ends[0], R, radius) | _disk(ends[1], R, radius)
    d_len = max(2, contour_length // 3)
    for _ in range(n_distractors):
        keep_out = _dilate(occupied, 1)  # (R R)
        for _ in range(10):
            pts = _contour(rng, d_len, R, step, margin)
            if pts is None:
                continue
            m = _dash_pixels(pts, R, 1.0)  # (R R) the solid path: no contour crosses another's gaps
            if not (m & keep_out).any():
                img |= _dash_pixels(pts, R, DASH)
                occupied |= m
                break
    return np.where(img | markers, 255, 0).astype(np.uint8)  # (R R)


# --- files ----------------------------------------------------------------------------------------


def generate(out: Path, *, size=None, seed: int = 0, options=None) -> None:
    """Write `pathfinder<R>/<difficulty>/{imgs,metadata}` into `out`, labels balanced.

    The release has no split, so the image count is train + val + test; the loader splits.
    """
    from PIL import Image

    opts = check_options("pathfinder", options)
    R = int_option("pathfinder", opts, "resolution", DEFAULTS["resolution"], lo=16, hi=512)
    cl = int_option("pathfinder", opts, "contour_length", DEFAULTS["contour_length"])
    if cl not in DIFFICULTY:
        raise DataError(f"generate option contour_length={cl} for pathfinder must be one of 6, 9, 14")
    n_distractors = int_option("pathfinder", opts, "n_distractors", DEFAULTS["n_distractors"], lo=0, hi=100)
    sizes = split_sizes("pathfinder", size, DEFAULT_SIZE)
    n = sum(sizes.values())
    root = out / f"pathfinder{R}" / DIFFICULTY[cl]
    (root / "metadata").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)  # (n,) balanced
    for folder in range(0, (n + PER_FOLDER - 1) // PER_FOLDER):
        (root / "imgs" / str(folder)).mkdir(parents=True)
        lines = []
        for i in range(folder * PER_FOLDER, min(n, (folder + 1) * PER_FOLDER)):
            img = draw_sample(rng, int(labels[i]), R=R, contour_length=cl, n_distractors=n_distractors)
            name = f"sample_{i - folder * PER_FOLDER}.png"
            Image.fromarray(img, mode="L").save(root / "imgs" / str(folder) / name)
            lines.append(f"imgs/{folder} {name} {i - folder * PER_FOLDER} {int(labels[i])} {cl} "
                         f"{max(2, cl // 3)} {n_distractors}")
        (root / "metadata" / f"{folder}.npy").write_text("\n".join(lines) + "\n")


def _stem_key(p: Path):
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


def find_root(data_dir: Path) -> tuple[Path, int]:
    """The difficulty folder holding `metadata/` and the image side R from `pathfinder<R>`.

    `data_dir` may be a difficulty folder, a `pathfinder<R>` folder or a folder holding one; when
    several difficulties exist, curv_contour_length_14 (LRA's Pathfinder task) is taken.
    """
    root = require_dir(Path(data_dir), "pathfinder32/<difficulty>/metadata/*.npy")

    def side(p: Path) -> int:
        for part in (p.name, p.parent.name):
            m = re.fullmatch(r"pathfinder(\d+)", part)
            if m:
                return int(m.group(1))
        return 32

    if (root / "metadata").is_dir():
        return root, side(root)
    bases = [root] if re.fullmatch(r"pathfinder\d+", root.name) else []
    bases += sorted(root.glob("pathfinder*"), key=lambda p: (p.name != "pathfinder32", p.name))
    for base in bases:
        found = [base / d for d in reversed(DIFFICULTY.values()) if (base / d / "metadata").is_dir()]
        if found:
            return found[0], side(found[0])
    raise DataError(f"Pathfinder folder {root / 'pathfinder32' / DIFFICULTY[14] / 'metadata'} not found")


def read_image(path: Path, R: int) -> np.ndarray:
    """Grey values in [0, 1] of an 8-bit greyscale R x R PNG, `(R*R,)` float32."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode != "L" or im.size != (R, R):
                raise DataError(f"Pathfinder image {path} is {im.mode} {im.size[0]}x{im.size[1]}; expected greyscale (L) {R}x{R}")
            a = np.asarray(im, dtype=np.uint8)  # (R R)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"Pathfinder image {path} not found") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"Pathfinder image {path} is not a readable PNG ({type(exc).__name__})") from None
    if a.shape != (R, R):
        raise DataError(f"Pathfinder image {path} decodes to shape {a.shape}; expected ({R}, {R})")
    return a.reshape(-1).astype(np.float32) / 255.0  # (R*R,)


def read_metadata(root: Path) -> list[tuple[str, int]]:
    """(relative image path, label) of every metadata line under `root/metadata`."""
    files = sorted((root / "metadata").glob("*.npy"), key=_stem_key)
    if not files:
        raise DataError(f"Pathfinder folder {root / 'metadata'} holds no <n>.npy metadata files")
    items = []
    for f in files:
        try:
            text = f.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"Pathfinder metadata {f} is not a text file") from None
        for row, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise DataError(f"Pathfinder metadata {f} row {row}: expected '<subpath> <file> <index> <label 0|1> ...'")
            rel = f"{fields[0]}/{fields[1]}"
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise DataError(f"Pathfinder metadata {f} row {row}: image path {rel!r} leaves the folder")
            items.append((rel, int(fields[3])))
    return items


def load(data_dir, *, max_len=None, val_fraction: float = 0.2, seed: int = 0) -> TaskSplits:
    """Load Pathfinder from `data_dir` as x `(n L 1)` grey values in [0, 1]."""
    info = task_info("pathfinder")
    root, R = find_root(Path(data_dir))
    L = resolve_len(info, max_len, R * R)  # None: the whole R x R image
    xs, ys, keys = [], [], []
    for rel, label in read_metadata(root):
        pixels = read_image(root / rel, R)  # (R*R,)
        if not pixels.any():
            continue  # the release holds a few empty images
        xs.append(pixels)
        ys.append(label)
        keys.append(rel)
    if not xs:
        raise DataError(f"Pathfinder folder {root} holds no non-empty images")
    x = fit_len(np.stack(xs)[:, :, None], L)  # (n L 1)
    lengths = np.full(len(xs), min(L, R * R), dtype=np.int64)  # (n,)
    y = np.asarray(ys, dtype=np.int64)  # (n,)
    test = test_mask(keys, TEST_FRACTION)  # (n,)
    every = ArraySplit(x, lengths, y, np.full(len(xs), R * R, dtype=np.int64))
    train, val = split_val(every.take(np.flatnonzero(~test)), val_fraction, seed)
    return TaskSplits(train, val, every.take(np.flatnonzero(test)), info)
