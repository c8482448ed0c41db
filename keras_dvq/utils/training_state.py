"""Syncing the training state before a callback reads or assigns it."""

from keras import ops


def sync_training_state(model):
    """Makes the model's variables current before a callback assigns one.

    The JAX trainer carries the training state outside the Keras variables
    during `fit`; syncing writes it back and makes the next step read the
    variables again, so the assignment is not lost. Other backends train on
    the variables themselves.
    """
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def optimizer_step(model):
    """The optimizer's step count, read after syncing the training state."""
    sync_training_state(model)
    return int(ops.convert_to_numpy(model.optimizer.iterations))
