"""Tokenizer export: a model trained by train.py, served as TF Serving would."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_dvq.export.saved_model import export_tokenizer
from keras_dvq.export.saved_model import read_tokenizer_info
from keras_dvq.models import VQVAE
from tests.testing import assert_same_tokens
from tests.testing import load_script

ROOT = Path(__file__).resolve().parents[2]
SERVING_CLIENT = ROOT / "tests" / "export" / "serving_client.py"
EXPORT_SCRIPT = ROOT / "scripts" / "export_tokenizer.py"
K = 16


def run(*command):
    return subprocess.run(
        [sys.executable, *map(str, command)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained_path(tiny_tokenizer):
    """The session's trained tokenizer (tests/conftest.py: 16 codes of 4
    dimensions, n_hid 8, fitted on this backend)."""
    return tiny_tokenizer


@pytest.fixture(scope="module")
def model(trained_path):
    return keras.models.load_model(trained_path)


@pytest.fixture(scope="module")
def images(sample_validation_images):
    return sample_validation_images[:64]  # uint8 (64, 32, 32, 3)


@pytest.fixture(scope="module")
def cli_export(trained_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("exports") / "tokenizer"
    result = run(EXPORT_SCRIPT, trained_path, base, "--image_shape", "32,32,3")
    assert result.returncode == 0, result.stderr
    return base, result.stdout


def export_script_exit_code(*argv):
    """export_tokenizer.py's `main` in this process (TensorFlow backend)."""
    try:
        return load_script("export_tokenizer").main(list(map(str, argv)))
    except SystemExit as exit_info:  # argparse's errors
        return exit_info.code


def serve(export_dir, images, tmp_path):
    """The results of tests/export/serving_client.py, run in a fresh process."""
    np.save(tmp_path / "images.npy", images)
    results = tmp_path / "results.npz"
    result = run(SERVING_CLIENT, export_dir, tmp_path / "images.npy", results)
    assert result.returncode == 0, result.stderr
    with np.load(results) as loaded:
        return dict(loaded)


# export_tokenizer.py always runs on TensorFlow, and the SavedModel is served by
# TensorFlow: the CLI's and the server's own behaviour is checked once
# (`backend_independent`). What each backend must get right, that a model it
# trained exports and serves its own tokens, is checked on all three.


@pytest.mark.backend_independent
def test_cli_writes_tf_serving_layout_and_prints_signatures(cli_export):
    base, stdout = cli_export
    assert (base / "1" / "saved_model.pb").is_file()
    assert (base / "1" / "variables").is_dir()
    assert "encode: images uint8 (None, 32, 32, 3) -> tokens int32 (None, 8, 8)" in (
        stdout
    )
    assert "decode: tokens int32 (None, 8, 8) -> images uint8 (None, 32, 32, 3)" in (
        stdout
    )
    assert "serving_default: images uint8 (None, 32, 32, 3)" in stdout
    assert read_tokenizer_info(base / "1") == {
        "num_embeddings": K,
        "vocabulary_size": K,
        "stride": 4,
        "image_shape": [32, 32, 3],
        "token_shape": [8, 8],
        "max_image_size": 1024,
    }


def test_clean_tensorflow_process_serves_the_models_tokens(
    cli_export, model, images, tmp_path
):
    base, _ = cli_export
    served = serve(base / "1", images, tmp_path)
    assert json.loads(str(served["keras_dvq_modules"])) == []

    tokens = model.encode(images)
    assert len(np.unique(tokens)) > 1
    for name in ("tokens", "tokens_one_by_one", "serving_default"):  # batch 64, 1
        assert_same_tokens(served[name], tokens, model, images)
    # decode(encode(x)) is predict(x), up to the uint8 rounding.
    assert served["decoded"].dtype == np.uint8
    reconstructions = model.predict(images, verbose=0) * 255.0
    np.testing.assert_allclose(served["decoded"], reconstructions, atol=0.51)

    errors = json.loads(str(served["errors"]))
    for name in ("too_large", "negative"):
        assert re.search(r"ids must be in \[0, 16\)", errors[name]), errors[name]


@pytest.mark.backend_independent
def test_saved_model_cli_reads_the_signatures(cli_export):
    base, _ = cli_export
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [cli, "show", "--dir", base / "1", "--all"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    signatures = dict(
        re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name", result.stdout, re.S)
    )
    assert {"encode", "decode", "serving_default"} <= set(signatures)
    for name, (input_dtype, output_dtype) in {
        "encode": ("DT_UINT8", "DT_INT32"),
        "serving_default": ("DT_UINT8", "DT_INT32"),
        "decode": ("DT_INT32", "DT_UINT8"),
    }.items():
        dtypes = re.findall(r"dtype: (\w+)", signatures[name])
        assert dtypes == [input_dtype, output_dtype], name
    assert "shape: (-1, 32, 32, 3)" in signatures["encode"]
    assert "shape: (-1, 8, 8)" in signatures["decode"]


@pytest.mark.backend_independent
def test_cli_numbers_versions_and_never_overwrites(cli_export, trained_path):
    base, _ = cli_export
    second = run(EXPORT_SCRIPT, trained_path, base)
    assert second.returncode == 0, second.stderr
    assert (base / "2" / "saved_model.pb").is_file()
    again = run(EXPORT_SCRIPT, trained_path, base, "--version", "1")
    assert again.returncode == 2
    assert "--version 1" in again.stderr and "never overwritten" in again.stderr
    assert "Traceback" not in again.stderr


def test_export_from_this_backend_any_image_size(model, images, tmp_path):
    # On JAX and PyTorch this goes through a TensorFlow-backend subprocess.
    export_dir = export_tokenizer(model, str(tmp_path / "tokenizer" / "1"))
    info = read_tokenizer_info(export_dir)
    assert info["image_shape"] == [None, None, 3]
    assert info["max_image_size"] == 1024  # the default limit
    larger = np.concatenate([images[:8], images[8:16]], axis=2)  # 32 x 64
    import tensorflow as tf

    tokenizer = tf.saved_model.load(export_dir)
    tokens = tokenizer.signatures["encode"](images=tf.constant(larger))["tokens"]
    assert_same_tokens(tokens.numpy(), model.encode(larger), model, larger)
    with pytest.raises(tf.errors.InvalidArgumentError, match="divisible by 4"):
        tokenizer.signatures["encode"](images=tf.constant(images[:2, :30, :30]))


# The other flavors' signatures, once: that their models round-trip through
# .keras on every backend is checked in test_quantizer.py and test_vqvae.py.
@pytest.mark.backend_independent
def test_gumbel_logit_laplace_model_exports(images, tmp_path):
    model = VQVAE.from_flavors(
        vq_flavor="gumbel", loss_flavor="logit_laplace", num_embeddings=K, n_hid=8
    )
    model.build((None, 32, 32, 3))
    export_dir = export_tokenizer(model, str(tmp_path / "1"), image_shape=(32, 32, 3))
    served = serve(export_dir, images[:8], tmp_path)
    np.testing.assert_array_equal(served["tokens"], model.encode(images[:8]))
    reconstructions = model.predict(images[:8], verbose=0) * 255.0
    np.testing.assert_allclose(served["decoded"], reconstructions, atol=0.51)


@pytest.mark.backend_independent
def test_residual_tokens_export_with_their_depth_axis(images, tmp_path):
    model = VQVAE.from_flavors(
        vq_flavor="rvq", num_quantizers=3, num_embeddings=K, embedding_dim=4, n_hid=8
    )
    model.build((None, 32, 32, 3))
    export_dir = export_tokenizer(model, str(tmp_path / "1"), image_shape=(32, 32, 3))
    info = read_tokenizer_info(export_dir)
    assert info["token_shape"] == [8, 8, 3]
    assert info["vocabulary_size"] == K
    served = serve(export_dir, images[:8], tmp_path)
    assert served["tokens"].shape == (8, 8, 8, 3)
    np.testing.assert_array_equal(served["tokens"], model.encode(images[:8]))
    reconstructions = model.predict(images[:8], verbose=0) * 255.0
    np.testing.assert_allclose(served["decoded"], reconstructions, atol=0.51)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_shape": (32, 32, 1)}, r"channels=3.*image_shape=\(32, 32, 1\)"),
        ({"image_shape": (30, 32, 3)}, r"divisible by the encoder stride 4"),
        ({"image_shape": (32, 32)}, r"\(height, width, channels\)"),
        ({"image_shape": (0, 32, 3)}, r"positive integer"),
    ],
)
def test_export_rejects_bad_image_shapes(model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_tokenizer(model, str(tmp_path / "1"), **kwargs)
    assert not (tmp_path / "1").exists()


def test_export_refuses_unbuilt_models_and_existing_exports(model, tmp_path):
    with pytest.raises(ValueError, match="must be built"):
        export_tokenizer(VQVAE.from_flavors(n_hid=8), str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "saved_model.pb").write_text("an earlier export")
    with pytest.raises(ValueError, match="not overwritten"):
        export_tokenizer(model, str(tmp_path / "b"))
    assert (tmp_path / "b" / "saved_model.pb").read_text() == "an earlier export"
    with pytest.raises(ValueError, match="must be a keras_dvq VQVAE"):
        export_tokenizer(keras.Sequential([keras.layers.Dense(2)]), str(tmp_path / "c"))


@pytest.mark.parametrize(
    "setup, flags, message",
    [
        (None, ["missing.keras"], "not found"),
        ("corrupt", ["corrupt.keras"], "cannot be loaded"),
        (None, ["model.keras", "--image_shape", "32,32"], "expected H,W,C"),
        (None, ["model.keras", "--version", "0"], "expected a positive integer"),
    ],
)
@pytest.mark.backend_independent
def test_cli_errors_are_one_line(tmp_path, setup, flags, message, capsys):
    # In-process (test_cli_numbers_versions_and_never_overwrites runs the
    # script's real process into an error).
    if setup == "corrupt":
        (tmp_path / "corrupt.keras").write_bytes(b"not a zip file")
    model_path, *rest = flags
    assert export_script_exit_code(tmp_path / model_path, tmp_path / "out", *rest) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after argparse's usage
    assert ": error: " in error and message in error  # argparse: "PROG: error: "
    assert not (tmp_path / "out").exists()


@pytest.mark.backend_independent  # the server's limits
def test_requests_above_max_image_size_fail(model, images, tmp_path):
    import tensorflow as tf

    export_dir = export_tokenizer(model, str(tmp_path / "1"), max_image_size=64)
    assert read_tokenizer_info(export_dir)["max_image_size"] == 64
    tokenizer = tf.saved_model.load(export_dir)
    encode, decode = tokenizer.signatures["encode"], tokenizer.signatures["decode"]
    largest = np.tile(images[:2], (1, 2, 2, 1))  # 64 x 64: still served
    assert encode(images=tf.constant(largest))["tokens"].shape == (2, 16, 16)
    assert decode(tokens=tf.zeros((1, 16, 16), tf.int32))["images"].shape == (
        1, 64, 64, 3,
    )  # fmt: skip
    taller = np.tile(images[:1], (1, 3, 1, 1))  # 96 x 32
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 64"):
        encode(images=tf.constant(taller))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 16"):
        decode(tokens=tf.zeros((1, 8, 17), tf.int32))
    with pytest.raises(ValueError, match="max_image_size.*Received: max_image_size=64"):
        export_tokenizer(
            model, str(tmp_path / "2"), image_shape=(128, 128, 3), max_image_size=64
        )


def test_export_refuses_non_finite_weights(tmp_path):
    model = VQVAE.from_flavors(num_embeddings=K, embedding_dim=4, n_hid=8)
    model.build((None, 32, 32, 3))
    bias = model.decoder.weights[-1]
    bias.assign(np.full(bias.shape, np.nan, "float32"))  # as a diverged run
    with pytest.raises(ValueError, match="Argument `model`: the model's weights"):
        export_tokenizer(model, str(tmp_path / "1"))
    assert not (tmp_path / "1").exists()


@pytest.mark.backend_independent
def test_cli_refuses_a_diverged_model(tmp_path, capsys):
    model = VQVAE.from_flavors(num_embeddings=K, embedding_dim=4, n_hid=8)
    model.build((None, 32, 32, 3))
    bias = model.decoder.weights[-1]
    bias.assign(np.full(bias.shape, np.nan, "float32"))
    model.save(tmp_path / "diverged.keras")
    code = export_script_exit_code(tmp_path / "diverged.keras", tmp_path / "out")
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("export_tokenizer.py: error: MODEL ") and "\n" not in error
    assert "weights are not finite" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.backend_independent
def test_cli_serves_at_the_recorded_size_unless_told(model, tmp_path, capsys):
    """A model that records its training size is served at it without a flag;
    one saved before that record (the session's) at any size; --image_shape
    wins (the network is fully convolutional)."""
    sized = VQVAE.from_config({**model.get_config(), "image_size": 16})
    sized.build((None, 16, 16, 3))
    sized.set_weights(model.get_weights())
    sized.save(tmp_path / "sized.keras")
    model.save(tmp_path / "unsized.keras")
    shapes = []
    for source, flags in (
        ("sized", []),
        ("sized", ["--image_shape", "none,none,3"]),
        ("unsized", []),
    ):
        base = tmp_path / f"export-{len(shapes)}"
        assert export_script_exit_code(tmp_path / f"{source}.keras", base, *flags) == 0
        shapes.append(read_tokenizer_info(base / "1")["image_shape"])
    assert shapes == [[16, 16, 3], [None, None, 3], [None, None, 3]]
