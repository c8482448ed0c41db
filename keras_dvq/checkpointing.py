"""What a training run writes for later, written so that a kill loses little.

- `StepBackup`: the whole training state (weights, optimizer, epoch, step
  within the epoch, best score so far) every N steps or minutes and at each
  epoch end; `fit_resumable` continues from it, mid-epoch included.
- `BestCheckpoint`: the model with the best monitored value so far.
- `MetricsLogger`: one CSV row per epoch; a resumed run replaces the rows of
  the epochs it repeats, so every epoch appears exactly once.

Every file is written atomically (`keras_dvq.atomic`) and only from finite
weights: a diverged run raises `TrainingDiverged` instead of overwriting a
good file with NaNs.

Keras' `BackupAndRestore(save_freq=N)` does not fit here: it writes the
weights file in place (a kill mid-write tears it), writes weights and epoch
counter as two separate files, and on restore skips to the saved epoch but
restarts that epoch from its first batch, so a run resumed mid-epoch trains
more steps than planned.
"""

import csv
import io
import json
import math
import os
import shutil
import time

import keras
from keras import ops

from keras_dvq import atomic
from keras_dvq.callbacks import sync_training_state
from keras_dvq.divergence import TrainingDiverged
from keras_dvq.divergence import non_finite_variables
from keras_dvq.validation import check_positive
from keras_dvq.validation import check_positive_int

STATE_FILE = "state.json"
BACKUP_SECONDS = 300.0  # default backup interval: a kill loses 5 minutes


def _step(model):
    sync_training_state(model)
    return int(ops.convert_to_numpy(model.optimizer.iterations))


def _check_finite(model):
    bad = non_finite_variables(model)
    if bad:
        raise TrainingDiverged(_step(model), bad, what="variables")


def save_finite_model(model, path):
    """`model.save(path)` atomically, after checking that every variable is
    finite (else `TrainingDiverged`, and the file is left as it was)."""
    _check_finite(model)
    atomic.save_model(model, path)


class StepBackup(keras.callbacks.Callback):
    """Backs up the training state every N steps (or seconds) and per epoch.

    A backup is a weights file (model and optimizer variables) plus
    `state.json` naming it with the epoch, the steps done within that epoch,
    the optimizer step and the best monitored value; both are written
    atomically, the state last, so a kill at any instant leaves a complete
    backup (the new one or the one before). Weights that are not finite are
    never backed up: `TrainingDiverged` is raised instead. Pass the callback
    last in the list, so that an epoch's metrics row and best model are
    written before the backup that marks the epoch done.

    Args:
        backup_dir: directory of the backup (owned by this callback).
        every_steps: int or `None`. Back up every this many steps; `None`
            backs up every `every_seconds` instead.
        every_seconds: float. The interval when `every_steps` is `None`.
            Defaults to 300 (five minutes of training lost at most).
        best_checkpoint: a `BestCheckpoint` whose best value is backed up and
            restored with the rest, or `None`.

    Example:

    ```python
    backup = StepBackup("runs/demo/backup", every_steps=100)
    fit_resumable(model, data, epochs=4, steps_per_epoch=390, backup=backup)
    ```
    """

    def __init__(
        self,
        backup_dir,
        every_steps=None,
        every_seconds=BACKUP_SECONDS,
        best_checkpoint=None,
    ):
        super().__init__()
        self.backup_dir = os.fspath(backup_dir)
        self.every_steps = (
            None
            if every_steps is None
            else check_positive_int("every_steps", every_steps)
        )
        self.every_seconds = check_positive("every_seconds", every_seconds)
        self.best_checkpoint = best_checkpoint
        self.batch_offset = 0  # steps of the current epoch done before this fit
        self._epoch = 0

    @staticmethod
    def read_state(backup_dir):
        """The `state.json` of a backup in `backup_dir`, or `None`."""
        path = os.path.join(backup_dir, STATE_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as file:
            return json.load(file)

    def restore(self, model):
        """Loads the backup into a built, compiled `model`; returns `(epoch,
        batch)`: the epoch to continue and the steps of it already done
        (`(0, 0)` without a backup)."""
        state = self.read_state(self.backup_dir)
        if state is None:
            return 0, 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        if self.best_checkpoint is not None:
            self.best_checkpoint.best = state.get("best")
        return state["epoch"], state["batch"]

    def remove(self):
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    def on_train_begin(self, logs=None):
        self._since_step = 0
        self._since_time = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._since_step += 1
        if batch + 1 >= self.params.get("steps", math.inf):
            return  # the epoch ends: on_epoch_end backs up after validation
        if self.every_steps is None:
            due = time.monotonic() - self._since_time >= self.every_seconds
        else:
            due = self._since_step >= self.every_steps
        if due:
            self.save(self._epoch, self.batch_offset + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.batch_offset = 0
        self.save(epoch + 1, 0)

    def save(self, epoch, batch):
        """Backs up now, as `batch` steps into `epoch`."""
        _check_finite(self.model)
        step = _step(self.model)
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"step-{step:010d}.weights.h5"
        with atomic.atomic_path(os.path.join(self.backup_dir, name)) as temporary:
            self.model.save_weights(temporary)
        best = None if self.best_checkpoint is None else self.best_checkpoint.best
        state = {"epoch": epoch, "batch": batch, "step": step, "weights": name}
        state["best"] = best
        atomic.write_text(os.path.join(self.backup_dir, STATE_FILE), json.dumps(state))
        for other in os.listdir(self.backup_dir):
            if other.endswith(".weights.h5") and other != name:
                os.remove(os.path.join(self.backup_dir, other))
        self._since_step = 0
        self._since_time = time.monotonic()


def fit_resumable(model, x, *, epochs, steps_per_epoch, backup, callbacks=(), **kw):
    """`model.fit` that continues from `backup` (a `StepBackup`), mid-epoch
    included, and removes the backup when the run completes.

    Keras starts every epoch at its first step, so an epoch interrupted after
    `b` steps is finished by a first `fit` of `steps_per_epoch - b` steps;
    the remaining epochs follow in a second `fit`. That first epoch's logged
    training metrics average its remaining steps only. `backup` is added to
    the end of `callbacks` if missing. Other arguments go to `fit`.

    Returns:
        The `History` of the last `fit`.
    """
    callbacks = list(callbacks)
    if backup not in callbacks:
        callbacks.append(backup)
    epoch, batch = backup.restore(model)
    history = None
    if batch:
        backup.batch_offset = batch
        history = model.fit(
            x,
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=steps_per_epoch - batch,
            callbacks=callbacks,
            **kw,
        )
        epoch += 1
    if epoch < epochs:
        history = model.fit(
            x,
            initial_epoch=epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            **kw,
        )
    backup.remove()
    return history


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model (atomically) whenever `monitor` reaches a new best.

    Non-finite values never count as a best, and non-finite weights raise
    `TrainingDiverged` instead of being written.

    Args:
        path: the `.keras` file to write.
        monitor: the epoch log to watch. Defaults to `"val_loss"`.
        mode: `"min"` or `"max"`. Defaults to `"min"`.

    Example:

    ```python
    model.fit(x, validation_data=v, callbacks=[BestCheckpoint("best.keras")])
    ```
    """

    def __init__(self, path, monitor="val_loss", mode="min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(
                f"Argument `mode` must be 'min' or 'max'. Received: mode={mode!r}"
            )
        self.path = os.fspath(path)
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self.best is not None and (
            value >= self.best if self.mode == "min" else value <= self.best
        ):
            return
        save_finite_model(self.model, self.path)
        self.best = value


class MetricsLogger(keras.callbacks.Callback):
    """Writes the epoch logs to a CSV file, one row per epoch.

    The file is rewritten atomically after every epoch. With `append=True`
    the rows of an earlier run are kept up to the first epoch this run
    trains: epochs that a resumed run repeats replace their old rows, so
    each epoch appears once. Columns: `epoch`, then the log keys sorted.

    Args:
        path: the CSV file.
        append: bool. Continue the file of an earlier (interrupted) run.

    Example:

    ```python
    model.fit(x, epochs=4, callbacks=[MetricsLogger("metrics.csv")])
    ```
    """

    def __init__(self, path, append=False):
        super().__init__()
        self.path = os.fspath(path)
        self.append = append
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is not None:
            return
        self.rows = []
        if self.append and os.path.exists(self.path):
            with open(self.path, newline="") as file:
                self.rows = [
                    row for row in csv.DictReader(file) if int(row["epoch"]) < epoch
                ]

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if int(row["epoch"]) != epoch]
        self.rows.append({"epoch": epoch, **(logs or {})})
        keys = sorted({key for row in self.rows for key in row} - {"epoch"})
        text = io.StringIO()
        writer = csv.DictWriter(text, ["epoch", *keys], restval="NA")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.path, text.getvalue())
