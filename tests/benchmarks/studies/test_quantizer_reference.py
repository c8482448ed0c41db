"""benchmarks.studies.quantizer_reference: vector-quantize-pytorch's
quantizers in the reference loop, on a few steps."""

import json
import sys

import numpy as np
import pytest

from benchmarks.data import sample_images
from benchmarks.studies import quantizer_reference

# PyTorch code, the same under every Keras backend.
pytestmark = pytest.mark.backend_independent


def test_a_missing_library_is_one_line_and_exit_2(monkeypatch, capsys):
    # A None entry makes `import vector_quantize_pytorch` raise ImportError.
    monkeypatch.setitem(sys.modules, "vector_quantize_pytorch", None)
    assert quantizer_reference.main(["--quantizer", "fsq"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith("quantizer_reference.py: error: ")
    assert 'pip install "keras-dvq[study]"' in error


def test_bad_levels_and_codebook_sizes_are_usage_errors():
    for argv in (
        ["--quantizer", "fsq", "--levels", "8,2,5"],
        ["--quantizer", "lfq", "--codebook_size", "1000"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            quantizer_reference.parse_args(argv)
        assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "name, vocabulary_size", [("fsq", 1000), ("lfq", 1024), ("vq", 1024)]
)
def test_each_quantizer_takes_the_vq_layers_place(name, vocabulary_size):
    torch = pytest.importorskip("torch")
    pytest.importorskip("vector_quantize_pytorch")
    quantizer, size = quantizer_reference.make_quantizer(name)
    assert size == vocabulary_size
    model = quantizer_reference.quantized_model(quantizer, n_hid=8)
    x = torch.as_tensor(np.zeros((2, 3, 32, 32), "float32"))
    x_hat, aux_loss, tokens = model(x)
    assert tuple(x_hat.shape) == (2, 3, 32, 32)
    assert tuple(tokens.shape) == (2, 8, 8)
    assert aux_loss.ndim == 0
    assert 0 <= int(tokens.min()) and int(tokens.max()) < vocabulary_size
    # Only weight matrices (and kernels) are weight-decayed, as VQVAE.compile.
    decayed, plain = quantizer_reference.optimizer_of(model, 3e-4).param_groups
    assert decayed["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"])
    assert all(p.ndim == 1 for p in plain["params"])


def test_a_short_run_writes_the_yardstick(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("vector_quantize_pytorch")
    import tensorflow as tf

    images = {"train": sample_images(32), "validation": sample_images(20)}

    def small_dataset(name, split, batch_size, seed=None):
        assert name == "sample"
        return tf.data.Dataset.from_tensor_slices(images[split]).batch(batch_size)

    monkeypatch.setattr(quantizer_reference, "load_dataset", small_dataset)
    argv = ["--quantizer", "lfq", "--steps", "3", "--eval_every", "2"]
    argv += ["--n_hid", "8", "--batch_size", "8", "--out", str(tmp_path)]
    assert quantizer_reference.main(argv) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    # Validation after steps 2 and 3 (the last).
    assert [epoch["step"] for epoch in result["epochs"]] == [2, 3]
    validation = result["validation"]
    assert validation["num_images"] == 20
    assert validation["vocabulary_size"] == 1024
    assert validation["tokens_per_image"] == 64
    assert 1 <= validation["codes_used"] <= 20 * 64
    assert np.isfinite(validation["psnr"]) and validation["psnr"] > 0
    assert result["validation"]["psnr"] == result["epochs"][-1]["val_psnr"]
    assert result["settings"]["steps"] == 3


@pytest.mark.parametrize("normalize_inputs", [False, True])
def test_normalized_inputs_reach_the_quantizer_standardized(normalize_inputs):
    torch = pytest.importorskip("torch")
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, z):
            seen.append(z.detach().numpy())
            return z, torch.zeros(z.shape[:2], dtype=torch.long)

    model = quantizer_reference.quantized_model(
        Recorder(), n_hid=8, normalize_inputs=normalize_inputs
    )
    x = torch.as_tensor(np.random.RandomState(0).rand(2, 3, 32, 32) - 0.5).float()
    x_hat, aux_loss, tokens = model(x)
    assert tuple(x_hat.shape) == (2, 3, 32, 32) and float(aux_loss) == 0.0
    (z,) = seen
    assert z.shape == (2, 64, quantizer_reference.EMBEDDING_DIM)
    mean, std = z.mean(axis=-1), z.std(axis=-1)
    standardized = np.allclose(mean, 0, atol=1e-5) and np.allclose(std, 1, atol=1e-3)
    assert standardized == normalize_inputs
    parameters = dict(model.named_parameters())
    assert not any(name.startswith("normalize") for name in parameters)
