"""Stopping a diverged run, and refusing models whose weights are not finite.

`StopOnDivergence` stops `fit` at the first step whose logged loss terms are
NaN or infinite. Unlike `keras.callbacks.TerminateOnNaN` it raises
`TrainingDiverged` (so a script exits non-zero and `on_train_end` callbacks
that would save the model do not run) and it names the step and the terms.
`non_finite_variables` is what every writer of a model checks first.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_dvq.callbacks import sync_training_state


class TrainingDiverged(RuntimeError):
    """Training produced non-finite losses or weights.

    Attributes:
        step: the optimizer step (1-based) at which it was noticed.
        terms: the names of the non-finite logged values or variables.
    """

    def __init__(self, step, terms, what="loss terms"):
        self.step = step
        self.terms = tuple(terms)
        shown = ", ".join(self.terms[:6])
        if len(self.terms) > 6:
            shown += f" and {len(self.terms) - 6} more"
        super().__init__(f"training diverged at step {step}: non-finite {what} {shown}")


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
        self._step = int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        self._step += getattr(self.model, "steps_per_execution", 1) or 1
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


def non_finite_variables(model, include_optimizer=True):
    """Paths of the model's (and its optimizer's) variables holding NaN or
    infinite values; empty when every value is finite."""
    sync_training_state(model)
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if include_optimizer and optimizer is not None:
        variables += list(optimizer.variables)
    return [
        variable.path
        for variable in variables
        if keras.backend.is_float_dtype(variable.dtype)
        and not np.all(np.isfinite(ops.convert_to_numpy(variable.value)))
    ]


def check_finite_model(model, argument):
    """Raises `ValueError` naming `argument` when the model's weights are not
    all finite (a run that diverged)."""
    bad = non_finite_variables(model, include_optimizer=False)
    if bad:
        raise ValueError(
            f"{argument}: the model's weights are not finite (NaN or infinite "
            f"in {len(bad)} variable(s), e.g. {bad[0]}); it comes from a run "
            "that diverged. Use an earlier checkpoint (best.keras) or retrain."
        )
