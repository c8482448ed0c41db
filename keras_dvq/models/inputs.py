"""The checks `VQVAE` runs on the images and token grids it is given.

They run on the host, before any compiled step, wherever the shapes are
known: TensorFlow retraces with relaxed (unknown) shapes, and on JAX a trace
that raises leaves the model's variables purged.
"""

import keras


def check_image_shape(shape, image_channels, stride):
    """Raises `ValueError` unless `shape` is `(batch, height, width,
    image_channels)` with sizes divisible by `stride` (`None`: unknown)."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(
            "Argument `images` must have shape (batch, height, width, "
            f"channels). Received: images.shape={shape}"
        )
    if shape[-1] is not None and shape[-1] != image_channels:
        raise ValueError(
            f"Argument `images` must have {image_channels} channels, as "
            f"the model was built with image_channels={image_channels}. "
            f"Received: images.shape={shape}"
        )
    for size in shape[1:3]:
        if stride and size is not None and size % stride:
            raise ValueError(
                "Argument `images` must have a height and width divisible by "
                f"the encoder stride {stride}. Received: "
                f"images.shape={shape}"
            )


def check_token_spec(shape, dtype, token_shape):
    """Raises `ValueError` unless tokens of `shape` and `dtype` are integer
    grids `(batch, height, width, *token_shape)`."""
    dtype = keras.backend.standardize_dtype(dtype)
    if "int" not in dtype:
        raise ValueError(
            f"Argument `tokens` must have an integer dtype. Received: {dtype}"
        )
    token_shape = tuple(token_shape)
    if len(shape) != 3 + len(token_shape) or tuple(shape[3:]) != token_shape:
        expected = ", ".join(("batch", "height", "width", *map(str, token_shape)))
        raise ValueError(
            f"Argument `tokens` must have shape ({expected}). "
            f"Received: tokens.shape={tuple(shape)}"
        )


def input_spec(data):
    """`(shape, dtype)` of the images or tokens in `data`, or `None` if unknown.

    Understands arrays and tensors, tf.data datasets (their element spec) and
    the `(x, y)` and `{"image": x}` structures that Keras' `predict` accepts.
    """
    if hasattr(data, "element_spec"):
        data = data.element_spec
    if isinstance(data, (tuple, list)) and data:
        data = data[0]
    data = image_entry(data)
    shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", None)
    if shape is None or dtype is None or getattr(shape, "rank", 0) is None:
        return None
    return tuple(shape), dtype


def image_entry(data):
    """The images of a tfds-style dict (`data` itself if not a dict)."""
    if not isinstance(data, dict):
        return data
    if "image" not in data:
        raise ValueError(
            "Dict inputs must hold the images under the key 'image' (as "
            f"tensorflow-datasets does). Received keys: {sorted(data)}"
        )
    return data["image"]


def count_and_indices(bad, noun):
    """`"3 image(s), at indices [0, 4, 9]"`, the indices cut after ten."""
    more = " ..." if bad.size > 10 else ""
    return f"{bad.size} {noun}, at indices {bad[:10].tolist()}{more}"
