"""One interface over the two forms a trained tokenizer takes on disk.

A tokenizer is either a `.keras` file (a `VQVAE`, run on the current Keras
backend) or a SavedModel written by `keras_dvq.export.export_tokenizer` (run
by TensorFlow, whatever the backend; TF Serving's layout `DIR/<version>/` is
understood, its newest version taken). Both give uint8 or float images in,
int32 token grids out, and back: what scripts that only tokenize and
detokenize (`tokenize_dataset.py`, `evaluate.py`) need.
"""

import os

import keras
import numpy as np

from keras_dvq.export.saved_model import TOKENIZER_INFO_FILE
from keras_dvq.export.saved_model import read_tokenizer_info
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.errors import describe


class KerasTokenizer:
    """A `.keras` VQVAE as a tokenizer, on the current Keras backend.

    Args:
        path: a `.keras` file holding a `VQVAE`.

    Example:

    ```python
    tokenizer = KerasTokenizer("runs/demo/model.keras")
    tokens = tokenizer.encode(images)  # int32 (N, 8, 8)
    reconstructions = tokenizer.decode(tokens)  # float32 in [0, 1]
    ```
    """

    kind = "keras"

    def __init__(self, path):
        self.path = path
        self.model = keras.models.load_model(path, compile=False)
        if not hasattr(self.model, "tokenize"):
            raise BadInput(
                f"{path} holds a {type(self.model).__name__}, not a keras_dvq VQVAE."
            )
        self.vocabulary_size = self.model.quantizer.vocabulary_size
        self.stride = self.model.stride
        self.image_channels = self.model.image_channels
        self.image_shape = (None, None, self.image_channels)
        # The size it was trained at (None for files older than the record).
        self.image_size = getattr(self.model, "image_size", None)

    def encode(self, images, batch_size=128):
        return self.model.encode(images, batch_size=batch_size)

    def decode(self, tokens, batch_size=128):
        return self.model.decode(tokens, batch_size=batch_size)


class SavedModelTokenizer:
    """An exported tokenizer (`export_tokenizer`'s SavedModel), run by
    TensorFlow: its `encode` and `decode` signatures, in batches.

    Decoded images come back as the signature gives them, uint8, here scaled
    to float32 in [0, 1] (so they carry the rounding a served image has).

    Args:
        path: the export directory, or TF Serving's base directory of
            numbered versions (the newest is taken).

    Example:

    ```python
    tokenizer = SavedModelTokenizer("exports/demo")  # exports/demo/1/...
    tokens = tokenizer.encode(images_uint8)
    ```
    """

    kind = "saved_model"

    def __init__(self, path):
        import tensorflow as tf

        self.path = newest_version(path)
        info = read_tokenizer_info(self.path)
        self.vocabulary_size = info.get("vocabulary_size", info["num_embeddings"])
        self.stride = info["stride"]
        self.image_shape = tuple(info["image_shape"])
        self.image_channels = self.image_shape[-1]
        # The served size, where the export fixes a square one.
        height, width = self.image_shape[:2]
        self.image_size = height if height is not None and height == width else None
        loaded = tf.saved_model.load(self.path)
        self._encode = loaded.signatures["encode"]
        self._decode = loaded.signatures["decode"]

    def encode(self, images, batch_size=128):
        images = np.asarray(images)
        self._check_images(images)
        if images.dtype != np.uint8:
            images = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
        return self._batched(self._encode, "images", images, "tokens", batch_size)

    def decode(self, tokens, batch_size=128):
        tokens = np.asarray(tokens, dtype=np.int32)
        images = self._batched(self._decode, "tokens", tokens, "images", batch_size)
        return images.astype(np.float32) / 255.0

    def _check_images(self, images):
        expected = self.image_shape
        for axis, (size, wanted) in enumerate(
            zip(images.shape[1:], expected, strict=True), start=1
        ):
            if wanted is not None and size != wanted:
                raise BadInput(
                    f"Images of shape {images.shape[1:]} do not fit the exported "
                    f"tokenizer {self.path}, which takes {tuple(expected)} "
                    f"(axis {axis})."
                )
        for size in images.shape[1:3]:
            if size % self.stride:
                raise BadInput(
                    f"Images of shape {images.shape[1:]} do not fit the exported "
                    f"tokenizer {self.path}: height and width must be divisible "
                    f"by its stride {self.stride}."
                )

    @staticmethod
    def _batched(signature, input_name, values, output_name, batch_size):
        import tensorflow as tf

        outputs = [
            signature(**{input_name: tf.constant(values[start : start + batch_size])})[
                output_name
            ].numpy()
            for start in range(0, len(values), batch_size)
        ]
        return np.concatenate(outputs)


def newest_version(path):
    """`path` itself if it is an export, else its highest-numbered version
    subdirectory that is one (TF Serving's `BASE/<version>/` layout)."""
    if os.path.isfile(os.path.join(path, TOKENIZER_INFO_FILE)):
        return path
    versions = sorted(
        (int(name) for name in _listdir(path) if name.isdigit()), reverse=True
    )
    for version in versions:
        candidate = os.path.join(path, str(version))
        if os.path.isfile(os.path.join(candidate, TOKENIZER_INFO_FILE)):
            return candidate
    return path  # read_tokenizer_info explains what is missing


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def load_tokenizer(path):
    """A `KerasTokenizer` for a `.keras` file, a `SavedModelTokenizer` for a
    directory.

    Raises:
        BadInput: naming `path`, where it is missing or cannot be loaded as
            a tokenizer (corrupt file, another kind of model or SavedModel).
    """
    if not os.path.exists(path):
        raise BadInput(f"{path}: not found.")
    try:
        if os.path.isdir(path):
            return SavedModelTokenizer(path)
        return KerasTokenizer(path)
    except Exception as error:  # corrupt or foreign files raise many types
        raise BadInput(
            f"{path}: cannot be loaded as a tokenizer ({describe(error)})."
        ) from error
