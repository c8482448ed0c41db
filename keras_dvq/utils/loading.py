"""Loading a `.keras` file a user named, with one clear error for any failure."""

import os

import keras

from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.errors import describe


def load_model_file(path, argument, expected=None):
    """`keras.models.load_model(path, compile=False)` for a file a user gave.

    Args:
        path: the `.keras` file.
        argument: how the user named it, for messages (e.g. `"--prior"`).
        expected: a class the model must be an instance of, or `None`.

    Raises:
        BadInput: naming `argument` and `path`, where the file is missing,
            cannot be loaded (a corrupt or foreign file raises many kinds of
            errors inside Keras, all reported as this one) or holds another
            kind of model.

    Example:

    ```python
    prior = load_model_file("runs/prior/prior.keras", "--prior", TokenPrior)
    ```
    """
    if not os.path.isfile(path):
        raise BadInput(f"{argument} {path}: not found.")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # corrupt or foreign files raise many types
        raise BadInput(
            f"{argument} {path}: cannot be loaded ({describe(error)})."
        ) from error
    if expected is not None and not isinstance(model, expected):
        raise BadInput(
            f"{argument} {path}: expected a {expected.__name__}, got "
            f"{type(model).__name__}."
        )
    return model
