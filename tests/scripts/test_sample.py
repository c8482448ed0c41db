"""scripts/sample.py: decoded samples from a prior and a tokenizer, the same
for the same seed, and one-line errors for bad input."""

import json
import shutil

import keras
import numpy as np
import pytest

from keras_dvq.models import VQVAE
from keras_dvq.models import TokenPrior
from tests.testing import ScriptResult
from tests.testing import assert_one_line_error
from tests.testing import load_script
from tests.testing import run_script

K = 16
GRID = (4, 4)  # 16x16 images through the DeepMind decoder (stride 4)
SMALL = {"hidden_dim": 16, "num_layers": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def script():
    return load_script("sample")


@pytest.fixture(scope="module")
def files(tiny_tokenizer, tmp_path_factory):
    # The session's trained tokenizer (16 codes); convolutional, it decodes
    # the priors' 4x4 grids into 16x16 images.
    root = tmp_path_factory.mktemp("models")
    shutil.copy(tiny_tokenizer, root / "vq.keras")
    other = VQVAE.from_flavors(num_embeddings=2 * K, embedding_dim=4, n_hid=8)
    other.build((None, 16, 16, 3))
    other.save(root / "vq32.keras")
    TokenPrior(K, GRID, num_classes=3, **SMALL).save(root / "prior.keras")
    TokenPrior(K, GRID, **SMALL).save(root / "unconditional.keras")
    return root


def run(script, files, out, *extra, prior="prior.keras", tokenizer="vq.keras"):
    argv = [
        "--prior", str(files / prior), "--tokenizer", str(tokenizer if "/" in
        str(tokenizer) else files / tokenizer), "--num_images", "5", "--out",
        str(out), *extra,
    ]  # fmt: skip
    return script.main(argv)


def test_writes_images_tokens_and_picture(script, files, tmp_path):
    out = tmp_path / "s"
    assert run(script, files, out, "--class_id", "2", "--top_k", "4") == 0
    images = np.load(out / "samples.npy")
    tokens = np.load(out / "sample_tokens.npy")
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    assert tokens.shape == (5, *GRID) and tokens.max() < K
    model = keras.models.load_model(files / "vq.keras")
    expected = np.round(np.clip(model.decode(tokens), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(images, expected)
    assert (out / "samples.png").stat().st_size > 1000
    report = json.loads((out / "sampling.json").read_text())
    assert report["class_id"] == 2 and report["cache"] is True
    assert report["tokens_per_second"] > 0


def test_same_seed_same_images(script, files, tmp_path):
    flags = ("--class_id", "0", "--temperature", "2")
    runs = [("a", "3"), ("b", "3"), ("c", "4")]
    for name, seed in runs:
        assert run(script, files, tmp_path / name, *flags, "--seed", seed) == 0
    first, again, other = (np.load(tmp_path / n / "samples.npy") for n, _ in runs)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_uncached_sampling_gives_the_same_images(script, files, tmp_path):
    for name, extra in (("cached", ()), ("uncached", ("--no_cache",))):
        flags = ("--class_id", "1", "--seed", "5", *extra)
        assert run(script, files, tmp_path / name, *flags) == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "cached" / "sample_tokens.npy"),
        np.load(tmp_path / "uncached" / "sample_tokens.npy"),
    )


@pytest.mark.backend_independent  # the SavedModel tokenizer path
def test_exported_tokenizer_decodes_like_the_keras_model(script, files, tmp_path):
    from keras_dvq.export.saved_model import export_tokenizer

    export_dir = tmp_path / "tokenizer" / "1"
    model = keras.models.load_model(files / "vq.keras")
    export_tokenizer(model, str(export_dir), image_shape=(16, 16, 3))
    flags = ("--class_id", "1", "--seed", "2")
    assert run(script, files, tmp_path / "k", *flags) == 0
    assert run(script, files, tmp_path / "e", *flags, tokenizer=export_dir) == 0
    keras_images = np.load(tmp_path / "k" / "samples.npy").astype(int)
    saved_images = np.load(tmp_path / "e" / "samples.npy").astype(int)
    assert np.abs(keras_images - saved_images).max() <= 1  # rounding only

    other_grid = tmp_path / "tokenizer32" / "1"
    export_tokenizer(model, str(other_grid), image_shape=(32, 32, 3))
    assert run(script, files, tmp_path / "g", *flags, tokenizer=other_grid) == 2


@pytest.mark.parametrize(
    "extra, kwargs, message",
    [
        (("--class_id", "3"), {}, "--class_id 3: expected an id in [0, 3)"),
        (("--class_id", "-1"), {}, "--class_id -1: expected an id in [0, 3)"),
        ((), {}, "--class_id: the prior is conditioned on 3 classes"),
        (
            ("--class_id", "0"),
            {"prior": "unconditional.keras"},
            "--class_id 0: the prior is unconditional",
        ),
        (
            ("--class_id", "0"),
            {"tokenizer": "vq32.keras"},
            "vocabulary 32 on grids (any h, w) does not match the prior's "
            "(vocabulary 16, grids (4, 4))",
        ),
        (("--class_id", "0"), {"prior": "vq.keras"}, "expected a TokenPrior"),
        (("--class_id", "0"), {"prior": "missing.keras"}, "missing.keras: not found"),
        (("--class_id", "0"), {"tokenizer": "none.keras"}, "none.keras: not found"),
    ],
    ids=[
        "class_too_big",
        "class_negative",
        "class_missing",
        "class_for_unconditional",
        "vocabulary_mismatch",
        "not_a_prior",
        "missing_prior",
        "missing_tokenizer",
    ],
)
def test_bad_input_is_a_one_line_error(
    script, files, tmp_path, capsys, extra, kwargs, message
):
    assert run(script, files, tmp_path / "s", *extra, **kwargs) == 2
    result = ScriptResult(2, "", capsys.readouterr().err)
    assert_one_line_error(result, "sample", message)
    assert not (tmp_path / "s" / "samples.png").exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--num_images", "0"),
        ("--temperature", "0"),
        ("--temperature", "-1"),
        ("--top_k", "0"),
    ],
)
def test_non_positive_settings_exit_2(script, files, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        run(script, files, tmp_path / "s", flag, value)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_the_shared_prior_samples_through_the_shared_tokenizer(
    tiny_prior, tiny_tokenizer, tiny_token_shards, tmp_path
):
    # tokenizer -> shards (library writer) -> prior -> samples, end to end.
    out = tmp_path / "s"
    flags = ["--prior", tiny_prior, "--tokenizer", tiny_tokenizer, "--out", out]
    result = run_script("sample", *flags, "--num_images", "2", "--class_id", "1")
    assert result.code == 0, result.err[-2000:]
    tokens = np.load(out / "sample_tokens.npy")
    assert tokens.shape == (2, 8, 8) and tokens.max() < K
    assert np.load(out / "samples.npy").shape == (2, 32, 32, 3)
