"""Tokenizer export as a TensorFlow SavedModel for TF Serving (TensorFlow-specific).

The SavedModel holds plain TensorFlow ops and the model's weights; loading it
needs neither keras nor keras_dvq:

- signature `"encode"` (also `"serving_default"`): `images` uint8
  `(None, H, W, C)` -> `tokens` int32 `(None, H/stride, W/stride,
  *token_shape)` (`token_shape` is the quantizer's: `()`, or
  `(num_quantizers,)` for residual VQ);
- signature `"decode"`: `tokens` int32 `(None, h, w, *token_shape)` ->
  `images` uint8 `(None, H, W, C)`.

Token ids outside `[0, vocabulary_size)`, image sizes not divisible by the
encoder stride and images (or token grids) larger than `max_image_size` fail
with `InvalidArgumentError` instead of giving garbage or exhausting the
server's memory.

The export directory is written under a temporary name beside `path` and
renamed into place, so a kill leaves no half-written version for TF Serving
to load; models whose weights are not finite are refused.

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

from keras_dvq.utils import atomic
from keras_dvq.utils.divergence import check_finite_model
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.validation import check_positive_int

# Facts a consumer needs beside the signatures (vocabulary size, stride).
# TF Serving ignores `assets.extra/`.
TOKENIZER_INFO_FILE = os.path.join("assets.extra", "keras_dvq_tokenizer.json")

# The largest height and width served by default: a 1024 x 1024 image needs
# about 0.3 GB of activations in the DeepMind encoder (n_hid 64), while an
# unbounded dynamic size lets one request take all of a server's memory.
MAX_IMAGE_SIZE = 1024


def export_tokenizer(
    model, path, image_shape=None, max_image_size=MAX_IMAGE_SIZE, verbose=False
):
    """Writes a trained `VQVAE`'s tokenizer as a TensorFlow SavedModel.

    Args:
        model: a built `keras_dvq.models.VQVAE`, on any backend.
        path: directory to create; for TF Serving, `<model_base>/<version>`.
            It must not exist yet (or be empty): exports are never
            overwritten.
        image_shape: `(height, width, channels)` of the images to serve.
            Height and width may be `None` to accept any size divisible by
            the encoder stride. Defaults to `(None, None, image_channels)`.
        max_image_size: int or `None`. The largest height and width (in
            pixels) that `encode` accepts, and for `decode` the largest token
            grid (`max_image_size // stride`); larger requests fail with
            `InvalidArgumentError`. `None`: no limit. Defaults to `1024`.
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
    image_shape = _check_export_args(model, path, image_shape, max_image_size)
    if hasattr(model, "as_vqvae"):  # the tokenizer alone, no discriminator
        model = model.as_vqvae()
    if keras.backend.backend() == "tensorflow":
        # Written aside, then renamed: TF Serving never sees a partial version.
        with atomic.atomic_path(path) as temporary:
            _write_saved_model(model, temporary, image_shape, max_image_size, verbose)
    else:
        _export_from_tensorflow_process(
            model, path, image_shape, max_image_size, verbose
        )
    return path


def read_tokenizer_info(path):
    """The `{"vocabulary_size", "stride", "image_shape", "token_shape"}` facts
    written beside an exported tokenizer (`"num_embeddings"` too, the same
    number, for readers of older exports)."""
    info_path = os.path.join(path, TOKENIZER_INFO_FILE)
    if not os.path.isfile(info_path):
        raise BadInput(
            f"Argument `path` must be a tokenizer written by export_tokenizer "
            f"(with {TOKENIZER_INFO_FILE}). Received: path={path!r}"
        )
    with open(info_path) as file:
        return json.load(file)


def _check_export_args(model, path, image_shape, max_image_size):
    if not (hasattr(model, "tokenize") and hasattr(model, "quantizer")):
        raise BadInput(
            "Argument `model` must be a keras_dvq VQVAE. "
            f"Received: {type(model).__name__}"
        )
    if not model.built:
        raise BadInput(
            "Argument `model` must be built (trained, loaded, or called once) "
            "before export."
        )
    check_finite_model(model, "Argument `model`")
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise BadInput(
            "Argument `path` must be a new or empty directory; exports are not "
            f"overwritten. Received: path={path!r}, which exists"
        )
    if image_shape is None:
        image_shape = (None, None, model.image_channels)
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or image_shape[-1] != model.image_channels:
        raise BadInput(
            "Argument `image_shape` must be (height, width, channels) with "
            f"channels={model.image_channels}, as the model was built. "
            f"Received: image_shape={image_shape}"
        )
    for size in image_shape[:2]:
        if size is not None and (
            check_positive_int("image_shape", size) % model.stride
        ):
            raise BadInput(
                "Argument `image_shape` must have a height and width divisible by "
                f"the encoder stride {model.stride} (or None). "
                f"Received: image_shape={image_shape}"
            )
    if max_image_size is not None:
        check_positive_int("max_image_size", max_image_size)
        if max_image_size < model.stride or any(
            size is not None and size > max_image_size for size in image_shape[:2]
        ):
            raise BadInput(
                "Argument `max_image_size` must be at least the encoder stride "
                f"{model.stride} and the height and width of `image_shape` "
                f"{image_shape}. Received: max_image_size={max_image_size}"
            )
    return image_shape


def _size_check(tensor, limit, message):
    """An assertion that the height and width of `tensor` are at most `limit`."""
    return tf.debugging.Assert(
        tf.reduce_all(tf.shape(tensor)[1:3] <= limit), [message, tf.shape(tensor)]
    )


def _write_saved_model(model, path, image_shape, max_image_size, verbose):
    height, width, channels = image_shape
    stride = model.stride
    vocabulary_size = model.quantizer.vocabulary_size
    token_shape = tuple(
        None if size is None else size // stride for size in (height, width)
    ) + tuple(model.quantizer.token_shape)

    def encode(images):
        divisible = tf.equal(tf.shape(images)[1:3] % stride, 0)
        check = tf.debugging.Assert(
            tf.reduce_all(divisible),
            [
                f"images: height and width must be divisible by {stride}; got",
                tf.shape(images),
            ],
        )
        checks = [check]
        if max_image_size is not None:
            message = (
                f"images: height and width must be at most {max_image_size} "
                "(the export's max_image_size); got"
            )
            checks.append(_size_check(images, max_image_size, message))
        with tf.control_dependencies(checks):
            tokens = model.tokenize(tf.identity(images))
        return {"tokens": tf.cast(tokens, tf.int32)}

    def decode(tokens):
        valid = tf.logical_and(tokens >= 0, tokens < vocabulary_size)
        check = tf.debugging.Assert(
            tf.reduce_all(valid),
            [
                f"tokens: ids must be in [0, {vocabulary_size}); got min and max",
                tf.reduce_min(tokens),
                tf.reduce_max(tokens),
            ],
        )
        checks = [check]
        if max_image_size is not None:
            limit = max_image_size // stride
            message = (
                f"tokens: grid height and width must be at most {limit} (the "
                f"export's max_image_size {max_image_size} / stride {stride}); got"
            )
            checks.append(_size_check(tokens, limit, message))
        with tf.control_dependencies(checks):
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
        "num_embeddings": vocabulary_size,
        "vocabulary_size": vocabulary_size,
        "stride": stride,
        "image_shape": list(image_shape),
        "token_shape": list(token_shape),
        "max_image_size": max_image_size,
    }
    os.makedirs(os.path.join(path, os.path.dirname(TOKENIZER_INFO_FILE)), exist_ok=True)
    with open(os.path.join(path, TOKENIZER_INFO_FILE), "w") as file:
        json.dump(info, file, indent=2)


# Run by `_export_from_tensorflow_process` with KERAS_BACKEND=tensorflow.
_EXPORT_PROGRAM = """
import json, sys
import keras
from keras_dvq.export.saved_model import export_tokenizer
model_path, path, image_shape, max_image_size, verbose = sys.argv[1:]
model = keras.models.load_model(model_path, compile=False)
export_tokenizer(
    model, path, json.loads(image_shape), json.loads(max_image_size), verbose == "1"
)
"""


def _export_from_tensorflow_process(model, path, image_shape, max_image_size, verbose):
    with tempfile.TemporaryDirectory() as scratch:
        model_path = os.path.join(scratch, "model.keras")
        model.save(model_path)
        # CPU only: a GPU may be held by this process's backend, and the
        # SavedModel must not depend on where it was written.
        environment = dict(
            os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES=""
        )
        arguments = [
            model_path,
            path,
            json.dumps(image_shape),
            json.dumps(max_image_size),
            "1" if verbose else "0",
        ]
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
