"""`StepBackup`: the whole training state, written so that a kill loses little.

Weights, optimizer, epoch, step within the epoch and best score so far, every
N steps or minutes and at each epoch end; `keras_dvq.training.fit_resumable`
continues from it, mid-epoch included. Every file is written atomically
(`keras_dvq.utils.atomic`) and only from finite weights: a diverged run
raises `TrainingDiverged` instead of overwriting a good file with NaNs.

Keras' `BackupAndRestore(save_freq=N)` does not fit here: it writes the
weights file in place (a kill mid-write tears it), writes weights and epoch
counter as two separate files, and on restore skips to the saved epoch but
restarts that epoch from its first batch, so a run resumed mid-epoch trains
more steps than planned.
"""

import json
import math
import os
import shutil
import time

import keras

from keras_dvq.utils import atomic
from keras_dvq.utils.divergence import raise_if_not_finite
from keras_dvq.utils.training_state import optimizer_step
from keras_dvq.utils.validation import check_positive
from keras_dvq.utils.validation import check_positive_int

STATE_FILE = "state.json"


BACKUP_SECONDS = 300.0  # default backup interval: a kill loses 5 minutes


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
        raise_if_not_finite(self.model)
        step = optimizer_step(self.model)
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
