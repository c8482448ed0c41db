"""`BestCheckpoint`: the model with the best monitored value so far, written
atomically and only from finite weights.
"""

import math
import os

import keras

from keras_dvq.utils.divergence import save_finite_model


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
