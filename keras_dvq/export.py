"""Tokenizer export as a TensorFlow SavedModel for TF Serving (TensorFlow-specific).

The SavedModel holds plain TensorFlow ops and the model's weights; loading it
needs neither keras nor keras_dvq:

- signature `"encode"` (also `"serving_default"`): `images` uint8
  `(None, H, W, C)` -> `tokens` int32 `(None, H/stride, W/stride)`;
- signature `"decode"`: `tokens` int32 `(None, h, w)` -> `images` uint8
  `(None, H, W, C)`.

Token ids outside `[0, num_embeddings)` and image sizes not divisible by the
encoder stride fail with `InvalidArgumentError` instead of giving garbage.

Models living on the JAX or PyTorch backend are saved to a temporary `.keras`
file and exported by a TensorFlow-backend subprocess on CPU: the artifact is
the same whatever backend trained the model, and no JAX (XLA) or GPU kernels
are baked into it.
"""

import json
import os
import subprocess
import sys
import tempfile

import keras
import tensorflow as tf

from keras_dvq.validation import check_positive_int

# Facts a consumer needs beside the signatures (vocabulary size, stride).
# TF Serving ignores `assets.extra/`.
TOKENIZER_INFO_FILE = os.path.join("assets.extra", "keras_dvq_tokenizer.json")


def export_tokenizer(model, path, image_shape=None, verbose=False):
    """Writes a trained `VQVAE`'s tokenizer as a TensorFlow SavedModel.

    Args:
        model: a built `keras_dvq.models.VQVAE`, on any backend.
        path: directory to create; for TF Serving, `<model_base>/<version>`.
            It must not exist yet (or be empty): exports are never
            overwritten.
        image_shape: `(height, width, channels)` of the images to serve.
            Height and width may be `None` to accept any size divisible by
            the encoder stride. Defaults to `(None, None, image_channels)`.
        verbose: bool. Print the endpoints written.

    Returns:
        `path`.

    Example:

    ```python
    export_tokenizer(model, "tokenizer/1", image_shape=(32, 32, 3))
    tokenizer = tf.saved_model.load("tokenizer/1")
    tokens = tokenizer.signatures["encode"](images=uint8_images)["tokens"]
    images = tokenizer.signatures["decode"](tokens=tokens)["images"]
    ```
    """
    image_shape = _check_export_args(model, path, image_shape)
    if keras.backend.backend() == "tensorflow":
        _write_saved_model(model, path, image_shape, verbose)
    else:
        _export_from_tensorflow_process(model, path, image_shape, verbose)
    return path


def read_tokenizer_info(path):
    """The `{"num_embeddings", "stride", "image_shape", "token_shape"}` facts
    written beside an exported tokenizer."""
    info_path = os.path.join(path, TOKENIZER_INFO_FILE)
    if not os.path.isfile(info_path):
        raise ValueError(
            f"Argument `path` must be a tokenizer written by export_tokenizer "
            f"(with {TOKENIZER_INFO_FILE}). Received: path={path!r}"
        )
    with open(info_path) as file:
        return json.load(file)


def _check_export_args(model, path, image_shape):
    if not (hasattr(model, "tokenize") and hasattr(model, "quantizer")):
        raise ValueError(
            "Argument `model` must be a keras_dvq VQVAE. "
            f"Received: {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Argument `model` must be built (trained, loaded, or called once) "
            "before export."
        )
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ValueError(
            "Argument `path` must be a new or empty directory; exports are not "
            f"overwritten. Received: path={path!r}, which exists"
        )
    if image_shape is None:
        image_shape = (None, None, model.image_channels)
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or image_shape[-1] != model.image_channels:
        raise ValueError(
            "Argument `image_shape` must be (height, width, channels) with "
            f"channels={model.image_channels}, as the model was built. "
            f"Received: image_shape={image_shape}"
        )
    for size in image_shape[:2]:
        if size is not None and (
            check_positive_int("image_shape", size) % model.stride
        ):
            raise ValueError(
                "Argument `image_shape` must have a height and width divisible by "
                f"the encoder stride {model.stride} (or None). "
                f"Received: image_shape={image_shape}"
            )
    return image_shape


def _write_saved_model(model, path, image_shape, verbose):
    height, width, channels = image_shape
    stride = model.stride
    num_embeddings = model.quantizer.num_embeddings
    token_shape = tuple(
        None if size is None else size // stride for size in (height, width)
    )

    def encode(images):
        divisible = tf.equal(tf.shape(images)[1:3] % stride, 0)
        check = tf.debugging.Assert(
            tf.reduce_all(divisible),
            [
                f"images: height and width must be divisible by {stride}; got",
                tf.shape(images),
            ],
        )
        with tf.control_dependencies([check]):
            tokens = model.tokenize(tf.identity(images))
        return {"tokens": tf.cast(tokens, tf.int32)}

    def decode(tokens):
        valid = tf.logical_and(tokens >= 0, tokens < num_embeddings)
        check = tf.debugging.Assert(
            tf.reduce_all(valid),
            [
                f"tokens: ids must be in [0, {num_embeddings}); got min and max",
                tf.reduce_min(tokens),
                tf.reduce_max(tokens),
            ],
        )
        with tf.control_dependencies([check]):
            images = model.detokenize(tf.identity(tokens))
        pixels = tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0)
        return {"images": tf.cast(pixels, tf.uint8)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "encode",
        encode,
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8)],
    )
    archive.add_endpoint(
        "decode",
        decode,
        input_signature=[tf.TensorSpec((None, *token_shape), tf.int32)],
    )
    archive.write_out(path, verbose=verbose)
    info = {
        "num_embeddings": num_embeddings,
        "stride": stride,
        "image_shape": list(image_shape),
        "token_shape": list(token_shape),
    }
    os.makedirs(os.path.join(path, os.path.dirname(TOKENIZER_INFO_FILE)), exist_ok=True)
    with open(os.path.join(path, TOKENIZER_INFO_FILE), "w") as file:
        json.dump(info, file, indent=2)


# Run by `_export_from_tensorflow_process` with KERAS_BACKEND=tensorflow.
_EXPORT_PROGRAM = """
import json, sys
import keras
from keras_dvq.export import export_tokenizer
model_path, path, image_shape, verbose = sys.argv[1:]
model = keras.models.load_model(model_path, compile=False)
export_tokenizer(model, path, json.loads(image_shape), verbose=verbose == "1")
"""


def _export_from_tensorflow_process(model, path, image_shape, verbose):
    with tempfile.TemporaryDirectory() as scratch:
        model_path = os.path.join(scratch, "model.keras")
        model.save(model_path)
        # CPU only: a GPU may be held by this process's backend, and the
        # SavedModel must not depend on where it was written.
        environment = dict(
            os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES=""
        )
        arguments = [model_path, path, json.dumps(image_shape), "1" if verbose else "0"]
        result = subprocess.run(
            [sys.executable, "-c", _EXPORT_PROGRAM, *arguments],
            env=environment,
            capture_output=True,
            text=True,
        )
    if verbose:
        print(result.stdout, end="")
    if result.returncode:
        raise RuntimeError(
            f"Exporting the tokenizer from a TensorFlow-backend process (the "
            f"{keras.backend.backend()} backend cannot write SavedModels "
            f"itself) failed:\n{result.stderr[-3000:]}"
        )
