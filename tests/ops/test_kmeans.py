import tracemalloc

import numpy as np
import pytest

from keras_dvq.ops import kmeans as kmeans_module
from keras_dvq.ops.kmeans import kmeans


def blobs(rng, centers, per_blob=200, scale=0.05):
    points = [c + scale * rng.standard_normal((per_blob, len(c))) for c in centers]
    return np.concatenate(points)


def test_recovers_well_separated_blob_centers(rng):
    centers = rng.uniform(-10, 10, size=(6, 3))
    centroids = kmeans(blobs(rng, centers), 6, seed=0)
    assert centroids.shape == (6, 3) and centroids.dtype == np.float32
    # Every true center has exactly one centroid next to it.
    distances = np.linalg.norm(centers[:, None] - centroids[None], axis=-1)
    assert np.all(distances.min(axis=1) < 0.05)
    assert len(set(distances.argmin(axis=1))) == 6


def test_centroids_are_a_lloyd_fixed_point(rng):
    points = rng.standard_normal((500, 4))
    centroids = kmeans(points, 8, num_iterations=200, seed=1)
    assignment = ((points[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    for k in range(8):
        np.testing.assert_allclose(
            centroids[k], points[assignment == k].mean(0), atol=1e-5
        )


def test_same_seed_same_centroids(rng):
    points = rng.standard_normal((300, 2))
    np.testing.assert_array_equal(kmeans(points, 5, seed=3), kmeans(points, 5, seed=3))


def test_fewer_distinct_points_than_clusters_gives_finite_centroids():
    points = np.repeat(np.eye(3), 10, axis=0)  # 3 distinct points, 5 clusters
    centroids = kmeans(points, 5, seed=0)
    assert np.isfinite(centroids).all()
    # Each distinct point is still a centroid.
    for point in np.eye(3):
        assert np.min(np.linalg.norm(centroids - point, axis=1)) < 1e-6


def test_bad_points_raise():
    with pytest.raises(ValueError, match=r"N >= 10 clusters.*\(5, 2\)"):
        kmeans(np.zeros((5, 2)), 10)
    with pytest.raises(ValueError, match="finite"):
        kmeans(np.full((20, 2), np.nan), 3)


def test_progress_is_shown_on_request_and_changes_nothing(capsys):
    points = np.random.default_rng(0).normal(size=(300, 4))
    silent = kmeans(points, 8, seed=3)
    assert capsys.readouterr().out == ""
    shown = kmeans(points, 8, seed=3, verbose=2)
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "28/28" in printed  # 8 seeds + 20 iterations
    np.testing.assert_array_equal(silent, shown)


def test_assignment_in_blocks_equals_the_whole_distance_matrix(rng, monkeypatch):
    points = rng.normal(size=(1000, 3))
    centroids = rng.normal(size=(64, 3))
    whole = ((points[:, None] - centroids[None]) ** 2).sum(axis=-1)
    monkeypatch.setattr(kmeans_module, "MAX_BLOCK_ENTRIES", 64 * 7)  # 7 rows
    index, distance = kmeans_module._nearest_centroids(points, centroids)
    np.testing.assert_array_equal(index, whole.argmin(axis=1))
    np.testing.assert_allclose(distance, whole.min(axis=1), atol=1e-12)
    monkeypatch.undo()
    np.testing.assert_array_equal(
        kmeans(points, 64, seed=3), _kmeans_with_block_entries(points, 64 * 7)
    )


def _kmeans_with_block_entries(points, entries):
    saved = kmeans_module.MAX_BLOCK_ENTRIES
    kmeans_module.MAX_BLOCK_ENTRIES = entries
    try:
        return kmeans(points, 64, seed=3)
    finally:
        kmeans_module.MAX_BLOCK_ENTRIES = saved


def test_memory_is_bounded_by_the_block_not_points_times_clusters(rng):
    # 8,000 x 1,024 float64 distances would be 65 MB; blocks of 2**16
    # entries keep the peak near the points themselves (192 KB).
    points = rng.normal(size=(8000, 3))
    centroids = rng.normal(size=(1024, 3))
    saved = kmeans_module.MAX_BLOCK_ENTRIES
    kmeans_module.MAX_BLOCK_ENTRIES = 2**16
    tracemalloc.start()
    try:
        kmeans_module._nearest_centroids(points, centroids)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        kmeans_module.MAX_BLOCK_ENTRIES = saved
    assert peak < 8 * 2**20, peak
