"""rFID: the Frechet distance between InceptionV3 features of a split's
originals and of their reconstructions (Heusel et al. 2017).

Each image is resized (bilinear) to the Inception input size (299 px by
default), scaled from [0, 1] to [-1, 1] (Keras' InceptionV3 preprocessing)
and mapped to the 2,048 values of the global average pool after the last
Inception block. The Gaussians fitted to the two sets of features are
compared by

    |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

The weights come from a file the user gives (`load_inception`; Keras'
ImageNet InceptionV3 without the top, `.h5` or `.weights.h5`): nothing is
downloaded. The published rFID numbers use the TensorFlow FID Inception
graph (pytorch-fid's `pt_inception-2015-12-05`), whose weights differ from
Keras' ImageNet InceptionV3: this rFID ranks models the same way but its
values are not the papers'. The covariance of 2,048 features needs
thousands of images; with fewer, the distance is biased upwards.
"""

import os

import keras
import numpy as np

from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.errors import describe

INCEPTION_SIZE = 299
MIN_INCEPTION_SIZE = 75  # the smallest input keras.applications.InceptionV3 takes


def inception_features(image_size=INCEPTION_SIZE):
    """A Keras model from `(N, H, W, 3)` images in [0, 1] (any H, W) to their
    `(N, 2048)` InceptionV3 pool features, with random weights (see
    `load_inception`). `image_size` is the side the images are resized to.

    Example:

    ```python
    model = inception_features(image_size=75)  # a small input, e.g. in tests
    model.predict(images).shape  # (N, 2048)
    ```
    """
    if image_size < MIN_INCEPTION_SIZE:
        raise ValueError(
            f"InceptionV3 takes images of at least {MIN_INCEPTION_SIZE} px. "
            f"Received: image_size={image_size}"
        )
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Resizing(image_size, image_size, interpolation="bilinear")(inputs)
    x = keras.layers.Rescaling(2.0, offset=-1.0)(x)  # [0, 1] -> [-1, 1]
    inception = keras.applications.InceptionV3(
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 3),
        pooling="avg",
    )
    model = keras.Model(inputs, inception(x), name="inception_v3_features")
    model.trainable = False
    return model


def load_inception(path, image_size=INCEPTION_SIZE):
    """`inception_features(image_size)` with the InceptionV3 weights of
    `path` (Keras' ImageNet InceptionV3 without the top, `.h5` or
    `.weights.h5`); a file that does not fit is a `BadInput` naming
    `--inception_weights`."""
    if not os.path.isfile(path):
        raise BadInput(
            f"--inception_weights {path}: not found; give a Keras InceptionV3 "
            "without top (e.g. inception_v3_weights_tf_dim_ordering_tf_kernels"
            "_notop.h5)."
        )
    model = inception_features(image_size)
    try:
        model.get_layer("inception_v3").load_weights(path)
    except Exception as error:  # h5py or shape errors of a wrong file
        raise BadInput(
            f"--inception_weights {path}: not InceptionV3 weights without the "
            f"top ({describe(error)})"
        ) from None
    return model


def frechet_distance(mean_1, covariance_1, mean_2, covariance_2):
    """The Frechet distance between two Gaussians, a Python float.

    `tr((S_1 S_2)^(1/2))` is computed as the sum of the square roots of the
    eigenvalues of `S_1^(1/2) S_2 S_1^(1/2)` (similar to `S_1 S_2`, and
    symmetric positive semi-definite), which needs no complex matrix square
    root and stays real for singular covariances (fewer images than
    features).

    Example:

    ```python
    frechet_distance(mu, sigma, mu, sigma)  # 0.0
    ```
    """
    mean_1, mean_2 = np.asarray(mean_1, np.float64), np.asarray(mean_2, np.float64)
    covariance_1 = np.asarray(covariance_1, np.float64)
    covariance_2 = np.asarray(covariance_2, np.float64)
    values, vectors = np.linalg.eigh(covariance_1)
    root_1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_1 @ covariance_2 @ root_1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None))
    distance = (
        np.sum((mean_1 - mean_2) ** 2)
        + np.trace(covariance_1)
        + np.trace(covariance_2)
        - 2.0 * trace_root.sum()
    )
    return float(max(distance, 0.0))


def frechet_distance_of_features(features_1, features_2):
    """The Frechet distance between the Gaussians fitted to two sets of
    feature vectors (rows), a Python float; the same value as
    `frechet_distance` of their means and sample covariances.

    With A and B the centred features (n and m rows), S_1 = A^T A / (n - 1)
    and S_2 = B^T B / (m - 1), the nonzero eigenvalues of S_1 S_2 are the
    squared singular values of A B^T / sqrt((n - 1)(m - 1)): the trace of
    the square root is their sum. This costs O(n m D) instead of O(D^3),
    the faster route when there are fewer images than features.
    """
    a = np.asarray(features_1, np.float64)
    b = np.asarray(features_2, np.float64)
    n, m = len(a), len(b)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    a, b = a - mean_a, b - mean_b
    trace_root = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    distance = (
        np.sum((mean_a - mean_b) ** 2)
        + np.sum(a * a) / (n - 1)
        + np.sum(b * b) / (m - 1)
        - 2.0 * trace_root / np.sqrt((n - 1) * (m - 1))
    )
    return float(max(distance, 0.0))


class FeatureStatistics:
    """Running mean and covariance of feature vectors (float64, on the host),
    fed chunk by chunk. While there are no more vectors than dimensions it
    also keeps the vectors themselves (`features()`), for the faster
    `frechet_distance_of_features`.

    Example:

    ```python
    statistics = FeatureStatistics()
    statistics.update(features)  # (N, D)
    mean, covariance = statistics.result()
    ```
    """

    def __init__(self):
        self.count = 0
        self.total = None
        self.outer = None
        self._rows = []

    def update(self, features):
        features = np.asarray(features, np.float64)
        if self.total is None:
            self.total = np.zeros(features.shape[1])
            self.outer = np.zeros((features.shape[1],) * 2)
        self.count += len(features)
        if self._rows is not None and self.count <= len(self.total):
            self._rows.append(features)
        else:  # enough vectors: the covariance route is the faster
            self._rows = None
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def result(self):
        """The mean and the sample covariance (N - 1, as numpy.cov)."""
        if self.count < 2:
            raise ValueError(
                f"A covariance needs at least 2 feature vectors. Received: {self.count}"
            )
        mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return mean, covariance

    def features(self):
        """All vectors fed so far, `(N, D)`, while N <= D; else `None`."""
        return np.concatenate(self._rows) if self._rows else None


def split_frechet_distance(statistics_1, statistics_2):
    """The Frechet distance of two `FeatureStatistics`, by the faster of
    the two exact routes."""
    features_1, features_2 = statistics_1.features(), statistics_2.features()
    if features_1 is not None and features_2 is not None:
        return frechet_distance_of_features(features_1, features_2)
    return frechet_distance(*statistics_1.result(), *statistics_2.result())
