"""scripts/tokenize_dataset.py: shards read back as docs/token_datasets.md says."""

import json
import math
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_dvq.data import token_shards
from keras_dvq.data.sample import PHOTOGRAPHS
from keras_dvq.data.sample import load_sample_patches
from keras_dvq.data.token_shards import load_token_shards
from keras_dvq.export.saved_model import export_tokenizer
from keras_dvq.models import VQVAE
from keras_dvq.utils import atomic
from keras_dvq.utils.run_directory import RunLock
from tests.testing import assert_one_line_error
from tests.testing import assert_same_tokens
from tests.testing import image_folder
from tests.testing import load_script
from tests.testing import run_script

K = 16
SHARD = 1000  # the sample validation split (4,250 images) makes 5 shards


@pytest.fixture(scope="module")
def script():
    return load_script("tokenize_dataset")


@pytest.fixture(scope="module")
def validation_images(sample_validation_images):
    return sample_validation_images


@pytest.fixture(scope="module")
def model_path(tiny_tokenizer):
    return tiny_tokenizer


@pytest.fixture(scope="module")
def validation_labels():
    return load_sample_patches("validation", return_labels=True)[1]


@pytest.fixture(scope="module")
def expected_tokens(model_path, validation_images):
    return keras.models.load_model(model_path).encode(validation_images)


def argv(out, source_flag, source, *extra):
    return [
        source_flag, str(source), "--dataset", "sample", "--split", "validation",
        "--out", str(out), "--shard_size", str(SHARD), *extra,
    ]  # fmt: skip


def read_npy_shards(out):
    """docs/token_datasets.md's reader for --format npy."""
    with open(os.path.join(out, "metadata.json")) as file:
        metadata = json.load(file)
    shards = [np.load(os.path.join(out, s["file"])) for s in metadata["shards"]]
    return metadata, np.concatenate(shards)


def read_tfrecord_shards(out):
    """docs/token_datasets.md's reader for --format tfrecord."""
    with open(os.path.join(out, "metadata.json")) as file:
        metadata = json.load(file)
    shape = metadata["token_shape"]  # (h, w), or (h, w, depth)
    files = [os.path.join(out, s["file"]) for s in metadata["shards"]]
    feature = {"tokens": tf.io.FixedLenFeature([math.prod(shape)], tf.int64)}
    dataset = tf.data.TFRecordDataset(files).map(
        lambda record: tf.reshape(
            tf.io.parse_single_example(record, feature)["tokens"], shape
        )
    )
    return metadata, np.stack(list(dataset.as_numpy_iterator()))


def test_npy_shards_hold_the_models_tokens(
    tiny_token_shards, model_path, expected_tokens, validation_labels
):
    # The shared shards: tokenize_dataset(..., shard_size=1000) as the script
    # calls it (the script's own runs are below).
    out = tiny_token_shards
    metadata, tokens = read_npy_shards(out)
    assert tokens.dtype == np.uint16
    np.testing.assert_array_equal(tokens, expected_tokens)
    assert [s["count"] for s in metadata["shards"]] == [1000] * 4 + [250]
    assert metadata["num_images"] == len(expected_tokens) == 4250
    assert metadata["complete"] is True
    assert metadata["token_shape"] == [8, 8]
    assert metadata["vocabulary_size"] == K
    assert metadata["source"]["path"] == str(model_path)
    assert len(metadata["source"]["sha256"]) == 64
    # The sample dataset's classes: one per photograph, in a file per shard.
    assert metadata["labels"] is True and metadata["class_names"] == list(PHOTOGRAPHS)
    assert metadata["num_classes"] == len(PHOTOGRAPHS)
    assert metadata["shards"][0]["labels_file"] == "labels-00000.npy"
    shards = load_token_shards(str(out))
    np.testing.assert_array_equal(shards.tokens, expected_tokens)
    np.testing.assert_array_equal(shards.labels, validation_labels)


# A SavedModel source is read by TensorFlow whatever the backend; that a model
# of each backend exports its own tokens is checked in test_export.py.
@pytest.mark.backend_independent
def test_tfrecord_shards_from_an_exported_tokenizer(
    script, model_path, expected_tokens, validation_images, validation_labels, tmp_path
):
    export_dir = str(tmp_path / "tokenizer" / "1")
    export_tokenizer(keras.models.load_model(model_path), export_dir)
    out = tmp_path / "tokens"
    flags = argv(out, "--tokenizer", export_dir, "--format", "tfrecord")
    assert script.main(flags) == 0
    metadata, tokens = read_tfrecord_shards(out)
    model = keras.models.load_model(model_path)
    assert_same_tokens(tokens, expected_tokens, model, validation_images)
    assert metadata["source"]["kind"] == "saved_model"
    assert sorted(os.listdir(out)) == ["metadata.json"] + [
        f"tokens-{index:05d}.tfrecord" for index in range(5)
    ]
    shards = load_token_shards(str(out))  # labels: a "label" feature
    np.testing.assert_array_equal(shards.tokens, tokens)
    np.testing.assert_array_equal(shards.labels, validation_labels)


def test_interrupted_run_resumes_from_its_last_shard(
    script, model_path, expected_tokens, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "tokens"
    write_shard = token_shards.write_shard_file
    written = []

    def crash_on_third_shard(path, tokens, file_format, labels=None):
        if len(written) == 2:
            raise KeyboardInterrupt  # e.g. the job was killed
        write_shard(path, tokens, file_format, labels)
        written.append(path)

    monkeypatch.setattr(token_shards, "write_shard_file", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        script.main(argv(out, "--model", model_path))
    metadata, _ = read_npy_shards(out)
    assert metadata["num_images"] == 2000 and metadata["complete"] is False
    first_shards = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}

    monkeypatch.setattr(token_shards, "write_shard_file", write_shard)
    assert script.main(argv(out, "--model", model_path)) == 0
    assert "continuing after 2 shard(s)" in capsys.readouterr().out
    for name in ("tokens-00000.npy", "tokens-00001.npy"):
        assert os.stat(out / name).st_mtime_ns == first_shards[name]  # not redone
    metadata, tokens = read_npy_shards(out)
    np.testing.assert_array_equal(tokens, expected_tokens)
    assert not [n for n in os.listdir(out) if n.startswith(atomic.TEMPORARY_PREFIX)]

    assert script.main(argv(out, "--model", model_path)) == 0
    assert "already complete (4250 images)" in capsys.readouterr().out


def test_other_settings_never_overwrite_earlier_tokens(tiny_token_shards, tmp_path):
    out = tmp_path / "tokens"
    shutil.copytree(tiny_token_shards, out)  # the same model, dataset and split
    before = (out / "metadata.json").read_text()
    flags = argv(out, "--model", source_of(out), "--format", "tfrecord")
    result = run_script("tokenize_dataset", *flags)
    assert_one_line_error(
        result,
        "tokenize_dataset",
        "holds tokens of another run (different dtype, format)",
    )
    assert (out / "metadata.json").read_text() == before


def source_of(out):
    return json.loads((out / "metadata.json").read_text())["source"]["path"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "missing.keras"], "--model missing.keras: not found"),
        (["--model", "corrupt.keras"], "cannot be loaded as a tokenizer"),
        (["--tokenizer", "."], "must be a tokenizer written by export_tokenizer"),
        (["--model", "."], "--model .: expected a .keras file, got a directory"),
    ],
)
def test_bad_sources_are_one_line_errors(tmp_path, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corrupt.keras").write_bytes(b"not a zip file")
    result = run_script("tokenize_dataset", *argv(tmp_path / "out", *flags))
    assert_one_line_error(result, "tokenize_dataset", message)
    assert not (tmp_path / "out").exists()


def test_bad_flags_exit_2():
    result = run_script("tokenize_dataset", "--dataset", "sample", "--out", "x")
    assert result.code == 2  # argparse: usage, then the error
    assert "one of the arguments --model --tokenizer is required" in result.err


def test_a_second_run_into_the_same_out_is_refused(model_path, tmp_path):
    out = tmp_path / "tokens"
    with RunLock(out):  # as a running tokenize_dataset.py holds it
        result = run_script("tokenize_dataset", *argv(out, "--model", model_path))
    assert_one_line_error(result, "tokenize_dataset", f"--out {out} is in use by")
    assert os.listdir(out) == []


def test_a_dataset_tfds_cannot_build_writes_no_shards(
    model_path, tmp_path, monkeypatch
):
    import tensorflow_datasets as tfds

    def unreachable(name, data_dir=None):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tfds, "builder", unreachable)
    flags = ["--model", model_path, "--dataset", "cifar10", "--out", tmp_path / "t"]
    result = run_script("tokenize_dataset", *flags)
    assert_one_line_error(
        result, "tokenize_dataset", "--dataset cifar10: tensorflow-datasets knows it",
        "OSError: Network is unreachable",
    )  # fmt: skip
    assert not (tmp_path / "t" / "metadata.json").exists()


def test_diverged_models_are_refused(tmp_path):
    model = VQVAE.from_flavors(num_embeddings=K, embedding_dim=4, n_hid=8)
    model.build((None, 32, 32, 3))
    bias = model.decoder.weights[-1]
    bias.assign(np.full(bias.shape, np.nan, "float32"))
    model.save(tmp_path / "diverged.keras")
    flags = argv(tmp_path / "out", "--model", tmp_path / "diverged.keras")
    result = run_script("tokenize_dataset", *flags)
    message = "diverged.keras: the model's weights are not finite"
    assert_one_line_error(result, "tokenize_dataset", message)
    assert not (tmp_path / "out").exists()


def test_every_image_of_a_training_split_is_tokenized(script, model_path, tmp_path):
    dataset = image_folder(tmp_path / "images")  # 36 training images
    out = tmp_path / "tokens"
    argv = ["--model", str(model_path), "--dataset", dataset, "--split", "train",
            "--out", str(out), "--batch_size", "8", "--quiet"]  # fmt: skip
    assert script.main(argv) == 0
    metadata, tokens = read_npy_shards(out)
    assert metadata["num_images"] == len(tokens) == 36  # 4 batches of 8 and one of 4


@pytest.mark.parametrize("token_format", ["npy", "tfrecord"])
def test_residual_tokens_keep_their_depth_axis(
    script, validation_images, tmp_path, token_format
):
    model = VQVAE.from_flavors(
        vq_flavor="rvq", num_quantizers=3, num_embeddings=K, embedding_dim=4, n_hid=8
    )
    model.build((None, 32, 32, 3))
    path = tmp_path / "rvq.keras"
    model.save(path)
    out = tmp_path / "tokens"
    assert script.main(argv(out, "--model", path, "--format", token_format)) == 0
    reader = read_npy_shards if token_format == "npy" else read_tfrecord_shards
    metadata, tokens = reader(out)
    assert metadata["token_shape"] == [8, 8, 3]
    expected = model.encode(validation_images)
    np.testing.assert_array_equal(tokens, expected)
    shards = load_token_shards(str(out))
    assert shards.token_shape == (8, 8, 3)
    np.testing.assert_array_equal(shards.tokens, expected)


def test_a_model_is_run_at_its_recorded_size(script, model_path, tmp_path, capsys):
    """No flag: the size the model was trained at; a size its stride does
    not divide is a one-line error before anything is written."""
    model = keras.models.load_model(model_path)
    sized = VQVAE.from_config({**model.get_config(), "image_size": 16})
    sized.build((None, 16, 16, 3))
    sized.set_weights(model.get_weights())
    sized.save(tmp_path / "sized.keras")
    dataset = image_folder(tmp_path / "images", count=40)
    common = ["--model", str(tmp_path / "sized.keras"), "--dataset", dataset]
    out = tmp_path / "tokens"
    assert script.main([*common, "--out", str(out), "--quiet"]) == 0
    metadata, tokens = read_npy_shards(out)
    assert metadata["image_size"] == 16 and tokens.shape[1:] == (4, 4)
    bad = tmp_path / "bad"
    assert script.main([*common, "--out", str(bad), "--image_size", "30"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--image_size 30: the tokenizer downsamples by 4" in error
    assert "\n" not in error and not bad.exists()
