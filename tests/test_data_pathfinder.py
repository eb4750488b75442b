"""Pathfinder: LRA pathfinder32 layout, honest labels, loader flattening, bad images."""

import numpy as np
import pytest
from PIL import Image

from search_spaces.errors import DataError
from workers.data import fingerprint, generate_task, load_task
from workers.data import pathfinder

SIZE = {"train": 40, "val": 10, "test": 10}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_task("pathfinder", tmp_path_factory.mktemp("pf") / "d", size=SIZE, seed=1)


def _solve(img):
    """A reference solver: are the two marker blobs in one connected component of the ink?"""
    from scipy import ndimage

    on = img > 127
    core = ndimage.binary_erosion(on, structure=np.ones((3, 3)))  # 3x3 blocks: marker centres only
    markers, n = ndimage.label(ndimage.binary_dilation(core), structure=np.ones((3, 3)))
    ink, _ = ndimage.label(ndimage.binary_closing(on, structure=np.ones((2, 2))) | on, structure=np.ones((3, 3)))
    comps = {int(ink[tuple(np.argwhere(markers == k)[0])]) for k in range(1, n + 1)}
    return n, int(len(comps) == 1)


def test_layout_and_metadata_lines(demo):
    root = demo / "pathfinder32" / "curv_contour_length_14"
    lines = (root / "metadata" / "0.npy").read_text().splitlines()
    assert len(lines) == 60
    fields = lines[5].split()
    assert fields[0] == "imgs/0" and fields[1] == "sample_5.png" and fields[2] == "5" and fields[3] in ("0", "1")
    with Image.open(root / fields[0] / fields[1]) as im:
        assert im.mode == "L" and im.size == (32, 32)
    labels = [int(line.split()[3]) for line in lines]
    assert sum(labels) == 30  # balanced


@pytest.mark.parametrize("length, folder", [(6, "curv_baseline"), (9, "curv_contour_length_9")])
def test_contour_length_picks_lra_difficulty_folder(tmp_path, length, folder):
    out = generate_task("pathfinder", tmp_path / "d", size={"train": 4, "val": 0, "test": 0},
                        options={"contour_length": length, "n_distractors": 2})
    assert (out / "pathfinder32" / folder / "metadata" / "0.npy").is_file()
    assert len(load_task("pathfinder", out / "pathfinder32" / folder).train) >= 1


def test_labels_follow_drawn_connectivity():
    rng = np.random.default_rng(7)
    hits = total = 0
    for i in range(120):
        label = i % 2
        img = pathfinder.draw_sample(rng, label)
        assert img.shape == (32, 32) and img.dtype == np.uint8
        n_markers, connected = _solve(img)
        if n_markers == 2:
            total += 1
            hits += connected == label
    assert total >= 90
    assert hits / total >= 0.85  # random labels would score ~0.5


def test_loader_flattens_to_grey_values(demo):
    s = load_task("pathfinder", demo, val_fraction=0.2, seed=0)
    n = len(s.train) + len(s.val) + len(s.test)
    assert n == 60 and len(s.test) >= 1 and len(s.val) >= 1
    assert s.train.x.shape[1:] == (1024, 1) and s.train.x.dtype == np.float32
    assert 0.0 <= s.train.x.min() and s.train.x.max() == 1.0
    assert (s.train.lengths == 1024).all() and s.train.y.dtype == np.int64
    root = demo / "pathfinder32" / "curv_contour_length_14"
    first = np.asarray(Image.open(root / "imgs/0/sample_0.png"), dtype=np.float32).reshape(-1) / 255
    rows = np.concatenate([s.train.x, s.val.x, s.test.x])[:, :, 0]
    assert any(np.array_equal(r, first) for r in rows)
    again = load_task("pathfinder", demo / "pathfinder32", val_fraction=0.2, seed=0)  # pathfinder32/ works too
    assert np.array_equal(again.test.x, s.test.x) and np.array_equal(again.val.y, s.val.y)


def test_deterministic_per_seed(tmp_path, demo):
    assert fingerprint(generate_task("pathfinder", tmp_path / "a", size=SIZE, seed=1)) == fingerprint(demo)


def _copy(demo, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(demo, dst)
    return dst / "pathfinder32" / "curv_contour_length_14"


def test_empty_images_are_skipped(demo, tmp_path):
    root = _copy(demo, tmp_path)
    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(root / "imgs/0/sample_3.png")
    s = load_task("pathfinder", root)
    assert len(s.train) + len(s.val) + len(s.test) == 59


@pytest.mark.parametrize("image", [
    Image.new("RGB", (32, 32)),
    Image.new("L", (28, 32), color=9),
])
def test_not_greyscale_32x32_names_the_file(demo, tmp_path, image):
    root = _copy(demo, tmp_path)
    image.save(root / "imgs/0/sample_7.png")
    with pytest.raises(DataError, match="sample_7.png"):
        load_task("pathfinder", root)


def test_bad_metadata_row_and_missing_folder(demo, tmp_path):
    root = _copy(demo, tmp_path)
    (root / "metadata" / "0.npy").write_text("imgs/0 sample_0.png 0 maybe\n")
    with pytest.raises(DataError, match=r"0\.npy row 1"):
        load_task("pathfinder", root)
    with pytest.raises(DataError, match="not found"):
        load_task("pathfinder", tmp_path / "absent")
    with pytest.raises(DataError, match="metadata"):
        load_task("pathfinder", tmp_path)


def test_bad_contour_length_option(tmp_path):
    with pytest.raises(DataError, match="contour_length=7"):
        generate_task("pathfinder", tmp_path / "d", size=SIZE, options={"contour_length": 7})
