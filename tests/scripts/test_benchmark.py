"""scripts/benchmark.py: a smoke run of its quick mode (tiny sizes; no timing
assertions), its flags and its error rows. The measurements themselves are
tested in tests/benchmarks/."""

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


@pytest.mark.slow
def test_vqgan_row_runs_against_diffusers_vq_model(tmp_path, capsys):
    pytest.importorskip("diffusers")
    out = tmp_path / "bench.json"
    backend = keras.backend.backend()
    argv = ["--quick", "--backend", backend, "--models", "vqgan"]
    assert benchmark.main(argv + ["--image_size", "64", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    result = report["backends"][backend]["vqgan"]
    assert "error" not in result, result.get("error")
    assert (result["image_size"], result["batch_size"]) == (64, 2)
    # recipes/vqgan-small.json: 1,024 codes, stride 8 (8x8 grids at 64 px).
    assert result["num_embeddings"] == 1024
    assert result["distance_matrix_mb"] == 2 * 64 * 1024 * 4 / 2**20
    assert result["reference_images_per_s"] > 0
    assert result["train_over_reference"] == pytest.approx(
        result["train_images_per_s"] / result["reference_images_per_s"]
    )
    assert report["pipeline"]["images_per_s"] > 0  # sample at 64 px
    table = capsys.readouterr().out
    assert f"| {backend} | vqgan (64 px, batch 2) |" in table
    assert "input pipeline (`sample` at 64 px, tf.data)" in table


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


@pytest.mark.backend_independent
def test_fit_and_mixed_precision_rows_follow_the_deepmind_model():
    assert benchmark.tasks(["dalle"], mixed_precision=True) == [
        ("dalle", "dalle", "float32")
    ]
    planned = benchmark.tasks(["deepmind"], mixed_precision=True)
    assert [key for key, _, _ in planned] == [
        "deepmind",
        "fit",
        "deepmind_mixed_bfloat16",
        "fit_mixed_bfloat16",
        "usage_float32",
        "usage_mixed_bfloat16",
    ]
    assert ("fit_mixed_bfloat16", "fit", "mixed_bfloat16") in planned


@pytest.mark.backend_independent
def test_failed_measurements_exit_1_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "launch", lambda *args: {"error": "no GPU seen"})
    out = tmp_path / "report.json"
    argv = ["--backend", "tensorflow", "--models", "deepmind", "--quick"]
    assert benchmark.main([*argv, "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("benchmark.py: error: ")
    assert "measurement(s) failed, the first: no GPU seen" in error
    assert error.count("\n") == 1 and out.exists()  # the report is written
