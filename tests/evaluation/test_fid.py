"""keras_dvq.evaluation.fid: the Frechet distance against scipy, running
statistics against numpy.cov, and the InceptionV3 feature path with random
weights at a small input (no test downloads anything)."""

import numpy as np
import pytest
from keras import ops
from scipy import linalg

from keras_dvq.evaluation import fid
from keras_dvq.utils.errors import BadInput


def scipy_frechet_distance(mean_1, covariance_1, mean_2, covariance_2):
    """The formula as pytorch-fid computes it, with scipy's sqrtm."""
    root, _ = linalg.sqrtm(covariance_1 @ covariance_2, disp=False)
    return float(
        np.sum((mean_1 - mean_2) ** 2)
        + np.trace(covariance_1 + covariance_2 - 2 * root.real)
    )


@pytest.mark.parametrize("count", [200, 30])  # 30 < 40 features: singular
def test_frechet_distance_matches_scipy(count):
    rng = np.random.default_rng(count)
    mixing = rng.normal(size=(40, 40))
    a = rng.normal(size=(count, 40)) @ mixing
    b = rng.normal(0.3, 1.0, size=(count, 40)) @ (
        mixing + 0.5 * rng.normal(size=(40, 40))
    )
    statistics = [(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
    ours = fid.frechet_distance(*statistics[0], *statistics[1])
    theirs = scipy_frechet_distance(*statistics[0], *statistics[1])
    assert ours > 1.0
    assert ours == pytest.approx(theirs, rel=1e-5)
    # The route through the features themselves gives the same value.
    assert fid.frechet_distance_of_features(a, b) == pytest.approx(theirs, rel=1e-5)
    assert fid.frechet_distance_of_features(a, a) == pytest.approx(
        0.0, abs=1e-6 * np.trace(statistics[0][1])
    )
    assert fid.frechet_distance(*statistics[0], *statistics[0]) == pytest.approx(
        0.0, abs=1e-6 * np.trace(statistics[0][1])
    )


def test_feature_statistics_in_chunks_equal_numpy():
    rng = np.random.default_rng(0)
    features = rng.normal(2.0, 3.0, size=(37, 6))
    statistics = fid.FeatureStatistics()
    for chunk in (features[:10], features[10:11], features[11:]):
        statistics.update(chunk)
    mean, covariance = statistics.result()
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(features, rowvar=False), rtol=1e-9)
    assert statistics.features() is None  # 37 vectors > 6 dimensions
    few = fid.FeatureStatistics()
    for chunk in (features[:4], features[4:6]):
        few.update(chunk)
    np.testing.assert_array_equal(few.features(), features[:6])
    few_b = fid.FeatureStatistics()
    few_b.update(features[10:15])
    both_routes = fid.frechet_distance(*few.result(), *few_b.result())
    assert fid.split_frechet_distance(few, few_b) == pytest.approx(both_routes)
    with pytest.raises(ValueError, match="at least 2 feature vectors.*1"):
        one = fid.FeatureStatistics()
        one.update(features[:1])
        one.result()


@pytest.mark.slow  # 30 s on JAX (compiling InceptionV3), 6 s on TensorFlow
def test_inception_features_with_random_weights(tmp_path):
    model = fid.inception_features(image_size=75)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 32, 32, 3)).astype("float32")
    features = ops.convert_to_numpy(model(images))
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    assert not model.trainable_weights
    path = str(tmp_path / "inception_notop.weights.h5")
    model.get_layer("inception_v3").save_weights(path)
    loaded = fid.load_inception(path, image_size=75)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(images)), features, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(BadInput, match="--inception_weights .*nope.h5: not found"):
        fid.load_inception(str(tmp_path / "nope.h5"))
    wrong = tmp_path / "wrong.h5"
    wrong.write_bytes(b"not hdf5")
    with pytest.raises(BadInput, match="wrong.h5: not InceptionV3 weights"):
        fid.load_inception(str(wrong), image_size=75)
    with pytest.raises(ValueError, match="at least 75 px.*image_size=32"):
        fid.inception_features(image_size=32)
