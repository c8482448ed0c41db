"""`KMeansInit`: the codebook starts from k-means centroids of encoder outputs."""

import math

import keras
import numpy as np

from keras_dvq.data.datasets import images_of
from keras_dvq.layers.quantizer import not_initializable_message
from keras_dvq.utils.validation import check_positive_int


class KMeansInit(keras.callbacks.Callback):
    """Sets a quantizer's codebook to k-means centroids of the data.

    Before the first training step, encodes a random sample of `data`,
    collects `num_samples` projected encoder outputs `z_e` and runs k-means
    (k-means++ seeding, Lloyd iterations) with one cluster per code. Without
    such a data-driven start, the original repo's VQ-VAE collapses to a few
    codes. The codebook is assigned once, outside the replicas' step, so every
    replica of a distribution strategy gets the same centroids. A model that
    has already taken optimizer steps (resumed or fine-tuned) is left alone.

    Args:
        data: images (array) or a `tf.data.Dataset` of images, `(images,
            labels)` pairs or dicts with an `"image"` key.
        num_samples: int. Number of encoder output vectors to cluster.
            Defaults to `20000`, as the original repo.
        num_iterations: int. Maximum Lloyd iterations. Defaults to `20`.
        batch_size: int. Batch size of the encoding pass. Defaults to `256`.
        seed: int or `None`. Seed of the sampling and the k-means++ draws.
        verbose: 0 (silent), 1 (progress bars of the encoding pass and of
            k-means) or 2 (a line at the end of each). Defaults to `0`.

    Example:

    ```python
    model.fit(x_train, epochs=1, callbacks=[KMeansInit(x_train)])
    ```
    """

    # Vectors are drawn from this many times more images than strictly
    # needed, so that neighbouring (correlated) positions do not dominate.
    IMAGE_OVERSAMPLING = 4

    def __init__(
        self,
        data,
        num_samples=20000,
        num_iterations=20,
        batch_size=256,
        seed=None,
        verbose=0,
    ):
        super().__init__()
        self.data = data
        self.verbose = verbose
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.num_iterations = check_positive_int("num_iterations", num_iterations)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = seed
        self.samples = None  # the clustered encoder outputs, for inspection
        self.centroids = None

    def on_train_begin(self, logs=None):
        quantizer = self.model.quantizer
        if not getattr(quantizer, "initializable_codes", False):
            raise ValueError(not_initializable_message(quantizer))
        if self.model.optimizer is not None and self.model.optimizer.iterations > 0:
            return
        rng = np.random.default_rng(self.seed)
        side = self.model.image_size or _image_side(self.data)
        needed = images_for_kmeans(self.num_samples, side, self.model.stride)
        images = _sample_images(self.data, needed, self.batch_size, rng)
        if not self.model.built:
            self.model.build((None,) + _image_shape(images)[1:])
        # A dataset is encoded batch by batch: only the latents (a few KB an
        # image) are held, never `needed` images at once.
        latents = self.model.project(
            images, batch_size=self.batch_size, verbose=self.verbose
        )
        if len(latents) == 0:
            raise ValueError("Argument `data` of KMeansInit holds no images.")
        # Too few latents for the codes: `initialize_codes` says so.
        latents = latents.reshape(-1, latents.shape[-1])
        rows = rng.choice(len(latents), min(self.num_samples, len(latents)), False)
        self.samples = latents[rows]
        self.centroids = quantizer.initialize_codes(
            self.samples,
            num_iterations=self.num_iterations,
            seed=self.seed,
            verbose=self.verbose,
        )


def images_for_kmeans(num_samples, image_size, stride):
    """How many `image_size` images give `num_samples` well-spread latents.

    Vectors are drawn from `KMeansInit.IMAGE_OVERSAMPLING` times more
    positions than needed, so that neighbouring (correlated) positions do not
    dominate; a 256-px image at stride 16 has 256 positions, a 32-px image at
    stride 4 has 64, so the larger image needs 4x fewer images (and the
    budget in memory stays near `num_samples` latents, not a fixed count of
    ever larger images).

    Args:
        num_samples: int. Latent vectors to cluster.
        image_size: int or `None`. Side of the square images (`None`: 32).
        stride: int or `None`. The encoder's downsampling factor (`None`: 1).

    Returns:
        The number of images, an int >= 1.
    """
    side = (image_size or 32) // (stride or 1)
    positions = max(side * side, 1)
    return math.ceil(KMeansInit.IMAGE_OVERSAMPLING * num_samples / positions)


def _image_side(data):
    """The image height of an array or dataset of images, or `None`."""
    shape = _image_shape(data)
    return int(shape[-3]) if len(shape) >= 3 and shape[-3] else None


def _image_shape(data):
    """The shape of an array's or a dataset element's images."""
    images = images_of(data.element_spec if hasattr(data, "element_spec") else data)
    return tuple(images.shape if hasattr(images, "shape") else np.shape(images))


def _sample_images(data, count, batch_size, rng):
    """Up to `count` images of `data`: a random choice of an array's, or a
    dataset of the first ones of a dataset (which `fit` shuffles anyway),
    batched by `batch_size`."""
    if hasattr(data, "element_spec"):
        images = data.map(_images_of_element)
        if images.element_spec.shape.rank == 4:
            images = images.unbatch()
        return images.take(count).batch(batch_size)
    images = np.asarray(images_of(data))
    if len(images) > count:
        images = images[np.sort(rng.choice(len(images), count, replace=False))]
    return images


def _images_of_element(*element):
    """`images_of` for `Dataset.map`, which hands a pair's parts as
    separate arguments."""
    return images_of(element[0] if len(element) == 1 else element)
