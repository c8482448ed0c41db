"""benchmarks.data: the benchmark's images."""

import pytest

from benchmarks.data import sample_images
from benchmarks.data import write_image_folder
from keras_dvq.data.sample import load_sample_patches

pytestmark = pytest.mark.backend_independent


def test_larger_images_are_sample_patches_of_that_size():
    large = sample_images(3, image_size=64)
    assert large.shape == (3, 64, 64, 3) and large.dtype == "uint8"
    assert (large == load_sample_patches("train", patch_size=64)[:3]).all()


def test_more_images_than_the_split_repeat_it():
    split = len(load_sample_patches("validation"))
    repeated = sample_images(split + 2, "validation")
    assert len(repeated) == split + 2
    assert (repeated[split:] == repeated[:2]).all()


def test_image_folder_holds_one_png_per_image(tmp_path):
    name = write_image_folder(str(tmp_path / "images"), 5)
    assert name == f"folder:{tmp_path / 'images'}"
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        f"{index:04d}.png" for index in range(5)
    ]
