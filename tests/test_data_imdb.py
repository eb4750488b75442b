"""IMDb: aclImdb layout, byte-level tokens, val carve-out, synthetic reviews."""

import numpy as np
import pytest

from search_spaces.errors import DataError
from workers.data import generate_task, load_task, task_info
from workers.data import imdb


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_task("imdb", tmp_path_factory.mktemp("im") / "d", size={"train": 30, "val": 10, "test": 20},
                         seed=2, options={"min_words": 10, "max_words": 40})


def test_layout_file_names_and_ratings(demo):
    names = sorted((demo / "aclImdb" / "train" / "pos").glob("*.txt"))
    assert len(names) == 20
    neg = sorted((demo / "aclImdb" / "test" / "neg").glob("*.txt"))
    assert len(neg) == 10
    for p in names:
        assert 7 <= int(p.stem.split("_")[1]) <= 10
    for p in neg:
        assert 1 <= int(p.stem.split("_")[1]) <= 4


def test_byte_tokens_and_lengths(demo):
    s = load_task("imdb", demo, max_len=64, val_fraction=0.25, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 20)
    assert s.train.x.shape == (30, 64) and s.train.x.dtype == np.int64
    assert s.train.x.max() < task_info("imdb").d_input
    full = load_task("imdb", demo / "aclImdb", val_fraction=0.25, seed=0)
    text = sorted((demo / "aclImdb" / "test" / "neg").glob("0_*.txt"))[0].read_bytes()
    row = int(np.flatnonzero(full.test.y == 0)[0])
    assert full.test.lengths[row] == len(text)
    assert bytes((full.test.x[row, :len(text)] - 1).astype(np.uint8).tolist()) == text
    assert (full.test.x[row, len(text):] == 0).all()


def test_unicode_reviews_are_utf8_bytes(tmp_path):
    for split in ("train", "test"):
        for cls in ("pos", "neg"):
            d = tmp_path / "aclImdb" / split / cls
            d.mkdir(parents=True)
            (d / "0_8.txt").write_text("Très bien — 好", encoding="utf-8")
            (d / "1_8.txt").write_text("ok", encoding="utf-8")
    s = load_task("imdb", tmp_path, max_len=32)
    assert sorted(s.test.lengths.tolist()) == [2, 2, len("Très bien — 好".encode()), len("Très bien — 好".encode())]


def test_sentiment_words_carry_the_label(demo):
    """Every review has more words of its label's polarity than of the other, and some noise."""
    polarity = {w: 1 for w in imdb.POSITIVE} | {w: 0 for w in imdb.NEGATIVE}
    noisy = 0
    for split in ("train", "test"):
        for cls, label in (("pos", 1), ("neg", 0)):
            for p in (demo / "aclImdb" / split / cls).glob("*.txt"):
                words = [w.strip(".!").lower() for w in p.read_text().replace("<br />", " ").split()]
                own = sum(polarity.get(w) == label for w in words)
                other = sum(polarity.get(w) == 1 - label for w in words)
                assert own > other
                noisy += other > 0
    assert noisy > 0


def test_missing_class_folder(tmp_path):
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    with pytest.raises(DataError, match="neg"):
        load_task("imdb", tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_task("imdb", tmp_path / "none")


def test_deterministic_per_seed(demo, tmp_path):
    from workers.data import fingerprint

    size, opts = {"train": 30, "val": 10, "test": 20}, {"min_words": 10, "max_words": 40}
    assert fingerprint(generate_task("imdb", tmp_path / "a", size=size, seed=2, options=opts)) == fingerprint(demo)
    assert fingerprint(generate_task("imdb", tmp_path / "b", size=size, seed=3, options=opts)) != fingerprint(demo)
    with pytest.raises(DataError, match="max_words=5"):
        generate_task("imdb", tmp_path / "c", size=size, options={"min_words": 10, "max_words": 5})
