import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_dvq.layers import GumbelQuantizer
from keras_dvq.layers import VectorQuantizer
from keras_dvq.metrics import CodebookUsage
from keras_dvq.models import VQVAE
from keras_dvq.models import DeepMindDecoder
from keras_dvq.models import DeepMindEncoder

K, D, N_HID = 16, 4, 8
SIZE = 16
LOG_KEYS = {"loss", "recon_loss", "latent_loss", "psnr", "perplexity", "cluster_use"}


def make_model(vq_flavor="vqvae", enc_dec_flavor="deepmind", loss_flavor="l2", **kw):
    return VQVAE.from_flavors(
        vq_flavor=vq_flavor,
        enc_dec_flavor=enc_dec_flavor,
        loss_flavor=loss_flavor,
        num_embeddings=K,
        embedding_dim=D,
        n_hid=N_HID,
        **kw,
    )


def make_images(count=16, size=SIZE, seed=0):
    """Smooth random images, so that the tiny models see some structure."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(count, size // 4, size // 4, 3))
    return coarse.repeat(4, axis=1).repeat(4, axis=2).astype("float32")


def fitted_model(images, **kwargs):
    model = make_model(**kwargs)
    model.compile()
    model.fit(images, batch_size=8, epochs=1, verbose=0)
    return model


def built_model(**kwargs):
    """A built, untrained model whose inference functions are not traced yet."""
    model = make_model(**kwargs)
    model.build((None, SIZE, SIZE, 3))
    return model


def json_normalized(config):
    return json.loads(json.dumps(config))


def weights_of(model):
    return [ops.convert_to_numpy(v) for v in model.weights]


@pytest.fixture(scope="module")
def images():
    return make_images()


@pytest.fixture(scope="module")
def trained(images):
    """A fitted VQ model shared by the read-only tests of this module."""
    keras.utils.set_random_seed(0)
    return fitted_model(images)


def flavors(*combos):
    """Parameters for flavor combos; the DALL-E ones (10-30 s to compile a
    training step on CPU) are marked slow."""
    return [
        pytest.param(*combo, marks=[pytest.mark.slow] if "openai" in combo else [])
        for combo in combos
    ]


# Every pair of flavor values, not the whole 2x2x2 product: the four
# combinations with an even number of second choices hold each pair of two
# flavors' values once. A DALL-E encoder's training step takes half a minute
# to compile; the DALL-E dVAE's own triple (gumbel, openai, logit_laplace)
# encodes, decodes and predicts below.
FLAVOR_PAIRS = flavors(
    ("vqvae", "deepmind", "l2"),
    ("vqvae", "openai", "logit_laplace"),
    ("gumbel", "deepmind", "logit_laplace"),
    ("gumbel", "openai", "l2"),
)


@pytest.mark.parametrize("vq_flavor, enc_dec_flavor, loss_flavor", FLAVOR_PAIRS)
def test_fit_every_flavor(vq_flavor, enc_dec_flavor, loss_flavor, images):
    model = make_model(vq_flavor, enc_dec_flavor, loss_flavor)
    model.build((None, SIZE, SIZE, 3))
    model.compile()
    before = [ops.convert_to_numpy(v) for v in model.trainable_weights]
    history = model.fit(images, batch_size=8, epochs=1, verbose=0)
    after = [ops.convert_to_numpy(v) for v in model.trainable_weights]
    moved = [not np.array_equal(b, a) for b, a in zip(before, after, strict=True)]
    assert np.mean(moved) > 0.9
    logs = {key: values[-1] for key, values in history.history.items()}
    assert set(logs) == LOG_KEYS
    assert all(np.isfinite(value) for value in logs.values())
    assert logs["loss"] == pytest.approx(
        logs["recon_loss"] + logs["latent_loss"], rel=1e-4, abs=1e-6
    )
    assert logs["latent_loss"] >= 0
    assert 1 <= logs["perplexity"] <= logs["cluster_use"] <= K
    stride = 4 if enc_dec_flavor == "deepmind" else 8
    tokens = model.encode(images)
    assert tokens.shape == (16, SIZE // stride, SIZE // stride)


def test_evaluate_logs(trained, images):
    logs = trained.evaluate(images, batch_size=4, verbose=0, return_dict=True)
    assert set(logs) == LOG_KEYS
    assert logs["loss"] == pytest.approx(
        logs["recon_loss"] + logs["latent_loss"], rel=1e-4
    )


def test_evaluate_perplexity_is_that_of_the_whole_evaluation(trained, images):
    logs = trained.evaluate(images, batch_size=4, verbose=0, return_dict=True)
    tokens = trained.encode(images)
    usage = CodebookUsage(num_embeddings=K)
    usage.update_state(tokens)
    expected = {k: float(ops.convert_to_numpy(v)) for k, v in usage.result().items()}
    assert logs["cluster_use"] == expected["cluster_use"]
    assert logs["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    # Per-batch histograms would see fewer codes.
    per_batch = []
    for start in range(0, 16, 4):
        usage.reset_state()
        usage.update_state(tokens[start : start + 4])
        per_batch.append(float(ops.convert_to_numpy(usage.result()["perplexity"])))
    assert logs["perplexity"] > np.mean(per_batch)


def test_recon_loss_is_the_gaussian_nll(trained, images):
    logs = trained.evaluate(images, batch_size=16, verbose=0, return_dict=True)
    outputs = trained(images)
    decoder_output = ops.convert_to_numpy(outputs["decoder_output"])
    expected = ((images - 0.5 - decoder_output) ** 2).mean() / (
        2 * trained.reconstruction_loss.data_variance
    )
    assert logs["recon_loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "vq_flavor, enc_dec_flavor, loss_flavor",
    flavors(("vqvae", "deepmind", "l2"), ("gumbel", "openai", "logit_laplace")),
)
def test_encode_decode_predict(vq_flavor, enc_dec_flavor, loss_flavor, images):
    model = built_model(
        vq_flavor=vq_flavor, enc_dec_flavor=enc_dec_flavor, loss_flavor=loss_flavor
    )
    stride = model.stride
    tokens = model.encode(images, batch_size=8)
    assert tokens.dtype == np.int32
    assert tokens.shape == (16, SIZE // stride, SIZE // stride)
    assert tokens.min() >= 0 and tokens.max() < K
    np.testing.assert_array_equal(tokens, ops.convert_to_numpy(model(images)["tokens"]))

    decoded = model.decode(tokens)
    assert decoded.dtype == np.float32
    assert decoded.shape == images.shape
    assert decoded.min() >= 0 and decoded.max() <= 1

    reconstructions = model.predict(images, batch_size=8, verbose=0)
    assert reconstructions.dtype == np.float32
    assert reconstructions.shape == images.shape
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1
    np.testing.assert_allclose(decoded, reconstructions, atol=1e-5)


def test_predict_is_decode_of_encode_after_training(trained, images):
    tokens = trained.encode(images)
    assert len(np.unique(tokens)) > 1
    np.testing.assert_allclose(
        trained.decode(tokens), trained.predict(images, verbose=0), atol=1e-5
    )
    # The reconstructions go through the codes: not the identity.
    assert np.abs(trained.predict(images, verbose=0) - images).mean() > 1e-3


def test_project_returns_the_quantizer_inputs(trained, images):
    z_e = trained.project(images)
    assert z_e.shape == (16, SIZE // 4, SIZE // 4, D)
    codebook = ops.convert_to_numpy(trained.quantizer.codebook)
    distances = ((z_e[..., None, :] - codebook) ** 2).sum(-1)
    np.testing.assert_array_equal(distances.argmin(-1), trained.encode(images))
    # Every quantizer projects: the Gumbel flavor's latents are its logits.
    gumbel = make_model("gumbel")
    gumbel.build((None, SIZE, SIZE, 3))
    logits = gumbel.project(images)
    assert logits.shape == (16, SIZE // 4, SIZE // 4, gumbel.quantizer.vocabulary_size)
    np.testing.assert_array_equal(logits.argmax(-1), gumbel.encode(images))


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


@pytest.mark.parametrize(
    "vq_flavor, loss_flavor", [("vqvae", "l2"), ("gumbel", "logit_laplace")]
)
def test_save_and_load_round_trip(vq_flavor, loss_flavor, images, tmp_path):
    # DALL-E layers' own save/load is tested in test_dalle.py.
    model = fitted_model(images, vq_flavor=vq_flavor, loss_flavor=loss_flavor)
    if vq_flavor == "gumbel":
        model.quantizer.temperature.assign(0.25)
        model.quantizer.kl_weight.assign(0.01)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, VQVAE)
    assert type(loaded.quantizer) is type(model.quantizer)
    # JSON turns the build shapes' tuples into lists.
    assert json_normalized(loaded.get_config()) == json_normalized(model.get_config())
    for before, after in zip(weights_of(model), weights_of(loaded), strict=True):
        np.testing.assert_array_equal(before, after)
    optimizer_variables = [
        (v.path, ops.convert_to_numpy(v)) for v in model.optimizer.variables
    ]
    restored = [(v.path, ops.convert_to_numpy(v)) for v in loaded.optimizer.variables]
    assert len(restored) == len(optimizer_variables) > 2
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for (name, before), (_, after) in zip(optimizer_variables, restored, strict=True):
        np.testing.assert_array_equal(before, after, err_msg=name)

    np.testing.assert_array_equal(loaded.encode(images), model.encode(images))
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    # Training goes on from the restored state.
    history = loaded.fit(images, batch_size=8, epochs=1, verbose=0)
    assert set(history.history) == LOG_KEYS


def test_compile_defaults_to_adamw_without_decay_on_biases_and_codebook():
    model = make_model()
    model.build((None, SIZE, SIZE, 3))
    model.compile()
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert float(ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(3e-4)
    assert optimizer.weight_decay == pytest.approx(1e-4)
    kernel = model.encoder.chain[0].kernel
    bias = model.encoder.chain[0].bias
    assert optimizer._use_weight_decay(kernel)
    assert not optimizer._use_weight_decay(bias)
    assert not optimizer._use_weight_decay(model.quantizer.codebook)
    assert optimizer._use_weight_decay(model.quantizer.projection.kernel)


def test_compile_excludes_codebook_from_decay_of_a_given_optimizer():
    model = make_model("gumbel")
    model.build((None, SIZE, SIZE, 3))
    model.compile(optimizer=keras.optimizers.Lion(weight_decay=0.1))
    assert isinstance(model.optimizer, keras.optimizers.Lion)
    assert not model.optimizer._use_weight_decay(model.quantizer.codebook)
    assert model.optimizer._use_weight_decay(model.decoder.chain[0].kernel)


def test_compile_rejects_a_loss():
    model = make_model()
    with pytest.raises(ValueError, match="loss='mse'"):
        model.compile(loss="mse")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vq_flavor": "vq"}, "vq_flavor.*'vqvae', 'gumbel'.*vq_flavor='vq'"),
        ({"enc_dec_flavor": "dalle"}, "enc_dec_flavor.*enc_dec_flavor='dalle'"),
        ({"loss_flavor": "mse"}, "loss_flavor.*loss_flavor='mse'"),
        ({"n_hid": 0}, "n_hid=0"),
        ({"num_embeddings": -3}, "num_embeddings=-3"),
        ({"embedding_dim": 0}, "embedding_dim=0"),
        ({"dead_code_threshold": -1.0}, "dead_code_threshold=-1.0"),
        ({"image_channels": 0}, "image_channels=0"),
    ],
)
def test_from_flavors_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VQVAE.from_flavors(**kwargs)


def test_constructor_rejects_bad_image_channels():
    with pytest.raises(ValueError, match="image_channels=0"):
        VQVAE(
            encoder=DeepMindEncoder(n_hid=N_HID),
            quantizer=VectorQuantizer(K, D),
            decoder=DeepMindDecoder(n_hid=N_HID, output_channels=3),
            image_channels=0,
        )


def test_decoder_must_match_the_loss():
    with pytest.raises(ValueError, match="6 channels.*output_channels=3"):
        VQVAE(
            encoder=DeepMindEncoder(n_hid=N_HID),
            quantizer=VectorQuantizer(K, D),
            decoder=DeepMindDecoder(n_hid=N_HID, output_channels=3),
            reconstruction_loss="logit_laplace",
        )


def test_encode_needs_a_built_model(images):
    with pytest.raises(ValueError, match="built model"):
        make_model().encode(images)


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


def test_openai_model_rejects_sizes_not_divisible_by_eight():
    model = built_model(enc_dec_flavor="openai")
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
    model = make_model("gumbel", "openai")
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


@pytest.mark.parametrize(
    "method, bad",
    [
        ("decode", np.zeros((2, 4, 4), "float32")),
        ("encode", np.zeros((4, 30, 30, 3), "float32")),
        ("encode", {"pixels": np.zeros((4, SIZE, SIZE, 3), "float32")}),
        # Shapes only known inside the compiled step: the error comes from
        # the trace (on JAX, Keras' predict purges the variables meanwhile).
        ("encode", "dataset of unknown shape"),
    ],
)
def test_model_still_works_after_a_rejected_input(method, bad, images):
    if isinstance(bad, str):
        bad = tf.data.Dataset.from_generator(
            lambda: iter([np.zeros((2, 30, 30, 3), "float32")]),
            output_signature=tf.TensorSpec((None, None, None, 3), "float32"),
        )
    model = built_model()
    tokens = model.encode(images)
    decoded = model.decode(tokens)
    with pytest.raises(ValueError):
        getattr(model, method)(bad)
    np.testing.assert_array_equal(model.decode(tokens), decoded)
    np.testing.assert_array_equal(model.encode(images), tokens)


def test_arrays_are_run_batch_by_batch_as_predict_would(images, monkeypatch):
    from keras_dvq.models import vqvae

    model = built_model()
    images = make_images(count=20)  # batches of 8, 8 and 4
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(8)
    expected = {
        "encode": model.encode(dataset),
        "project": model.project(dataset),
        "predict": model.predict(dataset, verbose=0),
    }

    def keras_predict(*args, **kwargs):
        raise AssertionError("Keras' predict ran on an in-memory array")

    monkeypatch.setattr(vqvae._InferenceModel, "predict", keras_predict)
    for method, value in expected.items():
        result = getattr(model, method)(images, batch_size=8, verbose=0)
        np.testing.assert_allclose(result, value, atol=1e-6, err_msg=method)
    tokens = model.encode(images)  # the default batch size, 32
    np.testing.assert_array_equal(tokens, expected["encode"])
    np.testing.assert_allclose(model.decode(tokens, batch_size=8), expected["predict"])


def test_progress_bars_and_callbacks_still_go_through_keras_predict(images):
    class CountBatches(keras.callbacks.Callback):
        batches = 0

        def on_predict_batch_end(self, batch, logs=None):
            self.batches += 1

    model = built_model()
    counter = CountBatches()
    model.predict(make_images(count=20), batch_size=8, callbacks=[counter], verbose=0)
    assert counter.batches == 3


def test_inference_models_stay_out_of_the_model(images):
    model = fitted_model(images)
    names = sorted(layer.name for layer in model.layers)
    num_weights = len(model.weights)
    num_variables = len(model.variables)
    model.encode(images)
    model.decode(model.encode(images))
    model.predict(images, verbose=0)
    model.project(images)
    assert sorted(layer.name for layer in model.layers) == names
    assert names == ["decoder", "encoder", "quantizer"]
    assert len(model.weights) == num_weights
    assert len(model.variables) == num_variables
    assert not any("_encode" in v.path or "_decode" in v.path for v in model.weights)


def test_fit_with_ema_and_dead_code_restarts(images):
    model = make_model(use_ema=True, dead_code_threshold=0.5)
    model.compile()
    history = model.fit(images, batch_size=8, epochs=2, verbose=0)
    assert set(history.history) == LOG_KEYS
    quantizer = model.quantizer
    assert not any(v is quantizer.codebook for v in model.trainable_weights)
    counts = ops.convert_to_numpy(quantizer.ema_cluster_size)
    # Codes whose average falls under the threshold restart at it.
    assert np.all(counts >= 0.5 - 1e-6)


def test_vq_flavor_defaults_to_ema_with_dead_code_restarts():
    default = make_model().quantizer
    assert default.use_ema and default.dead_code_threshold == 1.0
    faithful = make_model(seed_faithful=True).quantizer
    assert not faithful.use_ema and faithful.dead_code_threshold == 0.0
    gradient = make_model(use_ema=False).quantizer
    assert not gradient.use_ema and gradient.dead_code_threshold == 0.0
    tuned = make_model(dead_code_threshold=2.0).quantizer
    assert tuned.use_ema and tuned.dead_code_threshold == 2.0


def test_model_call_returns_reconstruction_tokens_and_likelihood_parameters():
    model = make_model("gumbel", loss_flavor="logit_laplace")
    outputs = model(make_images(count=2))
    assert set(outputs) == {"reconstruction", "tokens", "decoder_output", "latent_loss"}
    assert keras.backend.standardize_dtype(outputs["tokens"].dtype) == "int32"
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs["latent_loss"]),
        ops.convert_to_numpy(sum(model.losses)),
    )
    assert tuple(outputs["decoder_output"].shape) == (2, SIZE, SIZE, 6)
    reconstruction = ops.convert_to_numpy(outputs["reconstruction"])
    expected = ops.convert_to_numpy(
        model.reconstruction_loss.out_map(outputs["decoder_output"])
    )
    np.testing.assert_array_equal(reconstruction, expected)
    assert isinstance(model.quantizer, GumbelQuantizer)
