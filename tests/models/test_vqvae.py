import json
import threading

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.layers import GumbelQuantizer
from keras_dvq.layers import VectorQuantizer
from keras_dvq.metrics import CodebookUsage
from keras_dvq.models import VQVAE
from keras_dvq.models import DeepMindDecoder
from keras_dvq.models import DeepMindEncoder
from tests.models.tiny_vqvae import LOG_KEYS
from tests.models.tiny_vqvae import N_HID
from tests.models.tiny_vqvae import SIZE
from tests.models.tiny_vqvae import D
from tests.models.tiny_vqvae import K
from tests.models.tiny_vqvae import built_model
from tests.models.tiny_vqvae import fitted_model
from tests.models.tiny_vqvae import make_images
from tests.models.tiny_vqvae import make_model


def json_normalized(config):
    return json.loads(json.dumps(config))


def weights_of(model):
    return [ops.convert_to_numpy(v) for v in model.weights]


def flavors(*combos):
    """Parameters for flavor combos; the DALL-E ones (10-30 s to compile a
    training step on CPU) are marked slow."""
    return [
        pytest.param(*combo, marks=[pytest.mark.slow] if "dalle" in combo else [])
        for combo in combos
    ]


# Every pair of flavor values, not the whole 2x2x2 product: the four


# combinations with an even number of second choices hold each pair of two


# flavors' values once. A DALL-E encoder's training step takes half a minute


# to compile; the DALL-E dVAE's own triple (gumbel, openai, logit_laplace)


# encodes, decodes and predicts below.


FLAVOR_PAIRS = flavors(
    ("vq", "deepmind", "l2"),
    ("vq", "dalle", "logit_laplace"),
    ("gumbel", "deepmind", "logit_laplace"),
    ("gumbel", "dalle", "l2"),
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
    flavors(("vq", "deepmind", "l2"), ("gumbel", "dalle", "logit_laplace")),
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


@pytest.mark.parametrize(
    "vq_flavor, loss_flavor", [("vq", "l2"), ("gumbel", "logit_laplace")]
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


class ReadBackQuantizer(VectorQuantizer):
    """A VectorQuantizer whose loss list another call of the same model, in
    another thread, fills the moment it is read, as tf.distribute's replica
    threads may between a replica's `add_loss` and its read-back."""

    other_call = None

    @property
    def losses(self):
        other_call, self.other_call = self.other_call, None
        if other_call is not None:
            thread = threading.Thread(target=other_call)
            thread.start()
            thread.join()
        return super().losses


def test_latent_loss_is_that_of_the_own_call(images):
    model = VQVAE(
        encoder=DeepMindEncoder(n_hid=N_HID),
        quantizer=ReadBackQuantizer(K, D, name="quantizer"),
        decoder=DeepMindDecoder(n_hid=N_HID, output_channels=3),
    )
    first, second = images[:4], images[8:12]

    def latent_loss(x):
        return float(ops.convert_to_numpy(model(x)["latent_loss"]))

    expected = latent_loss(first)
    assert latent_loss(second) != pytest.approx(expected)
    other = []
    model.quantizer.other_call = lambda: other.append(latent_loss(second))
    assert latent_loss(first) == pytest.approx(expected)
    # (Reading the loss list back gave the other thread's loss.)
    assert not other or other[0] != pytest.approx(expected)


def test_the_training_image_size_is_recorded_and_saved(tmp_path):
    model = VQVAE.from_flavors(n_hid=N_HID, image_size=48)
    assert model.image_size == 48
    model.build((None, 16, 16, 3))  # fully convolutional: other sizes still run
    path = tmp_path / "model.keras"
    model.save(path)
    assert keras.models.load_model(path).image_size == 48
    # Files written before the size was recorded have no such key.
    config = model.get_config()
    del config["image_size"]
    assert VQVAE.from_config(config).image_size is None


@pytest.mark.parametrize(
    "image_size, message", [(0, "positive"), (30, "divisible by the encoder stride 4")]
)
def test_an_image_size_the_encoder_cannot_divide_is_refused(image_size, message):
    with pytest.raises(ValueError, match=message):
        VQVAE.from_flavors(n_hid=N_HID, image_size=image_size)
