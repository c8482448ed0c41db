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
    # The compiled step never waits for the host. PyTorch runs eagerly; the
    # one read left is Keras' own seeding of its random generator.
    allowed = 1 if backend == "torch" else 0
    assert result["host_round_trips"]["per_step"] <= allowed
    table = capsys.readouterr().out
    assert f"| {backend} | deepmind |" in table


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


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="one backend suffices"
)
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
