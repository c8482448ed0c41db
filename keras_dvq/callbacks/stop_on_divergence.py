"""`StopOnDivergence`: stops a diverged run at once.

It stops `fit` at the first step whose logged loss terms are NaN or infinite.
Unlike `keras.callbacks.TerminateOnNaN` it raises `TrainingDiverged` (so a
script exits non-zero and `on_train_end` callbacks that would save the model
do not run) and it names the step and the terms.
"""

import math

import keras

from keras_dvq.utils.divergence import TrainingDiverged
from keras_dvq.utils.training_state import optimizer_step


class StopOnDivergence(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the first step with a non-finite loss.

    The batch logs are already on the host when callbacks see them (any
    callback with `on_train_batch_end` turns off Keras' asynchronous
    dispatch), so the check costs no extra device read. Weights that turn
    non-finite while the loss is still finite are caught where they would
    be written: `checkpointing` refuses to save them.

    Example:

    ```python
    try:
        model.fit(x_train, epochs=4, callbacks=[StopOnDivergence()])
    except TrainingDiverged as error:
        print(error.step, error.terms)
    ```
    """

    def on_train_begin(self, logs=None):
        model = self.model
        self._step = optimizer_step(model)
        # Read once: on JAX every read of `self.model` syncs the whole
        # training state to the variables, which per batch costs a step's
        # worth of host work.
        self._steps_per_batch = getattr(model, "steps_per_execution", 1) or 1

    def on_train_batch_end(self, batch, logs=None):
        self._step += self._steps_per_batch
        terms = [
            name
            for name, value in sorted((logs or {}).items())
            if not _finite_or_other(value)
        ]
        if terms:
            self.model.stop_training = True
            raise TrainingDiverged(self._step, terms)


def _finite_or_other(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):  # not a number: not ours to judge
        return True
