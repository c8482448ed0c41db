"""tf.data pipelines: TensorFlow is a hard dependency, so these run under every
Keras backend (the pipelines feed `fit` on all of them)."""

import json
import types

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_datasets.core import download as tfds_download

from keras_dvq.data import datasets as data_module
from keras_dvq.data.datasets import class_names
from keras_dvq.data.datasets import count_images
from keras_dvq.data.datasets import folder_files
from keras_dvq.data.datasets import load_dataset
from keras_dvq.data.datasets import worker_shard
from keras_dvq.data.sample import load_sample_patches
from keras_dvq.data.sample import patch_boxes
from keras_dvq.utils.errors import BadInput
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


@pytest.mark.parametrize(
    "size, train, validation",
    [(32, 20_866, 4_250), (64, 14_845, 2_542), (128, 3_028, 318), (256, 490, 19)],
)
def test_sample_patch_counts_at_each_size(size, train, validation):
    # The counts the sample module's docstring promises; 32 px is the
    # bundled sample of every earlier release.
    for split, count in (("train", train), ("validation", validation)):
        boxes, _ = patch_boxes(split, size)
        assert len(boxes) == count
    patches = load_sample_patches("validation", patch_size=size)
    assert patches.shape == (validation, size, size, 3)


@pytest.mark.parametrize("size", [32, 128])
def test_no_validation_patch_overlaps_a_training_region(size):
    for split in ("train", "validation"):
        boxes, boundaries = patch_boxes(split, size)
        boundary = np.asarray(boundaries)[boxes[:, 0]]
        left, right = boxes[:, 2], boxes[:, 2] + boxes[:, 3]
        if split == "train":
            assert (right <= boundary).all()
        else:
            assert (left >= boundary).all()


def test_sample_patches_are_cut_where_their_boxes_say():
    from keras_dvq.data.sample import photographs

    patches, labels = load_sample_patches("validation", True, patch_size=128)
    boxes, _ = patch_boxes("validation", 128)
    photos = list(photographs())
    np.testing.assert_array_equal(labels, boxes[:, 0])
    label, top, left, side = boxes[0]  # a full-resolution patch
    assert side == 128
    np.testing.assert_array_equal(
        patches[0], photos[label][top : top + side, left : left + side]
    )


def test_sample_cuts_any_size_from_16_to_256_and_no_other():
    assert load_sample_patches("validation", patch_size=30).shape[1:] == (30, 30, 3)
    with pytest.raises(ValueError, match="Received: patch_size=32.0"):
        load_sample_patches("train", patch_size=32.0)
    with pytest.raises(ValueError, match="patch_size.*Received: patch_size=15"):
        load_sample_patches("train", patch_size=15)
    with pytest.raises(BadInput, match="--image_size 264 is not a patch size"):
        load_dataset("sample", image_size=264)


def test_sample_at_an_image_size_cuts_patches_of_that_size():
    # It used to upsample the 32-px patches.
    batch = np.asarray(next(iter(load_dataset("sample", "validation", 8, 64))))
    np.testing.assert_array_equal(
        batch, load_sample_patches("validation", patch_size=64)[:8]
    )
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


def write_image_folder(root):
    """22 image files of mixed sizes and formats, a broken one and a text
    file; each image is one flat colour, its index, so that any crop of it
    says which file it came from."""
    from PIL import Image

    (root / "nested").mkdir(parents=True)
    formats = ("png", "jpg", "gif", "bmp")
    for index in range(20):
        pixels = np.full((40 + 3 * index, 50 + index % 7, 3), 10 * index, np.uint8)
        mode, folder = ("RGB", root) if index % 2 else ("RGBA", root / "nested")
        fmt = formats[index % 4]
        image = Image.fromarray(pixels)
        if fmt == "png":
            image = image.convert(mode)
        image.save(folder / f"image_{index:02d}.{fmt}")
    Image.fromarray(np.full((30, 90), 250, np.uint8)).save(root / "m_gray.png")
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("ignored")


def folder_images(name, split, **kwargs):
    batches = load_dataset(name, split, batch_size=64, **kwargs)
    return np.concatenate([np.asarray(batch) for batch in batches])


def test_image_folder_streams_converts_and_splits(tmp_path):
    write_image_folder(tmp_path)
    name = f"folder:{tmp_path}"
    # 22 image files, sorted (broken, the odd images, m_gray, nested/ the
    # even ones): every 10th validates (image_17 and nested/image_14), the
    # broken one is counted and skipped.
    with pytest.warns(UserWarning, match="Skipped 1 unreadable image file"):
        train = folder_images(name, "train", image_size=24, drop_remainder=False)
    validation = folder_images(name, "validation", image_size=24)
    assert train.shape == (22 - 2 - 1, 24, 24, 3) and train.dtype == np.uint8
    assert validation.shape == (2, 24, 24, 3)
    # Centre crops of flat images: the colour says which file (jpg is lossy).
    np.testing.assert_allclose(validation[0], 170, atol=3)
    np.testing.assert_allclose(validation[1], 140, atol=3)
    colours = sorted(int(np.median(image)) for image in train)
    expected = sorted(10 * i for i in range(20) if i not in (14, 17)) + [250]
    np.testing.assert_allclose(colours, expected, atol=3)
    assert (train == 250).all(axis=(1, 2, 3)).sum() == 1  # grayscale to RGB
    np.testing.assert_array_equal(
        validation, folder_images(name, "validation", image_size=24)
    )


def test_folder_images_have_a_static_shape(tmp_path):
    # tf.distribute builds an empty replica's part of a last partial batch
    # from the static shape: (0, None, None, 3) broke multi-device validation.
    name = image_folder(tmp_path / "images", count=20)
    for split in ("train", "validation"):
        dataset = load_dataset(name, split, batch_size=4, image_size=24)
        assert dataset.element_spec.shape[1:] == (24, 24, 3)


def test_folder_split_is_every_tenth_sorted_file(tmp_path):
    name = image_folder(tmp_path / "images", count=40)
    validation = folder_files(name[len("folder:") :], "validation")
    train = folder_files(name[len("folder:") :], "train")
    assert [path[-8:] for path in validation] == [
        "0009.png",
        "0019.png",
        "0029.png",
        "0039.png",
    ]
    assert len(train) == 36 and not set(train) & set(validation)


def test_folder_training_crops_flips_and_reshuffles(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(10, 48, 64, 3), dtype=np.uint8)
    name = image_folder(tmp_path / "images", images=pixels)
    dataset = load_dataset(name, "train", batch_size=9, image_size=32, seed=1)
    first, second = (np.asarray(batch) for batch in (*dataset, *dataset))
    assert first.shape == (9, 32, 32, 3) and int(dataset.cardinality()) == 1
    assert not np.array_equal(first, second)  # new order and crops each pass
    # Validation centre-crops: the same pixels every time, no flip.
    plain = load_dataset(name, "train", 9, 32, shuffle=False, augment=False)
    assert np.array_equal(*(np.asarray(next(iter(plain))) for _ in range(2)))


def test_images_already_at_the_size_keep_their_pixels(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    name = image_folder(tmp_path / "images", images=pixels)
    validation = folder_images(name, "validation", image_size=32)
    np.testing.assert_array_equal(validation, pixels[9:])


def test_a_file_that_fails_to_decode_does_not_end_the_pass(tmp_path):
    name = image_folder(tmp_path / "images", count=20)
    good = (tmp_path / "images" / "0000.png").read_bytes()
    (tmp_path / "images" / "0001.png").write_bytes(good[:60])  # truncated
    dataset = load_dataset(name, "train", batch_size=6, image_size=16)
    # 18 listed training files: every pass has 3 full batches.
    for _ in range(2):
        with pytest.warns(UserWarning, match="Skipped 1 image file.* of 18 that"):
            assert [len(batch) for batch in dataset] == [6, 6, 6]


def test_a_folder_without_readable_images_is_bad_input(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipped 2"):
        with pytest.raises(BadInput, match="no readable"):
            load_dataset(f"folder:{tmp_path}")


def test_image_folder_errors(tmp_path):
    with pytest.raises(BadInput, match="no such directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no readable"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_missing_tfds_data_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "_unreachable", lambda host: f"{host}: offline")
    with pytest.raises(BadInput) as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "cifar10") in message
    assert "--data_dir" in message and "--dataset sample" in message
    assert "offline" in message


def test_unknown_dataset_name():
    message = "--dataset no_such_dataset: expected 'sample', 'folder:PATH' or a"
    for load in (load_dataset, class_names):
        with pytest.raises(BadInput, match=message) as error:
            load("no_such_dataset")
        assert "tensorflow-datasets has no 'no_such_dataset'" in str(error.value)


class FakeBuilder:
    """A tfds builder of a labelled image dataset that is not prepared."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = None

    def __init__(self, data_dir, failure=None):
        import tensorflow_datasets as tfds

        self.data_dir = f"{data_dir}/fake/1.0.0"
        self.failure = failure
        self.info = types.SimpleNamespace(
            features={"image": None, "label": tfds.features.ClassLabel(names=["x"])},
            splits={"train": None, "test": None},
        )

    def is_prepared(self):
        return False

    def download_and_prepare(self):
        raise self.failure


def fake_tfds(monkeypatch, builder=None, error=None):
    """tfds.builder returns `builder` or raises `error`; the network is up."""
    import tensorflow_datasets as tfds

    def make(name, data_dir=None):
        if error is not None:
            raise error
        return builder

    monkeypatch.setattr(tfds, "builder", make)
    monkeypatch.setattr(data_module, "_unreachable", lambda host: None)


@pytest.mark.parametrize(
    "error",
    [
        OSError("Network is unreachable"),
        ImportError("No module named 'apache_beam'"),
    ],
    ids=["network", "missing_dependency"],
)
def test_a_builder_that_fails_is_not_an_unknown_dataset(monkeypatch, error):
    # Also for labels: class_names used to answer None ("no labels") and the
    # tokens were written without them.
    fake_tfds(monkeypatch, error=error)
    for load in (load_dataset, class_names):
        with pytest.raises(BadInput) as raised:
            load("fake")
        message = str(raised.value)
        assert message.startswith("--dataset fake: tensorflow-datasets knows it")
        assert type(error).__name__ in message and str(error) in message
        assert "Unknown" not in message and raised.value.__cause__ is error


def test_a_builder_bug_keeps_its_traceback(monkeypatch):
    fake_tfds(monkeypatch, error=KeyError("features"))
    for load in (load_dataset, class_names):
        with pytest.raises(KeyError, match="features"):
            load("fake")


@pytest.mark.parametrize(
    "failure, words",
    [
        (OSError("No space left on device"), ["OSError: No space left on device"]),
        (
            tfds_download.DownloadError("HTTP 503"),
            ["downloading and preparing it failed", "DownloadError: HTTP 503"],
        ),
    ],
    ids=["disk_full", "download"],
)
def test_a_failed_download_says_so(monkeypatch, tmp_path, failure, words):
    fake_tfds(monkeypatch, FakeBuilder(tmp_path, failure))
    with pytest.raises(BadInput) as raised:
        load_dataset("fake", data_dir=str(tmp_path))
    message = str(raised.value)
    assert message.startswith(f"--dataset fake: not prepared under {tmp_path}")
    assert all(word in message for word in words), message
    assert "--data_dir" in message and "--dataset sample" in message


def test_a_failed_preparation_bug_keeps_its_traceback(monkeypatch, tmp_path):
    fake_tfds(monkeypatch, FakeBuilder(tmp_path, TypeError("a tfds bug")))
    with pytest.raises(TypeError, match="a tfds bug"):
        load_dataset("fake", data_dir=str(tmp_path))


def test_a_manual_download_is_not_attempted(monkeypatch, tmp_path):
    builder = FakeBuilder(tmp_path, AssertionError("must not download"))
    builder.MANUAL_DOWNLOAD_INSTRUCTIONS = "Download it from example.org."
    fake_tfds(monkeypatch, builder)
    with pytest.raises(BadInput, match="it needs a manual download"):
        load_dataset("fake", data_dir=str(tmp_path))


def test_a_labelled_tfds_dataset_has_its_class_names(monkeypatch, tmp_path):
    fake_tfds(monkeypatch, FakeBuilder(tmp_path))
    assert class_names("fake") == ["x"]


@pytest.mark.parametrize(
    "config, expected",
    [
        ({}, (1, 0)),
        ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}, (1, 0)),
        (
            {
                "cluster": {"worker": ["a:1", "b:1", "c:1"]},
                "task": {"type": "worker", "index": 2},
            },
            (3, 2),
        ),
        (
            {
                "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                "task": {"type": "worker", "index": 0},
            },
            (3, 1),
        ),
        (
            {
                "cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                "task": {"type": "chief", "index": 0},
            },
            (2, 0),
        ),
    ],
    ids=["none", "one_worker", "third_worker", "worker_after_chief", "chief"],
)
def test_worker_shard_from_tf_config(monkeypatch, config, expected):
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert worker_shard() == expected


def test_workers_read_disjoint_shards_of_the_files(tmp_path, monkeypatch):
    name = image_folder(tmp_path / "images", count=40)
    dataset = load_dataset(name, "train", batch_size=4)
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.AUTO  # one worker
    path = name[len("folder:") :]
    shards = [folder_files(path, "train", worker=(3, i)) for i in range(3)]
    assert [len(shard) for shard in shards] == [12, 12, 12]
    assert sorted(sum(shards, [])) == folder_files(path, "train")
    # 34 training files: 12, 11 and 11 by position, every worker keeps 11
    # (the same steps on every worker); the files stay disjoint.
    odd = image_folder(tmp_path / "odd", count=37)[len("folder:") :]
    shards = [folder_files(odd, "train", worker=(3, i)) for i in range(3)]
    assert [len(shard) for shard in shards] == [11, 11, 11]
    assert len(set(sum(shards, []))) == 33
    with pytest.raises(BadInput, match="fewer than the 5 workers"):
        folder_files(odd, "validation", worker=(5, 0))
    cluster = {"worker": ["a:1", "b:1", "c:1"]}
    task = {"type": "worker", "index": 1}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    dataset = load_dataset(name, "train", batch_size=4)
    assert int(dataset.cardinality()) == 3  # 12 files of worker 1
    # tf.data must not shard the worker's shard again.
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.OFF


class PreparedBuilder:
    """A prepared tfds builder of `size` images per split: black 8x8 ones,
    or those `images(size)` makes."""

    def __init__(self, size, images=None):
        self.size = size
        self.images = images
        self.info = types.SimpleNamespace(
            features={"image": None}, splits={"train": None, "test": None}
        )

    def is_prepared(self):
        return True

    def as_dataset(self, split, shuffle_files=False):
        if self.images is None:
            images = np.zeros((self.size, 8, 8, 3), np.uint8)
        else:
            images = self.images(self.size)
        return tf.data.Dataset.from_tensor_slices({"image": images})


def striped(count):
    """40x80 images: red columns 0-19, green 20-59, blue 60-79."""
    images = np.zeros((count, 40, 80, 3), np.uint8)
    images[:, :, :20, 0] = images[:, :, 20:60, 1] = images[:, :, 60:, 2] = 255
    return images


def test_tfds_images_of_another_size_are_cropped_not_squashed(monkeypatch):
    fake_tfds(monkeypatch, PreparedBuilder(8, striped))
    # Resized to 32x64, the centre 32 columns are the green band; squashed
    # to 32x32, a quarter of the columns would be red and one blue.
    validation = np.asarray(next(iter(load_dataset("fake", "validation", 8, 32))))
    assert validation.shape == (8, 32, 32, 3)
    inner = validation[:, :, 2:-2].astype(int)
    assert inner[..., 1].min() > 240 and inner[..., [0, 2]].max() < 15
    train = np.asarray(next(iter(load_dataset("fake", "train", 8, 32, seed=0))))
    assert train.shape == (8, 32, 32, 3)
    # A 32-px crop of a 64-74 px wide resize cannot reach both the red and
    # the blue band (34+ columns apart); a squashed image holds both.
    red = (train[..., 0] > 200).any(axis=(1, 2))
    blue = (train[..., 2] > 200).any(axis=(1, 2))
    assert not (red & blue).any()


def test_tfds_default_shuffle_buffer_holds_at_most_a_gib(monkeypatch):
    fake_tfds(monkeypatch, PreparedBuilder(30_000))
    buffers = recorded_shuffle_buffers(monkeypatch)
    load_dataset("fake", "train", 16, 256)  # not iterated: 1 GiB of images
    load_dataset("fake", "train", 16, 128)
    assert buffers == [2**30 // (3 * 256 * 256), 10_000]


def recorded_shuffle_buffers(monkeypatch):
    """The list every later `Dataset.shuffle` call appends its buffer to."""
    buffers = []
    shuffle = tf.data.Dataset.shuffle

    def recording_shuffle(dataset, buffer_size, *args, **kwargs):
        buffers.append(buffer_size)
        return shuffle(dataset, buffer_size, *args, **kwargs)

    monkeypatch.setattr(tf.data.Dataset, "shuffle", recording_shuffle)
    return buffers


@pytest.mark.parametrize(
    "size, shuffle_buffer, expected",
    [(30_000, None, 10_000), (500, None, 500), (30_000, 256, 256)],
    ids=["bounded", "split_smaller", "argument"],
)
def test_tfds_shuffle_buffer_is_bounded(monkeypatch, size, shuffle_buffer, expected):
    fake_tfds(monkeypatch, PreparedBuilder(size))
    buffers = recorded_shuffle_buffers(monkeypatch)
    dataset = load_dataset("fake", "train", 16, 8, shuffle_buffer=shuffle_buffer)
    assert buffers == [expected]
    assert np.asarray(next(iter(dataset))).shape == (16, 8, 8, 3)


def test_count_images_of_batched_datasets(tmp_path):
    validation = load_dataset("sample", "validation", batch_size=128)
    assert count_images(validation) == 4250  # 33 full batches and one of 26
    folder = image_folder(tmp_path / "images", count=40)
    assert count_images(load_dataset(folder, "train", batch_size=8)) == 32
    assert count_images(load_dataset(folder, "validation", batch_size=3)) == 4
    assert count_images(validation.unbatch().batch(100)) is None  # unknown


def test_pipelines_run_without_autotuning(tmp_path):
    # Dropping an autotuned iterator waits for its tuning thread: seconds at
    # every validation of a `fit` (docs/benchmarks.md).
    folder = image_folder(tmp_path / "images", count=20)
    for name in ("sample", folder):
        for split in ("train", "validation"):
            dataset = load_dataset(name, split, batch_size=4)
            assert dataset.options().autotune.enabled is False
