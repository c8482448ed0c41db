import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_dvq import data as data_module
from keras_dvq.image_logging import ReconstructionLogger

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
TINY = ["--n_hid", "8", "--num_embeddings", "16", "--embedding_dim", "4"]


@pytest.fixture(scope="module")
def train_script():
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_folder(root, count=40):
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir()
    for index in range(count):
        pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{index:03d}.png")
    return f"folder:{root}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "flavor_flags",
    [[], ["--vq_flavor", "gumbel", "--loss_flavor", "logit_laplace"]],
    ids=["vqvae", "gumbel"],
)
def test_main_job_on_sample_writes_every_output(train_script, tmp_path, flavor_flags):
    out = tmp_path / "run"
    argv = ["--dataset", "sample", "--out", str(out), "--max_steps", "4", *TINY]
    argv += flavor_flags
    assert train_script.main(argv) == 0
    for name in (
        "model.keras",
        "best.keras",
        "metrics.csv",
        "reconstructions.png",
        "codebook_usage.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (out / "backup").exists()  # removed after a finished run
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1
    assert {"recon_loss", "val_recon_loss", "val_perplexity", "val_cluster_use"} <= set(
        rows[0]
    )


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(train_script, tmp_path, monkeypatch):
    dataset = image_folder(tmp_path / "images")  # 36 train images: 4 batches of 8
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "12",
            "--batch_size", "8", *TINY]  # fmt: skip

    original = ReconstructionLogger.on_epoch_end

    def crash_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(ReconstructionLogger, "on_epoch_end", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_script.main(argv)
    assert (out / "backup").is_dir() and not (out / "model.keras").exists()
    monkeypatch.setattr(ReconstructionLogger, "on_epoch_end", original)

    assert train_script.main(argv) == 2  # refuses to clobber without --resume
    assert train_script.main([*argv, "--resume"]) == 0
    with open(out / "metrics.csv") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == [0, 1, 2]  # finished epochs kept, none repeated
    assert (out / "model.keras").exists() and not (out / "backup").exists()


def test_library_errors_become_one_line(train_script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_module, "_unreachable", lambda host: "offline")
    argv = ["--dataset", "cifar10", "--data_dir", str(tmp_path), "--out", str(tmp_path)]
    assert train_script.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("train.py: error: Dataset 'cifar10' is not prepared")
    assert "\n" not in error
    assert train_script.main([*argv[:-2], "--out", str(tmp_path), "--resume"]) == 2
    assert "no interrupted run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--batch_size", "0"], "--batch_size: expected a positive integer, got 0"),
        (["--vq_flavor", "kmeans"], "--vq_flavor: invalid choice: 'kmeans'"),
        (["--gpus", "2"], "--gpus 2: multi-device training"),
    ],
)
def test_invalid_flags_exit_2_without_traceback(tmp_path, flags, match):
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dataset",
            "sample",
            "--out",
            str(tmp_path),
            *flags,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=120,
    )
    assert result.returncode == 2
    assert match in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_mixed_precision_keeps_the_quantizer_in_float32(train_script, tmp_path):
    import keras

    dataset = image_folder(tmp_path / "images", count=20)
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "2",
            "--batch_size", "8", "--mixed_precision", *TINY]  # fmt: skip
    assert train_script.main(argv) == 0
    model = keras.models.load_model(out / "model.keras")
    assert model.encoder.compute_dtype == "bfloat16"
    assert model.quantizer.codebook.dtype == "float32"
    assert (
        model.quantizer.project(np.zeros((1, 8, 8, 16), "float32")).dtype == "float32"
    )
