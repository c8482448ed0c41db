"""tf.data pipelines: TensorFlow is a hard dependency, so these run under every
Keras backend (the pipelines feed `fit` on all of them)."""

import numpy as np
import pytest

from keras_dvq.data import datasets as data_module
from keras_dvq.data.datasets import count_images
from keras_dvq.data.datasets import load_dataset
from keras_dvq.data.datasets import load_image_folder
from keras_dvq.data.sample import load_sample_patches
from tests.testing import image_folder


@pytest.fixture(scope="module")
def sample_splits():
    return load_sample_patches("train"), load_sample_patches("validation")


def test_sample_sizes_dtype_and_determinism(sample_splits):
    train, validation = sample_splits
    assert train.shape[1:] == (32, 32, 3) and train.dtype == np.uint8
    assert len(train) >= 10_000 and len(validation) >= 2_000
    np.testing.assert_array_equal(validation, load_sample_patches("validation"))


def test_sample_splits_share_no_textured_patch(sample_splits):
    # The splits come from disjoint column ranges of each photograph; flat
    # patches (uniform background) can coincide by value, textured ones not.
    def textured_keys(patches):
        textured = patches[patches.reshape(len(patches), -1).std(axis=1) > 8]
        return {patch.tobytes() for patch in textured}

    train, validation = sample_splits
    assert not textured_keys(train) & textured_keys(validation)


def test_sample_rejects_unknown_split():
    with pytest.raises(ValueError, match="split.*'test'"):
        load_sample_patches("test")


def test_validation_pipeline_is_plain_and_complete(sample_splits):
    batches = list(load_dataset("sample", "validation", batch_size=1000))
    images = np.concatenate([np.asarray(b) for b in batches])
    np.testing.assert_array_equal(images, sample_splits[1])  # no shuffle/augment
    assert len(batches[-1]) == len(images) % 1000  # remainder kept


def test_training_pipeline_augments_and_reshuffles(sample_splits):
    dataset = load_dataset("sample", "train", batch_size=64, seed=3)
    first, second = (np.asarray(next(iter(dataset))) for _ in range(2))
    assert first.shape == (64, 32, 32, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)  # a new order every epoch
    raw = {patch.tobytes() for patch in sample_splits[0]}
    augmented = sum(patch.tobytes() not in raw for patch in first)
    assert augmented > 32  # most patches are shifted or flipped copies
    assert int(dataset.cardinality()) == len(sample_splits[0]) // 64


def test_image_size_resizes(sample_splits):
    batch = np.asarray(next(iter(load_dataset("sample", "validation", 8, 16))))
    assert batch.shape == (8, 16, 16, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "split"),
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": -1}, "image_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("sample", **kwargs)


def write_image_folder(root, rng):
    from PIL import Image

    (root / "nested").mkdir(parents=True)
    for index in range(20):
        pixels = rng.integers(0, 256, size=(40 + index, 50, 3), dtype=np.uint8)
        mode, folder = ("RGB", root) if index % 2 else ("RGBA", root / "nested")
        image = Image.fromarray(pixels).convert(mode)
        image.save(folder / f"image_{index:02d}.png")
    Image.fromarray(pixels[..., 0]).save(root / "gray.jpg")  # grayscale
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("ignored")


def test_image_folder_reads_converts_and_splits(tmp_path, rng):
    write_image_folder(tmp_path, rng)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable image file"):
        train = load_image_folder(str(tmp_path), "train", image_size=24)
    validation = load_image_folder(str(tmp_path), "validation", image_size=24)
    assert train.shape[1:] == (24, 24, 3) and train.dtype == np.uint8
    # 22 image files: every 10th (sorted) validates, one broken file trains.
    assert len(validation) == 2 and len(train) == 22 - 2 - 1
    dataset = load_dataset(f"folder:{tmp_path}", "validation", 4, image_size=24)
    np.testing.assert_array_equal(np.asarray(next(iter(dataset))), validation)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_missing_tfds_data_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "_unreachable", lambda host: f"{host}: offline")
    with pytest.raises(ValueError) as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "cifar10") in message
    assert "--data_dir" in message and "--dataset sample" in message
    assert "offline" in message


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset'"):
        load_dataset("no_such_dataset")


def test_count_images_of_batched_datasets(tmp_path):
    validation = load_dataset("sample", "validation", batch_size=128)
    assert count_images(validation) == 4250  # 33 full batches and one of 26
    folder = image_folder(tmp_path / "images", count=40)
    assert count_images(load_dataset(folder, "train", batch_size=8)) == 32
    assert count_images(load_dataset(folder, "validation", batch_size=3)) == 4
    assert count_images(validation.unbatch().batch(100)) is None  # unknown


def test_pipelines_run_without_autotuning():
    # Dropping an autotuned iterator waits for its tuning thread: seconds at
    # every validation of a `fit` (docs/benchmarks.md).
    for split in ("train", "validation"):
        dataset = load_dataset("sample", split, batch_size=4)
        assert dataset.options().autotune.enabled is False
