"""The checks of keras_dvq/models/inputs.py, as VQVAE runs them on the
images and token grids it is given."""

import numpy as np
import pytest
import tensorflow as tf

from keras_dvq.models.inputs import check_image_shape
from keras_dvq.models.inputs import count_and_indices
from tests.models.tiny_vqvae import LOG_KEYS
from tests.models.tiny_vqvae import SIZE
from tests.models.tiny_vqvae import K
from tests.models.tiny_vqvae import built_model
from tests.models.tiny_vqvae import make_model


def test_uint8_images_are_scaled_to_the_unit_interval(trained):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(8, SIZE, SIZE, 3), dtype=np.uint8)
    as_float = pixels.astype("float32") / 255
    tokens = trained.encode(pixels)
    np.testing.assert_array_equal(tokens, trained.encode(as_float))
    np.testing.assert_array_equal(
        trained.predict(pixels, verbose=0), trained.predict(as_float, verbose=0)
    )
    # Unscaled floats in [0, 255] would give other codes.
    assert not np.array_equal(tokens, trained.encode(pixels.astype("float32")))


def test_tf_data_inputs(images):
    labels = np.arange(16, dtype="int64")
    # Images exact in uint8, so that all three datasets hold the same pixels.
    pixels = (images * 255).round().astype("uint8")
    images = pixels.astype("float32") / 255
    datasets = {
        "images": tf.data.Dataset.from_tensor_slices(images),
        "pairs": tf.data.Dataset.from_tensor_slices((images, labels)),
        "dicts": tf.data.Dataset.from_tensor_slices({"image": pixels, "label": labels}),
    }
    model = make_model()
    model.compile()
    for name, dataset in datasets.items():
        history = model.fit(dataset.batch(8), epochs=1, shuffle=False, verbose=0)
        assert set(history.history) == LOG_KEYS, name
        assert np.isfinite(history.history["loss"][0]), name
    expected = model.encode(images)
    for name, dataset in datasets.items():
        tokens = model.encode(dataset.batch(5))
        np.testing.assert_array_equal(tokens, expected, err_msg=name)
    logs = model.evaluate(datasets["dicts"].batch(8), verbose=0, return_dict=True)
    assert set(logs) == LOG_KEYS


BAD_IMAGES = {
    "rank": ((4, SIZE, SIZE), r"images.shape=\(4, 16, 16\)"),
    "channels": ((4, SIZE, SIZE, 1), r"3 channels.*images.shape=\(4, 16, 16, 1\)"),
    "size": ((4, 30, 30, 3), r"divisible.*stride 4.*images.shape=\(4, 30, 30, 3\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_encode_rejects_bad_image_shapes(case):
    shape, message = BAD_IMAGES[case]
    with pytest.raises(ValueError, match=message):
        built_model().encode(np.zeros(shape, "float32"))


def test_dalle_model_rejects_sizes_not_divisible_by_eight():
    model = built_model(enc_dec_flavor="dalle")
    with pytest.raises(ValueError, match=r"stride 8.*\(4, 20, 20, 3\)"):
        model.encode(np.zeros((4, 20, 20, 3), "float32"))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((4, 20, 20, 3), r"stride 8.*images.shape=\(\w+, 20, 20, 3\)"),
        ((4, SIZE, SIZE, 1), r"3 channels.*images.shape=\(\w+, 16, 16, 1\)"),
    ],
)
def test_fit_rejects_bad_image_shapes(shape, message):
    model = make_model("gumbel", "dalle")
    model.compile()
    with pytest.raises(ValueError, match=message):
        model.fit(np.zeros(shape, "float32"), verbose=0)


def test_sizes_known_only_at_run_time_are_checked(images):
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((4, 30, 30, 3), "float32"))
    dataset = dataset.batch(2).map(lambda x: tf.ensure_shape(x, (None,) * 4))
    model = built_model()
    with pytest.raises(ValueError, match=r"divisible by the encoder stride 4"):
        model.predict(dataset, verbose=0)


def test_dict_inputs_need_an_image_key(images):
    with pytest.raises(ValueError, match=r"'image'.*\['pixels'\]"):
        built_model().encode({"pixels": images})


@pytest.mark.parametrize("method", ["encode", "project", "predict"])
def test_nan_images_are_rejected_naming_them(method, trained, images):
    bad = images.copy()
    bad[2, 3, 4, 1] = np.nan
    bad[11, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 image\(s\), at indices \[2, 11\]"):
        getattr(trained, method)(bad, batch_size=4)
    # The check runs on the host: the model stays usable.
    assert trained.encode(images).shape == (16, 4, 4)


@pytest.mark.parametrize("bad_id", [-1, K])
def test_decode_rejects_out_of_range_ids(bad_id, trained):
    tokens = np.zeros((5, 4, 4), "int32")
    tokens[3, 1, 2] = bad_id
    with pytest.raises(ValueError, match=rf"\[0, {K}\).*{bad_id}.*indices \[3\]"):
        trained.decode(tokens)


def test_decode_rejects_float_tokens():
    with pytest.raises(ValueError, match="integer dtype.*float32"):
        built_model().decode(np.zeros((2, 4, 4), "float32"))


def test_decode_rejects_misshapen_tokens():
    with pytest.raises(ValueError, match=r"tokens.shape=\(2, 16\)"):
        built_model().decode(np.zeros((2, 16), "int32"))


@pytest.mark.parametrize(
    "method, bad, message",
    [
        ("encode", np.zeros((4, 30, 30, 3), "float32"), "divisible"),
        ("encode", np.zeros((4, SIZE, SIZE, 1), "float32"), "3 channels"),
        ("encode", np.zeros((4, SIZE, SIZE), "float32"), r"images.shape=\(4, 16, 16\)"),
        ("decode", np.zeros((2, 16), "int32"), r"tokens.shape=\(2, 16\)"),
        ("decode", np.zeros((2, 4, 4), "float32"), "integer dtype"),
        ("encode", {"pixels": np.zeros((4, SIZE, SIZE, 3))}, r"\['pixels'\]"),
    ],
)
def test_inputs_are_checked_after_an_earlier_call(method, bad, message, images):
    model = built_model()
    model.decode(model.encode(images))
    with pytest.raises(ValueError, match=message):
        getattr(model, method)(bad)


def test_image_shape_checks_need_only_what_is_known():
    check_image_shape((None, None, None, None), image_channels=3, stride=8)
    check_image_shape((2, 24, 16, 3), image_channels=3, stride=8)
    with pytest.raises(ValueError, match=r"stride 8.*\(2, 20, 16, 3\)"):
        check_image_shape((2, 20, 16, 3), image_channels=3, stride=8)


def test_messages_name_at_most_ten_indices():
    assert count_and_indices(np.array([2, 11]), "image(s)") == (
        "2 image(s), at indices [2, 11]"
    )
    message = count_and_indices(np.arange(12), "grid(s)")
    assert message == "12 grid(s), at indices [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] ..."
