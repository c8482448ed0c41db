import csv
import json
import math
import shutil

import keras
import keras_tuner
import pytest

from keras_dvq.schedules import cosine_anneal
from keras_dvq.training import gumbel_search
from keras_dvq.training.builders import GUMBEL_DEFAULTS
from keras_dvq.training.builders import HPARAM_KEYS
from keras_dvq.training.builders import MODEL_FLAGS
from keras_dvq.training.builders import load_splits
from keras_dvq.utils.errors import BadInput
from tests.testing import image_folder
from tests.testing import load_script

TINY = ["--n_hid", "8", "--num_embeddings", "16", "--embedding_dim", "4"]
# 36 training images in batches of 8: 4 batches a pass, so 6 steps run as 2
# epochs of 3 and a trial has a best epoch to pick.
RUN = ["--batch_size", "8", "--max_steps", "6", *TINY]


@pytest.fixture(scope="module")
def tune_script():
    return load_script("tune_gumbel")


@pytest.fixture(scope="module")
def train_script():
    return load_script("train")


@pytest.fixture(scope="module")
def search(tune_script, tmp_path_factory):
    """A finished two-trial random search; tests that change it copy it."""
    keras.backend.clear_session(free_memory=False)
    root = tmp_path_factory.mktemp("tune")
    dataset = image_folder(root / "images")
    argv = ["--dataset", dataset, *RUN, "--out", str(root / "search")]
    assert tune_script.main([*argv, "--tuner", "random", "--max_trials", "2"]) == 0
    return root / "search", argv


def read_trials(out):
    with open(out / "trials.csv") as file:
        return list(csv.DictReader(file))


def test_search_writes_every_trial_and_the_best(search):
    search, _ = search
    rows = read_trials(search)
    assert [row["trial_id"] for row in rows] == ["0", "1"]
    for row in rows:
        assert row["status"] == "COMPLETED"
        assert set(GUMBEL_DEFAULTS) <= set(row)
        assert float(row["val_recon_loss"]) > 0
        assert 1 <= float(row["val_perplexity"]) <= 16
        assert 1 <= float(row["val_cluster_use"]) <= 16
        bits = float(row["val_bits_per_token"])
        assert bits == pytest.approx(math.log2(float(row["val_perplexity"])), rel=1e-6)
        # 16 codes carry at most 4 bits: every trial is penalized.
        assert float(row["val_tokenizer_score"]) == pytest.approx(
            float(row["val_psnr"]) - 10 * (math.log2(150) - bits), rel=1e-6
        )
    # Two trials drew different values.
    assert rows[0]["kl_weight"] != rows[1]["kl_weight"]

    best = json.loads((search / "best_hyperparameters.json").read_text())
    assert set(best) == set(MODEL_FLAGS) | set(GUMBEL_DEFAULTS)
    assert set(best) <= set(HPARAM_KEYS)  # train.py --hparams takes the file
    assert best["image_size"] == 32
    winner = max(rows, key=lambda row: float(row["val_tokenizer_score"]))
    assert best["kl_weight"] == float(winner["kl_weight"])
    assert best["straight_through"] == (winner["straight_through"] == "True")
    assert (best["vq_flavor"], best["n_hid"], best["batch_size"]) == ("gumbel", 8, 8)


# The search runs on every backend (the fixture above); the tuner's own
# bookkeeping, which keras-tuner does the same whatever trains the trials,
# once.
@pytest.mark.backend_independent
def test_best_hyperparameters_feed_train_script(search, train_script, tmp_path):
    search, argv = search
    dataset = argv[1]
    hparams = search / "best_hyperparameters.json"
    best = json.loads(hparams.read_text())
    out = tmp_path / "run"
    argv = ["--hparams", str(hparams), "--dataset", dataset, "--out", str(out),
            "--max_steps", "4"]  # fmt: skip
    assert train_script.main(argv) == 0

    model = keras.models.load_model(out / "model.keras")
    quantizer = model.quantizer
    assert (quantizer.num_embeddings, quantizer.embedding_dim) == (16, 4)
    assert quantizer.straight_through == best["straight_through"]
    # The schedules follow the file's values, their lengths scaled to the run.
    with open(out / "metrics.csv") as file:
        last = list(csv.DictReader(file))[-1]
    anneal_steps = max(1, round(best["temperature_anneal_fraction"] * 4))
    temperature = cosine_anneal(
        3, best["temperature_start"], best["temperature_end"], anneal_steps
    )
    assert float(last["temperature"]) == pytest.approx(temperature, rel=1e-4)
    kl_weight = cosine_anneal(
        3, 0.0, best["kl_weight"], max(1, round(best["kl_ramp_fraction"] * 4))
    )
    assert float(last["kl_weight"]) == pytest.approx(kl_weight, rel=1e-4, abs=1e-12)


@pytest.mark.backend_independent
def test_rerun_resumes_the_search(search, tune_script, tmp_path, monkeypatch):
    search, argv = search
    out = tmp_path / "search"
    shutil.copytree(search, out)
    builds = []
    original_build = tune_script.GumbelHyperModel.build

    def counting_build(self, hp):
        builds.append(dict(hp.values))
        return original_build(self, hp)

    monkeypatch.setattr(tune_script.GumbelHyperModel, "build", counting_build)
    argv = [*argv[:-1], str(out), "--tuner", "random"]
    assert tune_script.main([*argv, "--max_trials", "2"]) == 0
    assert builds == []  # both trials were done: nothing to train
    assert tune_script.main([*argv, "--max_trials", "3"]) == 0
    assert len(builds) == 1  # one more trial, the first two kept

    rows = read_trials(out)
    assert [row["trial_id"] for row in rows] == ["0", "1", "2"]
    assert rows[:2] == read_trials(search)


def test_rerun_with_other_flags_is_refused(search, tune_script, tmp_path, capsys):
    search, argv = search
    out = tmp_path / "search"
    shutil.copytree(search, out)
    argv = [*argv[:-1], str(out), "--tuner", "random", "--max_steps", "9"]
    assert tune_script.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"tune_gumbel.py: error: --out {out} holds a search made with --max_steps "
        "6, not 9; re-run it with the same flags (only --max_trials may change) or "
        "choose another --out."
    )
    assert read_trials(out) == read_trials(search)  # untouched


def test_report_only_reads_a_stopped_search(search, tune_script, tmp_path, monkeypatch):
    search, argv = search
    out = tmp_path / "search"
    shutil.copytree(search, out)
    (out / "trials.csv").unlink()
    (out / "best_hyperparameters.json").unlink()
    # Trial 1 as a search killed during it leaves it: running, no metrics.
    trial_file = out / "search" / "trial_1" / "trial.json"
    trial = json.loads(trial_file.read_text())
    trial["status"] = "RUNNING"
    trial["metrics"]["metrics"] = {}
    trial_file.write_text(json.dumps(trial))

    def no_build(self, hp):
        raise AssertionError("--report_only trained a model")

    monkeypatch.setattr(tune_script.GumbelHyperModel, "build", no_build)
    argv = [*argv[:-1], str(out), "--tuner", "random", "--max_trials", "2"]
    assert tune_script.main([*argv, "--report_only"]) == 0
    rows = read_trials(out)
    old = read_trials(search)
    assert rows[0] == old[0]
    assert (rows[1]["status"], rows[1]["val_tokenizer_score"]) == ("RUNNING", "")
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["kl_weight"] == float(old[0]["kl_weight"])  # the one completed


def test_report_only_without_a_search_is_refused(tune_script, tmp_path, capsys):
    argv = ["--dataset", "sample", "--out", str(tmp_path / "none"), "--report_only"]
    assert tune_script.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"tune_gumbel.py: error: --out {tmp_path / 'none'} holds no search to "
        "report on."
    )
    assert not (tmp_path / "none").exists()


@pytest.mark.backend_independent
def test_bayesian_tuner_search(tune_script, tmp_path):
    dataset = image_folder(tmp_path / "images")
    argv = ["--dataset", dataset, *RUN, "--out", str(tmp_path)]
    assert tune_script.main([*argv, "--tuner", "bayesian", "--max_trials", "2"]) == 0
    rows = read_trials(tmp_path)
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"]


def test_continued_trial_continues_the_schedules(tune_script, tmp_path):
    """Hyperband continues a trial from weights only, at `initial_epoch`."""
    train_data, _ = load_splits(image_folder(tmp_path / "images"), batch_size=8)
    hypermodel = tune_script.GumbelHyperModel(
        {"n_hid": 8, "num_embeddings": 16, "embedding_dim": 4}, total_steps=6
    )
    hp = keras_tuner.HyperParameters()
    hypermodel.hyperparameters(hp)
    hp.values.update(temperature_anneal_fraction=2.0, temperature_start=1.0)
    model = hypermodel.build(hp)
    hypermodel.fit(
        hp,
        model,
        train_data.repeat(),
        epochs=2,
        initial_epoch=1,
        steps_per_epoch=3,
        shuffle=False,  # the pipeline shuffles
        verbose=0,
    )
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6
    # The last step is step 5 of the run (not 2) of a 12-step anneal.
    expected = cosine_anneal(5, 1.0, hp.values["temperature_end"], 12)
    temperature = keras.ops.convert_to_numpy(model.quantizer.temperature)
    assert float(temperature) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--tuner", "grid"], "argument --tuner: invalid choice: 'grid'"),
        (
            ["--max_trials", "0"],
            "argument --max_trials: expected a positive integer, got 0",
        ),
        (["--max_steps", "x"], "argument --max_steps: invalid positive_int value"),
    ],
)
def test_invalid_flags_exit_2(tune_script, tmp_path, capsys, flags, match):
    with pytest.raises(SystemExit) as exit_info:
        tune_script.main(["--dataset", "sample", "--out", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"tune_gumbel.py: error: {match}" in error


def test_too_large_batch_is_a_one_line_error(tune_script, tmp_path, capsys):
    dataset = image_folder(tmp_path / "images")
    argv = ["--dataset", dataset, "--out", str(tmp_path), "--batch_size", "64"]
    assert tune_script.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tune_gumbel.py: error: --dataset {dataset}: fewer")
    assert "\n" not in error


def test_an_image_size_the_encoder_cannot_divide_exits_2_first(
    tune_script, tmp_path, capsys
):
    out = tmp_path / "search"
    argv = ["--dataset", "sample", "--out", str(out), "--image_size", "30"]
    assert tune_script.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "--image_size 30" in error and "downsamples by 4" in error
    assert "\n" not in error and not out.exists()


def test_searches_recorded_before_image_size_continue(tune_script, tmp_path):
    args = tune_script.parse_args(["--dataset", "sample", "--out", str(tmp_path)])
    tune_script.check_search_flags(args)
    settings = tmp_path / tune_script.SETTINGS_FILE
    recorded = json.loads(settings.read_text())
    assert recorded["image_size"] == 32
    del recorded["image_size"]
    settings.write_text(json.dumps(recorded))
    tune_script.check_search_flags(args)  # 32 px, as before the flag
    args.image_size = 64
    with pytest.raises(BadInput, match="--image_size 32, not 64"):
        tune_script.check_search_flags(args)


def test_tokenizer_score_cannot_be_won_by_collapsing(tune_script):
    score = gumbel_search.tokenizer_score
    floor = math.log2(150)
    assert score(30.0, floor) == 30.0 and score(30.0, 9.0) == 30.0
    # 22 codes (about 4.5 bits) at 34 dB lose to 200 codes at 30 dB.
    assert score(34.0, 4.5) < score(30.0, math.log2(200))
    logs = {"val_psnr": 31.0, "val_perplexity": 2.0**6}
    gumbel_search.TokenizerScore().on_epoch_end(0, logs)
    assert logs["val_bits_per_token"] == pytest.approx(6.0)
    assert logs["val_tokenizer_score"] == pytest.approx(31.0 - 10 * (floor - 6.0))
