"""Syncing the training state before a callback assigns a variable."""


def sync_training_state(model):
    """Makes the model's variables current before a callback assigns one.

    The JAX trainer carries the training state outside the Keras variables
    during `fit`; syncing writes it back and makes the next step read the
    variables again, so the assignment is not lost. Other backends train on
    the variables themselves.
    """
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()
