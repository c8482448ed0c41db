"""StepBackup and fit_resumable: mid-epoch resume, files only from finite
weights."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.callbacks.best_checkpoint import BestCheckpoint
from keras_dvq.callbacks.metrics_logger import MetricsLogger
from keras_dvq.callbacks.step_backup import STATE_FILE
from keras_dvq.callbacks.step_backup import StepBackup
from keras_dvq.training.resumable import fit_resumable
from keras_dvq.utils.divergence import TrainingDiverged
from keras_dvq.utils.divergence import non_finite_variables
from tests.callbacks.test_stop_on_divergence import PoisonAtStep
from tests.callbacks.test_stop_on_divergence import images
from tests.callbacks.test_stop_on_divergence import tiny_model

STEPS_PER_EPOCH = 4  # 16 images, batches of 4
EPOCHS = 3


class InterruptAtStep(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of step `step` (1-based), before
    the callbacks after it in the list see that step."""

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise KeyboardInterrupt("simulated kill")


def iterations(model):
    return int(ops.convert_to_numpy(model.optimizer.iterations))


def run(tmp_path, extra_callbacks=(), every_steps=1):
    model = tiny_model()
    best = BestCheckpoint(tmp_path / "best.keras", monitor="val_recon_loss")
    backup = StepBackup(tmp_path / "backup", every_steps, best_checkpoint=best)
    callbacks = [*extra_callbacks, best]
    callbacks.append(MetricsLogger(tmp_path / "metrics.csv", append=True))
    fit_resumable(
        model,
        images(),
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        backup=backup,
        batch_size=4,
        validation_data=images(8),
        callbacks=callbacks,
        verbose=0,
    )
    return model, backup


def test_resume_mid_epoch_trains_exactly_the_planned_steps(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [InterruptAtStep(6)])  # killed in epoch 1, after step 6
    state = json.loads((tmp_path / "backup" / STATE_FILE).read_text())
    # Step 6's backup never happened: the last one is step 5, one step into
    # epoch 1.
    assert (state["epoch"], state["batch"], state["step"]) == (1, 1, 5)
    backup_files = sorted(os.listdir(tmp_path / "backup"))
    assert backup_files == sorted([STATE_FILE, state["weights"]])

    restored = tiny_model()
    epoch_and_batch = StepBackup(tmp_path / "backup").restore(restored)
    assert epoch_and_batch == (1, 1) and iterations(restored) == 5

    model, backup = run(tmp_path)
    assert iterations(model) == EPOCHS * STEPS_PER_EPOCH  # not one step more
    with open(tmp_path / "metrics.csv") as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == [0, 1, 2]
    backup.remove()
    assert not (tmp_path / "backup").exists()


def test_non_finite_weights_are_never_backed_up(tmp_path):
    with pytest.raises(TrainingDiverged, match="non-finite variables") as info:
        run(tmp_path, [PoisonAtStep(3)])
    assert info.value.step == 3
    state = json.loads((tmp_path / "backup" / STATE_FILE).read_text())
    assert state["step"] == 2  # the last finite state is kept
    model = tiny_model()
    StepBackup(tmp_path / "backup").restore(model)
    assert non_finite_variables(model) == []


def test_best_checkpoint_keeps_the_best_finite_model(tmp_path):
    model = tiny_model()
    best = BestCheckpoint(tmp_path / "best.keras", monitor="val_loss")
    best.set_model(model)
    best.on_epoch_end(0, {"val_loss": 0.5})
    written = (tmp_path / "best.keras").stat().st_mtime_ns
    best.on_epoch_end(1, {"val_loss": float("nan")})  # never a best
    best.on_epoch_end(2, {"val_loss": 0.7})
    assert (tmp_path / "best.keras").stat().st_mtime_ns == written
    assert best.best == 0.5
    kernel = model.decoder.weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(TrainingDiverged):
        best.on_epoch_end(3, {"val_loss": 0.1})
    assert (tmp_path / "best.keras").stat().st_mtime_ns == written
    loaded = keras.models.load_model(tmp_path / "best.keras", compile=False)
    assert non_finite_variables(loaded) == []


def test_metrics_logger_replaces_the_rows_of_repeated_epochs(tmp_path):
    path = tmp_path / "metrics.csv"
    first = MetricsLogger(path)
    for epoch in range(3):
        first.on_epoch_begin(epoch)
        first.on_epoch_end(epoch, {"loss": 1.0 + epoch})
    # A resumed run restarts at epoch 1: its rows replace the old ones.
    resumed = MetricsLogger(path, append=True)
    for epoch in (1, 2, 3):
        resumed.on_epoch_begin(epoch)
        resumed.on_epoch_end(epoch, {"loss": 10.0 + epoch, "val_loss": 0.5})
    with open(path) as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["loss"] for row in rows] == ["1.0", "11.0", "12.0", "13.0"]
    assert rows[0]["val_loss"] == "NA"
