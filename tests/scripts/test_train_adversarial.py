"""train.py with a discriminator: flags, the recipe, a run that resumes,
evaluates and exports."""

import csv
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_dvq.evaluation import lpips as lpips_module
from keras_dvq.evaluation.lpips import LPIPS
from keras_dvq.evaluation.lpips import LPIPS_CHANNELS
from keras_dvq.models import VQVAE
from keras_dvq.models import AdversarialVQVAE
from keras_dvq.training import flags as train_flags
from keras_dvq.training import run as train_run
from keras_dvq.training.config import TrainingConfig
from keras_dvq.utils.errors import BadInput
from tests.testing import image_folder
from tests.testing import interrupt_training
from tests.testing import load_script

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = ["--n_hid", "8", "--num_embeddings", "16", "--embedding_dim", "4"]
GAN = ["--disc_weight", "0.5", "--disc_layers", "1", "--disc_ndf", "4"]


@pytest.fixture(scope="module")
def train_script():
    return load_script("train")


def test_the_vqgan_recipe_parses_and_builds(tmp_path):
    config = train_flags.parse_train_config(
        ["--hparams", str(RECIPES / "vqgan.json"), "--out", str(tmp_path)]
    )
    assert (config.enc_dec_flavor, config.image_size) == ("deepmind", 32)
    options = config.adversarial_options()
    assert options == {
        "disc_weight": 0.0005,
        "disc_start": 1000,
        "disc_loss": "hinge",
        "disc_layers": 2,
        "disc_ndf": 32,
        "disc_lr": 3e-4,  # the learning rate's
        "lecam_weight": 0.0,
        "perceptual_weight": 0.0,
    }
    model = train_run.build_model(config, config.recipe_hparams(), 10)
    model.build((None, 32, 32, 3))
    assert isinstance(model, AdversarialVQVAE)
    assert (model.disc_weight, model.disc_start, model.disc_loss) == (
        0.0005,
        1000,
        "hinge",
    )
    assert model.discriminator.n_layers == 2 and model.discriminator.ndf == 32
    assert model.discriminator.compute_output_shape((1, 32, 32, 3)) == (1, 6, 6, 1)
    adam, adamw = model.optimizer.optimizers
    assert (type(adam).__name__, adam.beta_1, adam.beta_2) == ("Adam", 0.5, 0.9)
    assert float(keras.ops.convert_to_numpy(adam.learning_rate)) == pytest.approx(3e-4)
    assert type(adamw).__name__ == "AdamW"
    record = config.run_record()
    assert record["disc_weight"] == 0.0005 and "disc_lr" not in record


def test_flags_set_the_adversarial_options(tmp_path):
    config = train_flags.parse_train_config(
        [
            "--out", str(tmp_path), "--disc_weight", "0.2", "--disc_start", "7",
            "--disc_loss", "non_saturating", "--disc_layers", "1", "--disc_ndf", "8",
            "--disc_lr", "1e-4", "--lecam_weight", "0.001",
        ]
    )  # fmt: skip
    assert config.adversarial_options() == {
        "disc_weight": 0.2,
        "disc_start": 7,
        "disc_loss": "non_saturating",
        "disc_layers": 1,
        "disc_ndf": 8,
        "disc_lr": 1e-4,
        "lecam_weight": 0.001,
        "perceptual_weight": 0.0,
    }
    assert config.run_record()["disc_lr"] == 1e-4


def test_runs_without_a_discriminator_keep_their_record(tmp_path):
    """Records of plain runs hold no adversarial keys, as before them, so
    runs begun before can resume."""
    config = TrainingConfig(out=str(tmp_path), dataset="sample")
    assert config.adversarial_options() is None
    assert not {k for k in config.run_record() if k.startswith(("disc", "lecam"))}


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--disc_start", "5"], "--disc_start applies with a discriminator only"),
        (["--lecam_weight", "0.1"], "--lecam_weight applies with a discriminator"),
        (
            ["--disc_weight", "0.1", "--disc_layers", "4"],
            r"--disc_layers 4: .*at most 3 for this size",
        ),
        (
            ["--perceptual_weight", "1"],
            "--perceptual_weight applies with a discriminator only",
        ),
        (
            ["--disc_weight", "0.1", "--vgg_weights", "vgg16.h5"],
            "--vgg_weights applies with a perceptual loss only: set "
            "--perceptual_weight",
        ),
    ],
)
def test_bad_adversarial_settings_exit_2(train_script, tmp_path, capsys, flags, match):
    argv = ["--dataset", "sample", "--out", str(tmp_path / "run"), *flags]
    assert train_script.main(argv) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert re.search(match, error)
    assert not (tmp_path / "run").exists()


def test_unknown_disc_loss_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        train_flags.parse_train_config(["--out", str(tmp_path), "--disc_loss", "w"])
    with pytest.raises(BadInput, match="disc_loss"):
        TrainingConfig(out=str(tmp_path), disc_loss="wasserstein")


def first_validation_image(dataset):
    from keras_dvq.data.datasets import load_dataset

    data = load_dataset(dataset, "validation", 1, image_size=32)
    return next(iter(data.take(1).as_numpy_iterator()))


# Once, under TensorFlow: fit with the discriminator, its files and resumption
# are checked on every backend in tests/models/test_adversarial.py.
@pytest.mark.slow
@pytest.mark.backend_independent
def test_an_adversarial_run_resumes_evaluates_and_exports(
    train_script, tmp_path, monkeypatch
):
    dataset = image_folder(tmp_path / "images")  # 36 train images: 4 batches of 8
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "12",
            "--batch_size", "8", "--disc_start", "6", *TINY, *GAN]  # fmt: skip
    interrupt_training(train_script, argv, monkeypatch)
    assert train_script.main([*argv, "--resume"]) == 0
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    # Steps 0-5 (epoch 0 and half of epoch 1) before disc_start: 4 steps of 4
    # at weight 0, then 2 of 4 at 0.5, then 4 of 4.
    weights = [float(row["adv_weight"]) for row in rows]
    np.testing.assert_allclose(weights, [0.0, 0.25, 0.5], atol=1e-6)
    assert {"disc_loss", "logits_real", "val_logits_fake"} <= set(rows[0])
    model = keras.models.load_model(out / "model.keras")
    assert isinstance(model, AdversarialVQVAE)
    step = int(keras.ops.convert_to_numpy(model.adversarial_step))
    assert step == 12  # the counter behind disc_start came through the resume

    evaluate = load_script("evaluate")
    results = tmp_path / "evaluation"
    argv = [str(out / "model.keras"), "--dataset", dataset, "--out", str(results)]
    assert evaluate.main([*argv, "--quiet"]) == 0
    (row,) = json.loads((results / "evaluation.json").read_text())["models"]
    assert np.isfinite(row["psnr"])
    export = load_script("export_tokenizer")
    assert export.main([str(out / "model.keras"), str(tmp_path / "tok")]) == 0
    assert (tmp_path / "tok" / "1" / "saved_model.pb").exists()
    tokenize = load_script("tokenize_dataset")
    shards = tmp_path / "shards"
    argv = ["--model", str(out / "model.keras"), "--dataset", dataset]
    assert tokenize.main([*argv, "--split", "validation", "--out", str(shards)]) == 0
    written = sorted(path.name for path in shards.iterdir())
    assert written and not any("discriminator" in name for name in written)
    tokens = np.concatenate(
        [np.load(path) for path in sorted(shards.glob("*.npy"))], axis=0
    )
    np.testing.assert_array_equal(
        tokens.reshape(-1, 8, 8)[:1], model.encode(first_validation_image(dataset))
    )
    assert isinstance(model.as_vqvae(), VQVAE)


def test_a_perceptual_loss_without_weights_exits_2_before_the_data(
    train_script, tmp_path, capsys, monkeypatch
):
    """Nothing to find (no Keras cache, no lpips package) or a named file
    that is not there: one line naming how to supply them, before the
    (missing) data is opened."""
    monkeypatch.setattr(lpips_module, "cached_keras_vgg16", lambda: None)
    monkeypatch.setattr(lpips_module, "installed_lpips_heads", lambda: None)
    argv = [
        "--dataset",
        f"folder:{tmp_path / 'no_images'}",
        "--out",
        str(tmp_path / "run"),
    ]
    argv += ["--disc_weight", "0.1", "--perceptual_weight", "0.5"]
    for flags, match in (
        ([], r"--perceptual_weight 0.5: LPIPS needs trained weights \(VGG16 weights "
         r"missing\): give --vgg_weights FILE"),
        (["--vgg_weights", str(tmp_path / "vgg16.h5")],
         r"--perceptual_weight 0.5: --vgg_weights .*vgg16.h5: not found"),
    ):  # fmt: skip
        assert train_script.main([*argv, *flags]) == 2
        error = capsys.readouterr().err
        assert len(error.strip().splitlines()) == 1
        assert re.search(match, error), error
        assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random LPIPS weights in the files users give: a Keras VGG16 notop
    weights file and heads as .npz."""
    folder = tmp_path_factory.mktemp("lpips")
    keras.utils.set_random_seed(5)
    lpips = LPIPS()
    vgg, heads = str(folder / "vgg16.weights.h5"), str(folder / "heads.npz")
    lpips.vgg.save_weights(vgg)
    rng = np.random.default_rng(5)
    arrays = {f"lin{i}": rng.uniform(0, 0.1, c) for i, c in enumerate(LPIPS_CHANNELS)}
    np.savez(heads, **arrays)
    return vgg, heads, arrays


# Under TensorFlow: the perceptual term's arithmetic is checked on every
# backend in tests/models/test_adversarial.py; this checks the flags' wiring.
@pytest.mark.slow
@pytest.mark.backend_independent
def test_perceptual_weight_trains_with_the_given_lpips(
    train_script, tmp_path, lpips_files
):
    vgg, heads, arrays = lpips_files
    dataset = image_folder(tmp_path / "images")
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "4",
            "--batch_size", "8", *TINY, *GAN, "--perceptual_weight", "2",
            "--vgg_weights", vgg, "--lpips_weights", heads]  # fmt: skip
    assert train_script.main(argv) == 0
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert all(float(row["perceptual_loss"]) > 0 for row in rows)
    record = json.loads((out / "run_config.json").read_text())
    assert record["perceptual_weight"] == 2.0
    assert "vgg_weights" not in record and "lpips_weights" not in record
    model = keras.models.load_model(out / "model.keras")
    assert model.perceptual_weight == 2.0
    assert isinstance(model.perceptual_model, LPIPS)
    assert not model.perceptual_model.trainable_weights
    # The heads came from the file and stayed as they were (frozen).
    head = keras.ops.convert_to_numpy(model.perceptual_model.heads[0].kernel)
    np.testing.assert_allclose(head.ravel(), arrays["lin0"], rtol=1e-6)
