"""IMDb reviews (Long Range Arena, byte level): sentiment of a review, 2 classes.

Layout (the Stanford `aclImdb` release): `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`, one
review per file; other folders (`unsup`, vocab files) are ignored. Tokens are the review's UTF-8
bytes + 1 (0 = padding, d_input 257), truncated to L (4096 by default). The release has no
validation split: `val_fraction` of train is carved out with the loader's seed.

The generator writes synthetic reviews in that layout: filler words with sentiment words mixed in,
most of the label's polarity and some of the other (noise), so the label is learnable but not
read off a single word. Ratings 7-10 for positive and 1-4 for negative, as in the release.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np

from search_spaces.errors import DataError
from workers.data.tasks import (
    TaskSplits,
    check_options,
    int_option,
    longest_of,
    require_dir,
    resolve_len,
    split_sizes,
    split_val,
    task_info,
    token_split,
)

CLASSES = ("neg", "pos")  # label 0, 1
DEFAULT_SIZE = {"train": 25000, "val": 0, "test": 25000}
DEFAULTS = {"min_words": 40, "max_words": 250}
SENTIMENT_SHARE = 0.15  # share of words that carry sentiment
NOISE = 0.2  # share of sentiment words of the opposite polarity

POSITIVE = ("great", "excellent", "wonderful", "brilliant", "moving", "superb", "delightful",
            "masterpiece", "loved", "enjoyable", "charming", "beautiful", "funny", "gripping",
            "memorable", "touching", "perfect", "stunning", "best", "fantastic")
NEGATIVE = ("awful", "boring", "terrible", "dull", "waste", "worst", "poor", "predictable",
            "disappointing", "mess", "horrible", "stupid", "bland", "annoying", "weak", "lame",
            "pointless", "tedious", "ridiculous", "bad")
NEUTRAL = ("the", "film", "movie", "story", "plot", "actor", "actors", "scene", "scenes", "director",
           "was", "is", "and", "a", "of", "to", "it", "this", "that", "with", "cast", "script",
           "ending", "character", "characters", "music", "camera", "i", "we", "saw", "watched",
           "about", "in", "on", "for", "but", "as", "its", "some", "very", "quite", "really",
           "performance", "dialogue", "time", "minutes", "screen", "sequel", "book", "version")
NAME = re.compile(r"^(\d+)_(\d+)\.txt$")


def review(rng: random.Random, label: int, n_words: int) -> str:
    """One synthetic review of `n_words` words for `label` (1 positive, 0 negative).

    About 15 % of the words carry sentiment; of those ~20 % have the other polarity (noise), but
    the label's polarity always has more, so the label is what a careful reader would say.
    """
    own, other = (POSITIVE, NEGATIVE) if label == 1 else (NEGATIVE, POSITIVE)
    n_sent = max(1, round(SENTIMENT_SHARE * n_words))
    n_other = sum(rng.random() < NOISE for _ in range(n_sent))
    n_other = min(n_other, (n_sent - 1) // 2)  # own polarity keeps the majority
    kinds = ["own"] * (n_sent - n_other) + ["other"] * n_other + ["neutral"] * max(0, n_words - n_sent)
    rng.shuffle(kinds)
    pools = {"own": own, "other": other, "neutral": NEUTRAL}
    words = [rng.choice(pools[k]) for k in kinds]
    sentences, i = [], 0
    while i < len(words):
        k = rng.randint(5, 14)
        s = " ".join(words[i:i + k])
        sentences.append(s[:1].upper() + s[1:] + rng.choice((".", ".", ".", "!", "...")))
        i += k
    text = " ".join(sentences)
    return text.replace("! ", "!<br /><br />", 1) if rng.random() < 0.3 else text


def generate(out: Path, *, size=None, seed: int = 0, options=None) -> None:
    """Write `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` into `out`, balanced classes.

    The release has no val split, so `size['val']` reviews are added to train (the loader carves
    validation from train).
    """
    opts = check_options("imdb", options)
    min_words = int_option("imdb", opts, "min_words", DEFAULTS["min_words"], lo=1)
    max_words = int_option("imdb", opts, "max_words", DEFAULTS["max_words"], lo=min_words)
    sizes = split_sizes("imdb", size, DEFAULT_SIZE)
    rng = random.Random(seed)
    for split, n in (("train", sizes["train"] + sizes["val"]), ("test", sizes["test"])):
        for cls in CLASSES:
            (out / "aclImdb" / split / cls).mkdir(parents=True)
        for i in range(n):
            label = i % 2 if n > 1 else rng.randrange(2)
            rating = rng.randint(7, 10) if label == 1 else rng.randint(1, 4)
            text = review(rng, label, rng.randint(min_words, max_words))
            path = out / "aclImdb" / split / CLASSES[label] / f"{i // 2}_{rating}.txt"
            path.write_text(text, encoding="utf-8")


def _sort_key(path: Path):
    m = NAME.match(path.name)
    return (0, int(m.group(1)), path.name) if m else (1, 0, path.name)


def read_split(folder: Path) -> tuple[list[np.ndarray], list[int]]:
    """Byte tokens (bytes + 1) and labels of `folder/{neg,pos}/*.txt`; empty reviews skipped."""
    seqs, labels = [], []
    for label, cls in enumerate(CLASSES):
        d = require_dir(folder / cls, f"IMDb reviews {folder.name}/{cls}/*.txt")
        for path in sorted(d.glob("*.txt"), key=_sort_key):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read IMDb review {path}: {exc.strerror or exc}") from None
            if not data:
                continue
            seqs.append(np.frombuffer(data, dtype=np.uint8).astype(np.int64) + 1)  # (l,)
            labels.append(label)
    if not seqs:
        raise DataError(f"IMDb folder {folder} holds no reviews (expected {folder}/pos/*.txt and {folder}/neg/*.txt)")
    return seqs, labels


def find_root(data_dir: Path) -> Path:
    """The `aclImdb` folder: `data_dir` itself or `data_dir/aclImdb`."""
    root = require_dir(Path(data_dir), "aclImdb/{train,test}/{pos,neg}/*.txt")
    if (root / "aclImdb").is_dir():
        return root / "aclImdb"
    if (root / "train").is_dir() or root.name == "aclImdb":
        return root
    raise DataError(f"IMDb folder {root / 'aclImdb'} not found")


def load(data_dir, *, max_len=None, val_fraction: float = 0.2, seed: int = 0) -> TaskSplits:
    """Load byte-level IMDb from `data_dir`; val carved from train with `val_fraction`, `seed`.

    L is `max_len`, or (None) the longest review over train and test."""
    info = task_info("imdb")
    root = find_root(Path(data_dir))
    read = {name: read_split(require_dir(root / name, f"IMDb {name}/pos and {name}/neg")) for name in ("train", "test")}
    L = resolve_len(info, max_len, longest_of(*(seqs for seqs, _ in read.values())))
    train, val = split_val(token_split(*read["train"], L), val_fraction, seed)
    return TaskSplits(train, val, token_split(*read["test"], L), info)
