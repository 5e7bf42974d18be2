"""The lesion generator is deterministic, balanced and writes what it says."""
import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import lesions


def _bytes(seed, count, **size):
    return [(name, image.tobytes(), mask.tobytes())
            for _, name, image, mask in lesions.generate(seed, count, **size)]


def test_same_seed_gives_identical_images_and_masks():
    assert _bytes(11, 6) == _bytes(11, 6)
    assert _bytes(11, 3, width=120, height=90) == _bytes(11, 3, width=120, height=90)


def test_image_depends_only_on_seed_and_index():
    assert _bytes(11, 6)[:2] == _bytes(11, 2)


def test_different_seeds_differ():
    a, b = _bytes(11, 3), _bytes(12, 3)
    assert all(x[1] != y[1] and x[2] != y[2] for x, y in zip(a, b))


@pytest.mark.parametrize("width,height", [(256, 256), (160, 120)])
def test_masks_and_images(width, height):
    names = []
    for index, name, image, mask in lesions.generate(5, 12, width, height):
        names.append(name)
        assert image.mode == "RGB" and mask.mode == "L"
        assert image.size == mask.size == (width, height)
        m = np.asarray(mask)
        assert set(np.unique(m)) <= {0, 255}
        area = int((m > 0).sum())
        assert 0 < area < m.size
        diameter = 2 * math.sqrt(area / math.pi) / min(width, height)
        assert 0.04 < diameter < 0.45, (index, name, diameter)
    assert sorted(set(names)) == sorted(lesions.CLASSES)
    assert all(names.count(c) == 4 for c in lesions.CLASSES)


def test_every_block_of_three_holds_each_class():
    for seed in (0, 1, 99):
        names = [lesions.class_of(seed, i) for i in range(30)]
        for i in range(0, 30, 3):
            assert sorted(names[i:i + 3]) == sorted(lesions.CLASSES)


def test_cli_writes_images_masks_and_labels(tmp_path):
    script = os.path.join(os.path.dirname(lesions.__file__), "lesions.py")
    subprocess.run([sys.executable, script, "--seed", "3", "--count", "4",
                    "--out", str(tmp_path), "--width", "96", "--height", "64",
                    "--format", "jpg"], check=True)
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = [(i, name) for i, name, _, _ in lesions.generate(3, 4, 96, 64)]
    assert [(r["file"], r["label"], r["mask"]) for r in rows] == [
        (f"{i:04d}_{n}.jpg", n, f"{i:04d}_{n}_mask.png") for i, n in expected]
    for r in rows:
        assert (tmp_path / r["file"]).stat().st_size > 0
        assert (tmp_path / r["mask"]).stat().st_size > 0
