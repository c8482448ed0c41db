"""The main job at 128 px: a vqgan tokenizer trains, evaluates, exports and
tokenizes `sample` at 128 px (16x16 grids), and a prior trains on its tokens
and samples 128-px images, every size taken from the model."""

import json

import numpy as np
import pytest

from keras_dvq.export.saved_model import read_tokenizer_info
from tests.testing import run_script

# One backend: each script's backends are tested in its own file; this
# checks that the sizes connect from the flag to the samples.
pytestmark = [pytest.mark.backend_independent, pytest.mark.slow]

TINY_VQGAN = [
    "--enc_dec_flavor", "vqgan", "--ch", "8", "--ch_mult", "1,1,2,2",
    "--num_res_blocks", "1", "--attn_levels", "3", "--z_channels", "8",
    "--norm_groups", "4", "--num_embeddings", "64", "--embedding_dim", "4",
]  # fmt: skip
VALIDATION_PATCHES = 318  # of `sample` at 128 px


def test_the_chain_runs_at_128_px_with_sizes_from_the_model(tmp_path):
    run = tmp_path / "vqgan128"
    trained = run_script(
        "train", "--dataset", "sample", "--image_size", "128", "--batch_size", "4",
        "--max_steps", "2", "--out", run, *TINY_VQGAN,
    )  # fmt: skip
    assert trained.code == 0, trained.err[-2000:]
    model = run / "model.keras"

    # No --image_size from here on: the model says 128.
    evaluated = run_script(
        "evaluate", model, "--dataset", "sample", "--out", tmp_path / "eval", "--quiet"
    )
    assert evaluated.code == 0, evaluated.err[-2000:]
    results = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    (row,) = results["models"]
    assert row["num_images"] == VALIDATION_PATCHES and row["image_size"] == 128

    assert run_script("export_tokenizer", model, tmp_path / "tokenizer").code == 0
    export = tmp_path / "tokenizer" / "1"  # the first version
    info = read_tokenizer_info(str(export))
    assert info["image_shape"][:2] == [128, 128] and info["token_shape"] == [16, 16]

    tokens = tmp_path / "tokens"
    tokenized = run_script(
        "tokenize_dataset", "--tokenizer", export, "--dataset", "sample",
        "--split", "validation", "--out", tokens, "--quiet",
    )  # fmt: skip
    assert tokenized.code == 0, tokenized.err[-2000:]
    metadata = json.loads((tokens / "metadata.json").read_text())
    assert metadata["image_size"] == 128 and metadata["token_shape"] == [16, 16]
    assert metadata["num_images"] == VALIDATION_PATCHES

    prior = tmp_path / "prior"
    trained_prior = run_script(
        "train_prior", "--tokens", tokens, "--out", prior, "--max_steps", "2",
        "--hidden_dim", "16", "--num_layers", "1", "--num_heads", "2",
        "--batch_size", "8", "--unconditional",
    )  # fmt: skip
    assert trained_prior.code == 0, trained_prior.err[-2000:]
    sampled = run_script(
        "sample", "--prior", prior / "prior.keras", "--tokenizer", model,
        "--num_images", "2", "--out", tmp_path / "samples",
    )  # fmt: skip
    assert sampled.code == 0, sampled.err[-2000:]
    samples = np.load(tmp_path / "samples" / "samples.npy")
    assert samples.shape == (2, 128, 128, 3) and samples.dtype == np.uint8
    grids = np.load(tmp_path / "samples" / "sample_tokens.npy")
    assert grids.shape == (2, 16, 16) and grids.max() < 64
