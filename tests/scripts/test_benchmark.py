"""A smoke run of scripts/benchmark.py (tiny sizes; no timing assertions)."""

import json

import keras
import pytest

from tests.testing import load_script

benchmark = load_script("benchmark")


@pytest.mark.slow
def test_quick_run_writes_consistent_results(tmp_path, capsys):
    out = tmp_path / "bench.json"
    backend = keras.backend.backend()
    argv = ["--quick", "--backend", backend, "--models", "deepmind", "--out", str(out)]
    assert benchmark.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["quick"] is True
    assert report["pipeline"]["images_per_s"] > 0
    result = report["backends"][backend]["deepmind"]
    assert "error" not in result, result.get("error")
    assert result["backend"] == backend
    for key in ("train_images_per_s", "identity_images_per_s", "encode_images_per_s"):
        assert result[key] > 0
    rounds = report["settings"]["rounds"]
    assert all(len(v) == rounds for v in result["windows"].values())
    assert result["quantizer_overhead"] == pytest.approx(
        result["identity_images_per_s"] / result["train_images_per_s"] - 1
    )
    assert result["encode_over_train"] == pytest.approx(
        result["encode_images_per_s"] / result["train_images_per_s"]
    )
    assert result["peak_memory_mb"] > 0
    # Batch 8 of 8x8 token grids against 512 codes: one block holds them all.
    assert result["distance_matrix_mb"] == 8 * 64 * 512 * 4 / 2**20
    assert result["distance_block_mb"] == result["distance_matrix_mb"]
    # The compiled step never waits for the host. PyTorch runs eagerly; the
    # one read left is Keras' own seeding of its random generator.
    allowed = 1 if backend == "torch" else 0
    assert result["host_round_trips"]["per_step"] <= allowed
    # Every Keras row is a ratio to the PyTorch loop of the same rounds.
    assert len(result["windows"]["reference"]) == rounds
    assert result["reference_images_per_s"] > 0
    assert result["train_over_reference"] == pytest.approx(
        result["train_images_per_s"] / result["reference_images_per_s"]
    )
    assert result["identity_over_reference"] == pytest.approx(
        result["identity_images_per_s"] / result["reference_images_per_s"]
    )
    fit = report["backends"][backend]["fit"]
    assert "error" not in fit, fit.get("error")
    # Two epochs of 11 steps (180 training images of a folder in batches of
    # 16), validated each epoch.
    assert fit["train_steps"] == 22
    assert len(fit["validation_seconds"]) == 2
    assert fit["test_steps"] > 0
    assert fit["fit_over_reference"] == pytest.approx(
        fit["images_per_s"] / fit["reference_images_per_s"]
    )
    assert fit["validation"]["cluster_use"] > 0
    table = capsys.readouterr().out
    assert f"| {backend} | deepmind |" in table
    assert f"| {backend} | float32 | 22 |" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "deepmind,resnet"], "--models: unknown ['resnet']; choose"),
        (["--backend", "tensorflow,numpy"], "--backend: unknown ['numpy']; choose"),
        (["--batch_size", "0"], "--batch_size: expected a positive integer, got '0'"),
        (["--rounds", "two"], "--rounds: expected a positive integer, got 'two'"),
        (["--device", "tpu"], "--device: invalid choice: 'tpu'"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.backend_independent
def test_gpu_device_without_a_gpu_is_an_error_row_and_exit_1(tmp_path, capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    args = benchmark.parse_args(["--device", "gpu", "--quick"])
    result = benchmark.launch(args, "tensorflow", "deepmind")
    assert "--device gpu: the tensorflow backend sees no GPU" in result["error"]
    report = {"pipeline": {"images_per_s": 1.0}, "backends": {"tf": {"m": result}}}
    assert benchmark.failures(report) == [result["error"]]


def test_identity_bottleneck_passes_the_projection_through():
    import numpy as np
    from keras import ops

    bottleneck = benchmark._identity_bottleneck_class()(16, 4)
    features = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype("float32")
    projected, tokens = bottleneck(features)
    expected = bottleneck.projection(features)
    np.testing.assert_allclose(
        ops.convert_to_numpy(projected), ops.convert_to_numpy(expected)
    )
    assert tuple(tokens.shape) == (2, 3, 3)
    assert not ops.convert_to_numpy(tokens).any()


def test_graph_check_counts_python_callbacks():
    import tensorflow as tf

    def step(x):
        return tf.py_function(lambda y: y * 2, [x], tf.float32) + 1.0

    spec = tf.TensorSpec((), tf.float32)
    graph = tf.function(step).get_concrete_function(spec).graph
    counts = benchmark._tf_op_types(graph)
    assert sum(counts.get(op, 0) for op in benchmark.PY_FUNCTION_OPS) == 1


def test_reference_model_mirrors_the_keras_deepmind_vqvae():
    pytest.importorskip("torch")
    import numpy as np

    from keras_dvq.models import VQVAE

    reference = benchmark.reference_model()
    count = sum(p.numel() for p in reference.parameters())
    assert count == 695_491
    # The original recipe's model (gradient codebook) has the same weights.
    model = VQVAE.from_flavors(seed_faithful=True)
    model.build((None, 32, 32, 3))
    assert model.count_params() == count
    import torch

    x = torch.as_tensor(np.zeros((2, 3, 32, 32), "float32"))
    x_hat, latent_loss, tokens = reference(x)
    assert tuple(x_hat.shape) == (2, 3, 32, 32)
    assert tuple(tokens.shape) == (2, 8, 8)
    assert latent_loss.ndim == 0


def test_reference_loop_lowers_its_loss_on_a_fixed_batch():
    pytest.importorskip("torch")
    loop = benchmark.ReferenceLoop(n_hid=8, seed=0)
    batch = benchmark.sample_images(16)
    losses = [loop.step(batch) for _ in range(20)]
    assert max(losses[-3:]) < 0.8 * losses[0]


def test_fit_timeline_separates_steps_from_stalls():
    # Two epochs of three 1 s steps, 0.5 s test steps; the second epoch waits
    # 4 s before its first step.
    events, now = [("train_begin", 0.0)], 0.0

    def add(name, seconds=0.0):
        nonlocal now
        now += seconds
        events.append((name, now))

    for wait in (0.0, 4.0):
        add("epoch_begin")
        add("train_batch_begin", wait)
        for index in range(3):
            if index:
                add("train_batch_begin")
            add("train_batch_end", 1.0)
        add("test_begin")
        for _ in range(2):
            add("test_batch_begin")
            add("test_batch_end", 0.5)
        add("test_end")
        add("epoch_end")
    add("train_end")
    timeline = benchmark.fit_timeline(events, batch_size=10)
    assert timeline["train_steps"] == 6 and timeline["test_steps"] == 4
    # From the first step's end: 5 steps, 4 test steps and the 4 s wait.
    assert timeline["wall_seconds"] == pytest.approx(5 + 2 + 4)
    assert timeline["steps_seconds"] == pytest.approx(5 + 2)
    assert timeline["fit_over_steps"] == pytest.approx(4 / 7)
    assert timeline["epoch_start_seconds"] == pytest.approx([4.0])
    assert timeline["images_per_s"] == pytest.approx(50 / 11)
    assert timeline["step_images_per_s"] == pytest.approx(10.0)
    assert timeline["validation_seconds"] == pytest.approx([1.0, 1.0])
    assert timeline["epoch_end_seconds"] == pytest.approx([0.0, 0.0])
    assert timeline["in_step_excess_seconds"] == pytest.approx(0.0)


def test_larger_images_repeat_the_sample_pixels():
    small = benchmark.sample_images(3)
    large = benchmark.sample_images(3, image_size=64)
    assert large.shape == (3, 64, 64, 3) and large.dtype == small.dtype
    assert (large[:, ::2, ::2] == small).all()
    assert (large[:, 1::2, 1::2] == small).all()
