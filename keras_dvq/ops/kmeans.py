"""k-means with k-means++ seeding and Lloyd iterations, in NumPy."""

import keras
import numpy as np


def kmeans(points, num_clusters, num_iterations=20, seed=None, verbose=0):
    """Clusters `points` `(N, D)` into `num_clusters` centroids `(K, D)`.

    Seeding is k-means++ (each next centroid drawn with probability
    proportional to the squared distance to the nearest chosen one); Lloyd
    iterations then alternate assignment and mean updates until assignments
    stop changing. A cluster that loses all its points takes the point
    farthest from its centroid, so no centroid is wasted.

    Args:
        points: float array `(N, D)` with `N >= num_clusters`.
        num_clusters: int. Number of centroids `K`.
        num_iterations: int. Maximum number of Lloyd iterations.
        seed: int or `None`. Seed of the k-means++ draws.
        verbose: 0 (silent), 1 (a progress bar over the seeding and the
            iterations) or 2 (one line at the end), as Keras' `Progbar`.

    Returns:
        float32 array `(K, D)` of centroids.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < num_clusters:
        raise ValueError(
            f"Argument `points` must have shape (N, D) with N >= {num_clusters} "
            f"clusters. Received: points.shape={points.shape}"
        )
    if not np.isfinite(points).all():
        raise ValueError("Argument `points` must be finite. Received NaN or inf.")
    rng = np.random.default_rng(seed)
    progress = keras.utils.Progbar(
        num_clusters + num_iterations, verbose=verbose, unit_name="step"
    )
    centroids = _kmeans_plus_plus(points, num_clusters, rng, progress)
    assignment = None
    for iteration in range(num_iterations):
        progress.update(num_clusters + iteration)
        new_assignment, nearest = _nearest_centroids(points, centroids)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        counts = np.bincount(assignment, minlength=num_clusters)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, points)
        used = counts > 0
        centroids[used] = sums[used] / counts[used, None]
        empty = np.flatnonzero(~used)
        if empty.size:
            farthest = np.argsort(nearest)[::-1][: empty.size]
            centroids[empty] = points[farthest]
    progress.update(num_clusters + num_iterations, finalize=True)
    return centroids.astype(np.float32)


def _kmeans_plus_plus(points, num_clusters, rng, progress):
    centroids = np.empty((num_clusters, points.shape[1]))
    centroids[0] = points[rng.integers(len(points))]
    nearest = ((points - centroids[0]) ** 2).sum(axis=1)
    for k in range(1, num_clusters):
        total = nearest.sum()
        if total > 0:
            index = rng.choice(len(points), p=nearest / total)
        else:  # fewer distinct points than clusters
            index = rng.integers(len(points))
        centroids[k] = points[index]
        nearest = np.minimum(nearest, ((points - centroids[k]) ** 2).sum(axis=1))
        if k % 64 == 0:
            progress.update(k)
    return centroids


# The (points, centroids) distance matrix is computed in row blocks of at most
# this many entries (float64: 256 MiB), so that 65,536 points and 16,384
# centroids need 256 MiB, not 8.6 GB.
MAX_BLOCK_ENTRIES = 2**25


def _nearest_centroids(points, centroids):
    """Index of and squared distance to each point's nearest centroid."""
    rows = max(1, MAX_BLOCK_ENTRIES // len(centroids))
    squared_norms = (centroids**2).sum(axis=1)
    index = np.empty(len(points), dtype=np.int64)
    distance = np.empty(len(points))
    for start in range(0, len(points), rows):
        block = points[start : start + rows]
        distances = (
            (block**2).sum(axis=1, keepdims=True)
            - 2.0 * block @ centroids.T
            + squared_norms[None, :]
        )
        index[start : start + rows] = distances.argmin(axis=1)
        distance[start : start + rows] = distances.min(axis=1)
    return index, distance
