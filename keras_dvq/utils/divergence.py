"""Finite weights only: what every writer of a model checks first.

`TrainingDiverged` is raised where a run produced NaN or infinite losses or
weights; `save_finite_model` writes a model atomically after checking that
every variable is finite.
"""

import keras
import numpy as np
from keras import ops

from keras_dvq.utils import atomic
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.training_state import optimizer_step
from keras_dvq.utils.training_state import sync_training_state


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
        raise BadInput(
            f"{argument}: the model's weights are not finite (NaN or infinite "
            f"in {len(bad)} variable(s), e.g. {bad[0]}); it comes from a run "
            "that diverged. Use an earlier checkpoint (best.keras) or retrain."
        )


def raise_if_not_finite(model):
    """`TrainingDiverged` if any model or optimizer variable is not finite."""
    bad = non_finite_variables(model)
    if bad:
        raise TrainingDiverged(optimizer_step(model), bad, what="variables")


def save_finite_model(model, path):
    """`model.save(path)` atomically, after checking that every variable is
    finite (else `TrainingDiverged`, and the file is left as it was)."""
    raise_if_not_finite(model)
    atomic.save_model(model, path)
