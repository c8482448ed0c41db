import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from keras_dvq.data import datasets as data_module
from keras_dvq.training import flags as train_flags
from keras_dvq.training import run as train_run
from keras_dvq.training.builders import GUMBEL_DEFAULTS
from keras_dvq.training.config import current_flavor_names
from keras_dvq.utils.divergence import non_finite_variables
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.run_directory import RunLock
from tests.callbacks.test_stop_on_divergence import PoisonAtStep
from tests.testing import image_folder
from tests.testing import interrupt_training
from tests.testing import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
TINY = ["--n_hid", "8", "--num_embeddings", "16", "--embedding_dim", "4"]


@pytest.fixture(scope="module")
def train_script():
    return load_script("train")


@pytest.mark.slow
@pytest.mark.parametrize(
    "dataset, flavor_flags",
    [
        # The README's main job, on the bundled data, on every backend.
        pytest.param("sample", [], id="vqvae"),
        # The other flavors on a small folder: the same path, without
        # validating all of `sample`; once, as their layers train, save and
        # load on every backend in test_vqvae.py and test_quantizer.py. The
        # Gumbel run spends its last half in the decoder-only phase.
        pytest.param(
            "folder",
            [
                "--vq_flavor",
                "gumbel",
                "--loss_flavor",
                "logit_laplace",
                "--decoder_fraction",
                "0.5",
                "--balance_rate",
                "0.1",
            ],
            id="gumbel",
            marks=pytest.mark.backend_independent,
        ),  # fmt: skip
        pytest.param(
            "folder",
            ["--vq_flavor", "rvq", "--num_quantizers", "2"],
            id="rvq",
            marks=pytest.mark.backend_independent,
        ),
    ],
)
def test_main_job_writes_every_output(train_script, tmp_path, dataset, flavor_flags):
    if dataset == "folder":  # 36 train images: 4 batches of 8
        dataset = image_folder(tmp_path / "images")
        flavor_flags = ["--batch_size", "8", *flavor_flags]
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "4", *TINY]
    argv += flavor_flags
    assert train_script.main(argv) == 0
    for name in (
        "model.keras",
        "best.keras",
        "metrics.csv",
        "training_curves.png",
        "reconstructions.png",
        "codebook_usage.png",
    ):
        assert (out / name).stat().st_size > 0, name
    for name in ("training_curves.png", "reconstructions.png", "codebook_usage.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.width >= 600, name
    assert loads_after_importing_only_keras_dvq(out / "model.keras", out / "best.keras")
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (out / "backup").exists()  # removed after a finished run
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1
    if "gumbel" in flavor_flags:
        assert float(rows[0]["argmax_codes"]) == 1.0
        # The balancing offset moved in the first half and was saved.
        quantizer = keras.models.load_model(out / "model.keras").quantizer
        assert quantizer.balance_rate == 0.1
        assert np.abs(ops.convert_to_numpy(quantizer.logit_offset)).max() > 0
    assert {
        "recon_loss",
        "val_recon_loss",
        "val_perplexity",
        "val_cluster_use",
        "psnr",
        "val_psnr",
    } <= set(rows[0])


def loads_after_importing_only_keras_dvq(*paths):
    """Loads `.keras` files in a fresh process (same backend) that imports
    `keras_dvq` and nothing else of the package: what a new user does."""
    program = (
        "import sys, keras, keras_dvq\n"
        "for path in sys.argv[1:]:\n"
        "    model = keras.models.load_model(path)\n"
        "    assert model.optimizer is not None, path\n"
        "print('loaded')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().endswith("loaded")


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(
    train_script, tmp_path, monkeypatch, capsys
):
    dataset = image_folder(tmp_path / "images")  # 36 train images: 4 batches of 8
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "12",
            "--batch_size", "8", *TINY]  # fmt: skip

    interrupt_training(train_script, argv, monkeypatch)
    assert (out / "backup").is_dir() and not (out / "model.keras").exists()

    assert train_script.main(argv) == 2  # refuses to clobber without --resume
    # Another configuration cannot continue it.
    capsys.readouterr()
    assert train_script.main([*argv, "--resume", "--n_hid", "16"]) == 2
    error = capsys.readouterr().err
    assert "holds a run with another configuration (n_hid 8 (now 16))" in error
    assert train_script.main([*argv, "--resume"]) == 0
    with open(out / "metrics.csv") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == [0, 1, 2]  # finished epochs kept, none repeated
    assert (out / "model.keras").exists() and not (out / "backup").exists()
    assert (out / "training_curves.png").stat().st_size > 0


def test_library_errors_become_one_line(train_script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_module, "_unreachable", lambda host: "offline")
    argv = ["--dataset", "cifar10", "--data_dir", str(tmp_path), "--out", str(tmp_path)]
    assert train_script.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("train.py: error: --dataset cifar10: not prepared under")
    assert "\n" not in error
    assert train_script.main([*argv[:-2], "--out", str(tmp_path), "--resume"]) == 2
    assert "no interrupted run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--batch_size", "0"], "--batch_size: expected a positive integer, got 0"),
        (["--vq_flavor", "kmeans"], "--vq_flavor: invalid choice: 'kmeans'"),
        (["--decoder_fraction", "1"], "expected a number in [0, 1), got 1"),
    ],
)
def test_invalid_flags_exit_2_naming_them(train_script, tmp_path, flags, match, capsys):
    argv = ["--dataset", "sample", "--out", str(tmp_path), *flags]
    try:
        code = train_script.main(argv)
    except SystemExit as error:  # argparse's own checks
        code = error.code
    assert code == 2
    assert match in capsys.readouterr().err


def test_the_script_exits_2_without_traceback(tmp_path):
    # One run as a real process (the others in this one): its exit status and
    # stderr, from a check made after the backend and the data were loaded.
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dataset",
            "sample",
            "--out",
            str(tmp_path),
            "--gpus",
            "2",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=120,
    )
    assert result.returncode == 2
    assert "--gpus 2: " in result.stderr  # no GPUs here (or the torch backend)
    assert "Traceback" not in result.stderr


def write_hparams(tmp_path, values):
    path = tmp_path / "hparams.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_hparams_file_sets_flags_and_command_line_wins(train_script, tmp_path):
    hparams = write_hparams(
        tmp_path, {"vq_flavor": "gumbel", "kl_weight": 0.5, "straight_through": True}
    )
    args = train_flags.parse_train_config(
        ["--hparams", hparams, "--out", str(tmp_path)]
    )
    recipe = args.recipe_hparams()
    assert (args.vq_flavor, recipe["kl_weight"], recipe["straight_through"]) == (
        "gumbel",
        0.5,
        True,
    )
    # Keys the file leaves out take the gumbel flavor's defaults.
    assert recipe["temperature_end"] == GUMBEL_DEFAULTS["temperature_end"]
    argv = ["--hparams", hparams, "--kl_weight", "0.25", "--no-straight_through"]
    recipe = train_flags.parse_train_config(
        [*argv, "--out", str(tmp_path)]
    ).recipe_hparams()
    assert (recipe["kl_weight"], recipe["straight_through"]) == (0.25, False)


def test_shipped_dalle_recipe_is_the_measured_one(train_script, tmp_path):
    """recipes/dalle.json holds the flags of docs/gumbel_tuning.md's DALL-E
    runs with the balancing offset; the rest are the gumbel defaults."""
    dalle = SCRIPT.parents[1] / "recipes" / "dalle.json"
    args = train_flags.parse_train_config(
        ["--hparams", str(dalle), "--out", str(tmp_path)]
    )
    model_flags = (args.vq_flavor, args.enc_dec_flavor, args.loss_flavor)
    assert model_flags == ("gumbel", "dalle", "logit_laplace")
    changed = {"learning_rate": 1e-3, "diversity_weight": 3.0, "balance_rate": 1e-2}
    assert args.recipe_hparams() == {**GUMBEL_DEFAULTS, **changed}


def test_shipped_vqgan_recipes_parse_and_build(train_script, tmp_path):
    """recipes/vqgan-f16.json is taming's ImageNet f16 network with
    LlamaGen's codes (16,384 of dimension 8, l2-normalized) at 256 px;
    recipes/vqgan-small.json a small f8 one at 64 px that trains at about
    0.7 s a step of 16 images on a 2-core CPU (TensorFlow)."""
    recipes = SCRIPT.parents[1] / "recipes"
    configs = {
        name: train_flags.parse_train_config(
            ["--hparams", str(recipes / f"{name}.json"), "--out", str(tmp_path)]
        )
        for name in ("vqgan-f16", "vqgan-small")
    }
    f16 = configs["vqgan-f16"]
    assert (f16.enc_dec_flavor, f16.image_size, f16.check_image_size()) == (
        "vqgan",
        256,
        16,
    )
    assert f16.network_options() == {
        "ch": 128,
        "ch_mult": (1, 1, 2, 2, 4),
        "num_res_blocks": 2,
        "attn_levels": (4,),  # 16 x 16 at 256 px: taming's attn_resolutions
        "z_channels": 256,
        "dropout": 0.0,
        "norm_groups": 32,
    }
    assert (f16.num_embeddings, f16.embedding_dim) == (16384, 8)
    assert f16.quantizer_options() == {"use_cosine_sim": True}
    small = configs["vqgan-small"]
    model = train_run.build_model(small, small.recipe_hparams(), 10)
    model.build((None, 64, 64, 3))
    assert (model.stride, model.image_size, small.check_image_size()) == (8, 64, 8)
    assert model.encoder.attn_levels == (len(model.encoder.ch_mult) - 1,)
    assert model.quantizer.use_cosine_sim
    assert model.quantizer.num_embeddings in range(1024, 4097)
    tokens = model.encode(np.zeros((1, 64, 64, 3), "float32"))
    assert tokens.shape == (1, 8, 8)


def test_hparams_files_hold_lists_and_switches(tmp_path):
    hparams = write_hparams(
        tmp_path,
        {
            "enc_dec_flavor": "vqgan",
            "ch_mult": [1, 2],
            "attn_levels": [],
            "use_cosine_sim": True,
            "rotation_trick": False,
        },
    )
    config = train_flags.parse_train_config(["--hparams", hparams, "--out", "x"])
    assert (config.ch_mult, config.attn_levels) == ((1, 2), ())
    assert (config.use_cosine_sim, config.rotation_trick) == (True, None)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"ch_mult": [1, "2"]}, "bad value for 'ch_mult': [1, \"2\"]"),
        ({"use_cosine_sim": 1}, "'use_cosine_sim' must be true or false"),
        ({"kl_weigth": 1e-3}, "--hparams HPARAMS: unknown key 'kl_weigth'; expected"),
        ({"kl_weight": -1}, "argument --kl_weight: expected a number >= 0, got -1"),
        ({"balance_rate": -1}, "--balance_rate: expected a number >= 0, got -1"),
        ({"n_hid": 8.5}, "argument --n_hid: invalid positive_int value: '8.5'"),
        ({"straight_through": "yes"}, "'straight_through' must be true or false"),
        ({"kl_weight": None}, "bad value for 'kl_weight': null"),
        ([1e-3], "expected a JSON object of flag values"),
        ("{not json", "cannot read it: Expecting property name"),
    ],
)
def test_bad_hparams_file_exits_2(train_script, tmp_path, capsys, content, match):
    path = tmp_path / "hparams.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--hparams", str(path), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train.py: error: ")
    assert match.replace("HPARAMS", str(path)) in error


@pytest.mark.parametrize("decay, last_rate", [("original", 3e-4), ("run", 1.25e-6)])
def test_lr_decay_sets_where_the_learning_rate_ends(
    train_script, tmp_path, decay, last_rate
):
    argv = ["--out", str(tmp_path), "--lr_decay", decay, *TINY]
    args = train_flags.parse_train_config(argv)
    model = train_run.build_model(args, args.recipe_hparams(), 40)
    model.optimizer.iterations.assign(40)
    assert float(model.optimizer.learning_rate) == pytest.approx(last_rate, rel=1e-3)


def test_unknown_lr_decay_exits_2(train_script, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--out", str(tmp_path), "--lr_decay", "linear"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --lr_decay: invalid choice: 'linear'" in error


def test_gumbel_flags_need_the_gumbel_flavor(train_script, tmp_path, capsys):
    assert train_script.main(["--kl_weight", "0.1", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "train.py: error: --kl_weight applies to --vq_flavor gumbel only."


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--levels", "8,5"], "--levels applies to --vq_flavor fsq only."),
        (["--vq_flavor", "lfq", "--levels", "8,5"], "--levels applies to"),
        (["--vq_flavor", "fsq", "--num_quantizers", "2"], "--num_quantizers applies"),
        (["--vq_flavor", "rvq", "--rotation_trick"], "--rotation_trick applies"),
    ],
)
def test_quantizer_flags_need_their_flavor(
    train_script, tmp_path, capsys, flags, message
):
    out = tmp_path / "run"
    assert train_script.main([*flags, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("train.py: error: ") and message in error
    assert len(error.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--vq_flavor", "fsq", "--num_embeddings", "8"], "--num_embeddings does not"),
        (["--vq_flavor", "lfq", "--embedding_dim=8"], "--embedding_dim does not"),
        (["--vq_flavor", "fsq", "--levels", "8,1"], "integers >= 2"),
    ],
)
def test_sizes_of_another_flavor_exit_2(train_script, tmp_path, capsys, flags, match):
    with pytest.raises(SystemExit) as exit_info:
        train_script.main([*flags, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err.strip().splitlines()[-1]


TRAIN_ON_TWO_CPUS = """
import sys
from keras_dvq import distribution
import keras
if keras.backend.backend() == "tensorflow":
    distribution.split_cpu(2)
from keras_dvq.training import run
from tests.testing import load_script
run.DEVICE_TYPE = "CPU"
train = load_script("train")
sys.exit(train.main(sys.argv[1:]))
"""


# TensorFlow only: on JAX, XLA:CPU aborts a collective whose second host
# device thread waits > 40 s, which a loaded 2-core machine can cause in a
# run this long; JAX's DataParallel path is tested in test_distribute.py.
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="MirroredStrategy over logical CPU devices (see comment)",
)
def test_gpus_flag_trains_on_several_devices(tmp_path):
    # A small folder: validating all of `sample` in batches of 8 split over
    # two devices took most of this test's two and a half minutes.
    dataset = image_folder(tmp_path / "images")  # 4 batches of 8, 4 per device
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_ON_TWO_CPUS, "--dataset", dataset,
         "--out", str(out), "--max_steps", "4", "--batch_size", "8", "--gpus", "2",
         *TINY],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env=dict(os.environ),
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training on 2 CPU devices" in result.stdout
    model = keras.models.load_model(out / "model.keras")
    assert model.encode(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 8, 8)


@pytest.mark.slow
def test_mixed_precision_keeps_the_quantizer_in_float32(train_script, tmp_path):
    dataset = image_folder(tmp_path / "images", count=20)
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "2",
            "--batch_size", "8", "--mixed_precision", *TINY]  # fmt: skip
    assert train_script.main(argv) == 0
    model = keras.models.load_model(out / "model.keras")
    assert model.encoder.compute_dtype == "bfloat16"
    assert model.quantizer.codebook.dtype == "float32"
    projected = model.quantizer.project(np.zeros((1, 8, 8, 16), "float32"))
    assert keras.backend.standardize_dtype(projected.dtype) == "float32"


def test_a_second_run_into_the_same_out_is_refused(train_script, tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):  # as a live train.py holds it
        argv = ["--dataset", "sample", "--out", str(out), "--max_steps", "2"]
        assert train_script.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"train.py: error: {out} is in use by another run (process {os.getpid()}"
    )
    assert "\n" not in error
    assert os.listdir(out) == []  # nothing written, the lock released


@pytest.mark.slow
def test_divergence_exits_3_and_writes_no_model(train_script, tmp_path, capsys):
    dataset = image_folder(tmp_path / "images")
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "12",
            "--batch_size", "8", "--learning_rate", "1e6", *TINY]  # fmt: skip
    assert train_script.main(argv) == train_script.EXIT_DIVERGED == 3
    error = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"train.py: error: training diverged at step \d+: non-finite loss terms "
        r"[a-z_, ]*\bloss\b.*; nothing non-finite was saved; no backup was "
        r"written yet: rerun with a smaller --learning_rate\.",
        error,
    ), error
    assert not (out / "model.keras").exists() and not (out / "best.keras").exists()


@pytest.mark.slow
def test_divergence_keeps_finite_files_and_resume_continues(
    train_script, tmp_path, monkeypatch, capsys
):
    dataset = image_folder(tmp_path / "images")  # 4 batches of 8 per epoch
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "12",
            "--batch_size", "8", "--backup_every", "2", *TINY]  # fmt: skip
    make_callbacks = train_run.make_callbacks

    def poisoned_at_step_7(*args):
        return [PoisonAtStep(7), *make_callbacks(*args)]

    monkeypatch.setattr(train_run, "make_callbacks", poisoned_at_step_7)
    assert train_script.main(argv) == 3
    error = capsys.readouterr().err.strip()
    assert error.startswith("train.py: error: training diverged at step 7: ")
    # Backups at steps 2, 4 (epoch end) and 6: the last is mid-epoch.
    assert error.endswith(
        "the backup of step 6 is kept: rerun with --resume and a smaller "
        "--learning_rate."
    )
    best_written = (out / "best.keras").stat().st_mtime_ns  # epoch 0's
    assert not (out / "model.keras").exists()
    assert non_finite_variables(keras.models.load_model(out / "best.keras")) == []

    monkeypatch.setattr(train_run, "make_callbacks", make_callbacks)
    resumed = [*argv, "--resume", "--learning_rate", "1e-4"]
    assert train_script.main(resumed) == 0
    assert (
        "resuming with --learning_rate 0.0001 (was 0.0003)" in capsys.readouterr().out
    )
    model = keras.models.load_model(out / "model.keras")
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 12
    with open(out / "metrics.csv") as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == [0, 1, 2]
    assert (out / "best.keras").stat().st_mtime_ns >= best_written


# train.py, announcing each atomic write between writing and renaming (the
# kill test kills on that line: during a checkpoint write).
KILLABLE_TRAIN = """
import os, sys, time
from keras_dvq.utils import atomic
fsync = atomic._fsync
def announced_fsync(path):
    print("writing", os.path.basename(path), flush=True)
    time.sleep(0.02)
    fsync(path)
atomic._fsync = announced_fsync
from tests.testing import load_script
sys.exit(load_script("train").main(sys.argv[1:]))
"""


def assert_every_file_loads(out, context):
    """What a killed run leaves: each file complete, old or new."""
    for name in ("model.keras", "best.keras"):
        if (out / name).exists():
            model = keras.models.load_model(out / name, compile=False)
            assert non_finite_variables(model) == [], (name, context)
    if (out / "metrics.csv").exists():
        with open(out / "metrics.csv") as file:
            epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
        assert epochs == list(range(len(epochs))), (epochs, context)
    if (out / "run_config.json").exists():
        json.loads((out / "run_config.json").read_text())
    state_path = out / "backup" / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        with h5py.File(out / "backup" / state["weights"], "r") as weights:
            assert len(weights.keys()) > 0, context


# One backend: each of the three processes spends most of its time starting
# (imports, data, first compile), ~20 s here; what is killed is the file
# writing, the same on every backend, while the backend-specific parts (state
# sync, restore, mid-epoch resume) are tested on all three backends in
# test_checkpointing.py. One kill of each kind per run; every run draws new
# instants (the seed is printed with -s and in the failure message).
@pytest.mark.slow
@pytest.mark.backend_independent
def test_kills_at_random_instants_lose_nothing(tmp_path):
    dataset = image_folder(tmp_path / "images")  # 4 batches of 8 per epoch
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "16",
            "--batch_size", "8", "--backup_every", "1", *TINY]  # fmt: skip
    seed = time.time_ns() % 10_000
    rng = random.Random(seed)
    kills, finished = [], False
    for attempt in range(2):
        resume = ["--resume"] if (out / "backup").is_dir() else []
        process = subprocess.Popen(
            [sys.executable, "-c", KILLABLE_TRAIN, *argv, *resume],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        # Even attempts: during the k-th file write (written, not renamed);
        # odd ones: a random instant after training began.
        writes_to_see = rng.randint(2, 12) if attempt % 2 == 0 else 2
        seen, last = 0, ""
        for line in process.stdout:
            if line.startswith("writing"):
                seen, last = seen + 1, line.strip()
                if seen == writes_to_see:
                    break
        when = f"during {last!r}"
        if attempt % 2:
            delay = rng.uniform(0.0, 2.0)
            time.sleep(delay)
            when = f"{delay:.2f} s after {last!r}"
        process.kill()
        returncode = process.wait()
        if returncode == 0:
            finished = True
            break
        kills.append(f"attempt {attempt}: killed {when}, seed {seed}")
        assert_every_file_loads(out, kills[-1])
    print("\n".join(kills))  # shown by pytest -s
    if not finished:
        result = subprocess.run(
            [sys.executable, "-c", KILLABLE_TRAIN, *argv, "--resume"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=300,
        )
        assert result.returncode == 0, (kills, result.stdout[-3000:])
    assert_every_file_loads(out, kills)
    with open(out / "metrics.csv") as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == [0, 1, 2, 3]
    model = keras.models.load_model(out / "model.keras")
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 16, kills
    assert not (out / "backup").exists() and not (out / "run.lock").exists()
    assert not [name for name in os.listdir(out) if name.startswith(".partial")]


@pytest.mark.slow
def test_kill_between_the_last_step_and_model_keras_leaves_a_resumable_run(
    train_script, tmp_path, monkeypatch
):
    """Training done, killed while writing model.keras: the backup of the last
    step is still there, and --resume writes the final model without
    training again."""
    dataset = image_folder(tmp_path / "images")  # 4 batches of 8 per epoch
    out = tmp_path / "run"
    argv = ["--dataset", dataset, "--out", str(out), "--max_steps", "4",
            "--batch_size", "8", *TINY]  # fmt: skip
    save = train_run.save_finite_model

    def killed_while_saving(model, path):
        if os.path.basename(path) == "model.keras":
            raise KeyboardInterrupt  # what a kill at this instant leaves
        save(model, path)

    monkeypatch.setattr(train_run, "save_finite_model", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        train_script.main(argv)
    assert not (out / "model.keras").exists()
    state = json.loads((out / "backup" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 4)

    monkeypatch.setattr(train_run, "save_finite_model", save)
    assert train_script.main([*argv, "--resume"]) == 0
    model = keras.models.load_model(out / "model.keras")
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 4
    assert not (out / "backup").exists()


def test_a_run_that_fails_before_training_keeps_the_earlier_record(
    train_script, tmp_path, capsys
):
    """A finished run's run_config.json stays when a fresh run into the same
    --out fails on its data: the record describes the files beside it."""
    out = tmp_path / "run"
    out.mkdir()
    record = '{"dataset": "sample", "max_steps": 1500}\n'
    (out / "run_config.json").write_text(record)
    missing = tmp_path / "no-such-folder"
    argv = ["--dataset", f"folder:{missing}", "--out", str(out), *TINY]
    assert train_script.main(argv) == 2
    assert capsys.readouterr().err.startswith("train.py: error: ")
    assert (out / "run_config.json").read_text() == record


def test_a_bug_keeps_its_traceback_instead_of_exit_2(
    train_script, tmp_path, monkeypatch
):
    """Only `BadInput` is bad input: a ValueError from a bug in the run
    propagates (train.py used to print any ValueError as one line, exit 2)."""

    def broken_load_splits(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(train_run.builders, "load_splits", broken_load_splits)
    with pytest.raises(ValueError, match="could not be broadcast"):
        train_script.main(["--dataset", "sample", "--out", str(tmp_path / "run")])


def test_old_flavor_names_parse_and_old_records_resume(tmp_path):
    """`--vq_flavor vqvae` is `vq` (with a warning), and a run recorded under
    the old names before the renames still compares equal on --resume."""
    argv = ["--vq_flavor", "vqvae", "--enc_dec_flavor", "openai", "--out", "x"]
    with pytest.warns(FutureWarning) as warned:
        config = train_flags.parse_train_config(argv)
    messages = " ".join(str(warning.message) for warning in warned)
    assert "vq_flavor='vq'" in messages and "enc_dec_flavor='dalle'" in messages
    assert (config.vq_flavor, config.enc_dec_flavor) == ("vq", "dalle")
    record = config.run_record()
    old = {**record, "vq_flavor": "vqvae", "enc_dec_flavor": "openai"}
    (tmp_path / "run_config.json").write_text(json.dumps(old))
    compare = train_run.run_directory.compare_run_config
    assert compare(tmp_path, record, True, normalize=current_flavor_names) == {}
    with pytest.raises(BadInput, match='vq_flavor "vqvae"'):
        compare(tmp_path, record, True)


def test_an_image_size_the_encoder_cannot_divide_exits_2_writing_nothing(
    train_script, tmp_path, capsys
):
    """The DALL-E network downsamples by 8: 36 px cannot be tokenized, and
    the run says so in one line before it loads data or writes anything."""
    out = tmp_path / "run"
    argv = ["--enc_dec_flavor", "dalle", "--image_size", "36", "--out", str(out)]
    assert train_script.main([*argv, "--dataset", "sample"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--image_size 36" in error and "downsamples by 8" in error
    assert not out.exists() or not any(out.iterdir())


def test_the_image_size_reaches_the_data_and_the_record(
    train_script, tmp_path, monkeypatch
):
    seen = []

    def recording_load_dataset(name, split, batch_size, image_size=32, **kwargs):
        seen.append((split, image_size))
        raise BadInput("stop here")

    monkeypatch.setattr(train_run.builders, "load_dataset", recording_load_dataset)
    argv = ["--image_size", "48", "--out", str(tmp_path / "run")]
    assert train_script.main(argv) == 2
    assert seen == [("train", 48)]
    config = train_flags.parse_train_config(argv)
    assert config.run_record()["image_size"] == 48
    # Runs recorded before the flag existed were 32 px and still resume.
    old = {key: v for key, v in config.run_record().items() if key != "image_size"}
    assert current_flavor_names(old)["image_size"] == 32


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ch", "32"], "--ch applies to --enc_dec_flavor vqgan only."),
        (["--ch_mult", "1,2"], "--ch_mult applies to --enc_dec_flavor vqgan only."),
        (["--enc_dec_flavor", "vqgan", "--n_hid", "8"], "--n_hid does not apply"),
        (["--enc_dec_flavor", "vqgan", "--ch_mult", "1,0"], "integers >= 1"),
        (
            ["--enc_dec_flavor", "vqgan", "--ch", "32", "--norm_groups", "5"],
            "`norm_groups` must divide",
        ),
        (
            ["--enc_dec_flavor", "vqgan", "--ch_mult", "1,2", "--attn_levels", "3"],
            "`attn_levels` must name levels in [0, 2)",
        ),
    ],
)
def test_network_flags_need_their_flavor_and_valid_values(
    train_script, tmp_path, capsys, flags, message
):
    out = tmp_path / "run"
    try:
        code = train_script.main([*flags, "--out", str(out)])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.backend_independent
def test_a_tiny_vqgan_trains_and_records_its_size(train_script, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--dataset",
        image_folder(tmp_path / "images"),
        "--enc_dec_flavor",
        "vqgan",
        "--ch",
        "32",
        "--ch_mult",
        "1,2",
        "--attn_levels",
        "1",
        "--z_channels",
        "8",
        "--norm_groups",
        "8",
        "--num_embeddings",
        "16",
        "--embedding_dim",
        "4",
        "--image_size",
        "32",
        "--batch_size",
        "8",
        "--max_steps",
        "2",
        "--out",
        str(out),
    ]
    assert train_script.main(argv) == 0
    assert loads_after_importing_only_keras_dvq(out / "model.keras")
    model = keras.models.load_model(out / "model.keras")
    assert type(model.encoder).__name__ == "VQGANEncoder"
    assert (model.encoder.ch, model.encoder.ch_mult) == (32, (1, 2))
    assert model.encoder.attn_levels == (1,) and model.stride == 2
    assert model.image_size == 32
    record = json.loads((out / "run_config.json").read_text())
    assert record["ch_mult"] == [1, 2] and "n_hid" not in record
    assert record["image_size"] == 32
