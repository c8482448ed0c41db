"""AdversarialVQVAE: both players in one `fit` step, on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.callbacks import StepBackup
from keras_dvq.callbacks import StopOnDivergence
from keras_dvq.layers import PatchDiscriminator
from keras_dvq.models import VQVAE
from keras_dvq.models import AdversarialVQVAE
from keras_dvq.utils.divergence import TrainingDiverged
from keras_dvq.utils.training_state import sync_training_state
from tests.models.tiny_vqvae import LOG_KEYS
from tests.models.tiny_vqvae import N_HID
from tests.models.tiny_vqvae import SIZE
from tests.models.tiny_vqvae import D
from tests.models.tiny_vqvae import K
from tests.models.tiny_vqvae import make_images

ADVERSARIAL_KEYS = {"adv_loss", "disc_loss", "logits_real", "logits_fake", "adv_weight"}


def make_gan(vq_flavor="vq", **kwargs):
    sized = {"num_embeddings": K, "embedding_dim": D}
    if vq_flavor in ("fsq", "lfq"):
        sized = {"levels": (3, 3)} if vq_flavor == "fsq" else {"codebook_bits": 3}
    kwargs.setdefault(
        "discriminator", PatchDiscriminator(n_layers=1, ndf=4, name="discriminator")
    )
    return AdversarialVQVAE.from_flavors(
        vq_flavor=vq_flavor, n_hid=N_HID, **sized, **kwargs
    )


def numpy_weights(variables):
    return [np.array(ops.convert_to_numpy(v)) for v in variables]


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def logits_of(model, images):
    """The discriminator's logits on real and reconstructed images."""
    reconstruction = model(images, training=True)["reconstruction"]
    real = model.discriminator(2.0 * images - 1.0)
    fake = model.discriminator(2.0 * reconstruction - 1.0)
    return to_numpy(real), to_numpy(fake)


def sgd_model(disc_weight, learning_rate=0.1, **kwargs):
    keras.utils.set_random_seed(0)
    # The gradient codebook: a forward pass changes no state.
    model = make_gan(disc_weight=disc_weight, seed_faithful=True, **kwargs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        discriminator_optimizer=keras.optimizers.SGD(learning_rate),
    )
    model.build((None, SIZE, SIZE, 3))
    return model


def test_one_step_moves_each_player_by_its_own_gradient():
    """With SGD, one step moves the discriminator by the gradient of its own
    loss alone (the generator term's gradient cancels), and the generator by
    `disc_weight` times a finite-difference gradient of `g(D(x_hat))`."""
    images = make_images(8)
    learning_rate, weight = 0.1, 2.0
    runs = {}
    for disc_weight in (weight, 0.0):
        model = sgd_model(disc_weight, learning_rate, disc_loss="non_saturating")
        before = numpy_weights(model.trainable_variables)
        if disc_weight:
            real, fake = logits_of(model, images)
            bias = model.decoder.trainable_variables[-1]
            assert "decoder" in bias.path and "bias" in bias.path
            generator_gradient = finite_difference(model, images, bias)
        history = model.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0)
        runs[disc_weight] = (model, before, history.history)
    model, before, logs = runs[weight]
    plain, plain_before, plain_logs = runs[0.0]
    for a, b in zip(before, plain_before, strict=True):
        np.testing.assert_array_equal(a, b)  # the same start

    # The discriminator: its last bias moved by -lr * dL_D/db, from NumPy.
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    d_bias = 0.5 * (sigmoid(fake).mean() - sigmoid(-real).mean())
    moved = (
        to_numpy(model.discriminator.convs[-1].bias)
        - before[_index(model, model.discriminator.convs[-1].bias)]
    )
    np.testing.assert_allclose(moved, -learning_rate * d_bias, rtol=1e-4, atol=1e-7)
    # ... and by the same amount whatever the generator's adversarial weight.
    for a, b in zip(
        numpy_weights(model.discriminator.weights),
        numpy_weights(plain.discriminator.weights),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # The generator: the adversarial weight adds -lr * w * dg/dtheta.
    bias = model.decoder.trainable_variables[-1]
    index = _index(model, bias)
    difference = to_numpy(bias) - to_numpy(plain.decoder.trainable_variables[-1])
    assert np.abs(generator_gradient).max() > 1e-4  # a real gradient
    # Central differences through ReLU kinks and float32 are good to a few
    # percent, so the two vectors are compared as a whole.
    expected = -learning_rate * weight * generator_gradient
    assert np.linalg.norm(difference - expected) < 0.1 * np.linalg.norm(expected)
    assert not np.allclose(before[index], to_numpy(bias))

    # The generator term weighs nothing in the loss: its value is 0.
    expected = logs["recon_loss"][0] + logs["latent_loss"][0] + logs["disc_loss"][0]
    np.testing.assert_allclose(logs["loss"][0], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"][0], plain_logs["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(
        logs["adv_loss"][0], np.log1p(np.exp(-fake)).mean(), rtol=1e-4
    )
    np.testing.assert_allclose(logs["logits_real"][0], real.mean(), atol=1e-6)
    np.testing.assert_allclose(logs["logits_fake"][0], fake.mean(), atol=1e-6)
    assert logs["adv_weight"][0] == pytest.approx(weight)


def _index(model, variable):
    paths = [v.path for v in model.trainable_variables]
    return paths.index(variable.path)


def finite_difference(model, images, variable, eps=1e-3):
    """Central differences of `mean(softplus(-D(x_hat)))` in `variable`."""
    start = to_numpy(variable)
    gradient = np.zeros_like(start)
    for i in np.ndindex(start.shape):
        values = []
        for sign in (1.0, -1.0):
            moved = start.copy()
            moved[i] += sign * eps
            variable.assign(moved)
            _, fake = logits_of(model, images)
            values.append(np.log1p(np.exp(-fake.astype("float64"))).mean())
        gradient[i] = (values[0] - values[1]) / (2 * eps)
    variable.assign(start)
    return gradient


def test_the_discriminator_waits_for_disc_start():
    images = make_images(8)
    model = make_gan(disc_start=2, disc_weight=0.5)
    model.compile()
    model.build((None, SIZE, SIZE, 3))
    start = numpy_weights(model.discriminator.weights)
    first = model.fit(images, batch_size=4, epochs=1, verbose=0).history
    for a, b in zip(start, numpy_weights(model.discriminator.weights), strict=True):
        np.testing.assert_array_equal(a, b)  # steps 0 and 1: untouched
    assert first["adv_weight"] == [0.0]
    second = model.fit(images, batch_size=4, epochs=1, verbose=0).history
    assert second["adv_weight"][0] == pytest.approx(0.5)
    moved = [
        np.abs(a - b).max()
        for a, b in zip(start, numpy_weights(model.discriminator.weights), strict=True)
    ]
    assert min(moved) > 0
    sync_training_state(model)
    assert int(to_numpy(model.adversarial_step)) == 4


def test_the_model_round_trips_with_both_optimizers(tmp_path):
    images = make_images(8)
    model = make_gan(lecam_weight=0.1, disc_loss="non_saturating")
    model.compile()
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, AdversarialVQVAE)
    config, restored_config = model.get_config(), restored.get_config()
    for key in ("disc_weight", "disc_start", "disc_loss"):
        assert restored_config[key] == config[key]
    assert (
        restored_config["discriminator"]["config"]
        == (config["discriminator"]["config"])
    )
    assert restored.lecam_weight == 0.1
    inner = restored.optimizer.optimizers
    assert [type(o).__name__ for o in inner] == ["Adam", "AdamW"]
    assert (inner[0].beta_1, inner[0].beta_2) == (0.5, 0.9)
    for a, b in zip(
        numpy_weights(model.optimizer.variables),
        numpy_weights(restored.optimizer.variables),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        numpy_weights(model.weights), numpy_weights(restored.weights), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    # The discriminator's variables go to its own optimizer, the rest to AdamW.
    routed = restored.optimizer._var_to_optimizer_idx
    for variable in restored.trainable_variables:
        # (A loaded model's paths lack the model's name: the pattern allows both.)
        disc = "discriminator" in variable.path.split("/")[:2]
        assert routed[restored.optimizer._var_key(variable)] == (0 if disc else 1)
    restored.fit(images, batch_size=4, epochs=1, verbose=0)


def test_the_step_backup_restores_the_whole_game(tmp_path):
    images = make_images(8)
    model = make_gan(lecam_weight=0.1)
    model.compile()
    backup = StepBackup(tmp_path / "backup", every_steps=1)
    model.fit(images, batch_size=4, epochs=1, callbacks=[backup], verbose=0)
    sync_training_state(model)
    keras.utils.set_random_seed(1)  # another initialization
    fresh = make_gan(lecam_weight=0.1)
    fresh.compile()
    fresh.build((None, SIZE, SIZE, 3))
    assert StepBackup(tmp_path / "backup").restore(fresh) == (1, 0)
    for a, b in zip(
        numpy_weights(model.weights + model.optimizer.variables),
        numpy_weights(fresh.weights + fresh.optimizer.variables),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert int(to_numpy(fresh.adversarial_step)) == 2
    assert np.abs(to_numpy(fresh.lecam_ema)).max() > 0


class PoisonDecoder(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            sync_training_state(self.model)
            bias = self.model.decoder.weights[-1]
            bias.assign(np.full(bias.shape, np.nan, "float32"))


def test_a_diverged_step_still_stops_the_run():
    model = make_gan()
    model.compile()
    with pytest.raises(TrainingDiverged) as info:
        model.fit(
            make_images(8),
            batch_size=4,
            epochs=2,
            callbacks=[StopOnDivergence(), PoisonDecoder()],
            verbose=0,
        )
    assert info.value.step == 2
    assert {"loss", "recon_loss", "disc_loss"} <= set(info.value.terms)


@pytest.mark.parametrize("vq_flavor", ["vq", "gumbel", "fsq", "lfq", "rvq"])
def test_every_quantizer_fits_a_step_with_the_discriminator(vq_flavor):
    model = make_gan(vq_flavor)
    model.compile()
    start = numpy_weights(model.discriminator.weights) if model.built else None
    logs = model.fit(make_images(4), batch_size=4, epochs=1, verbose=0).history
    assert LOG_KEYS | ADVERSARIAL_KEYS <= set(logs)
    assert all(np.isfinite(values[0]) for values in logs.values())
    assert start is None
    assert int(to_numpy(model.optimizer.optimizers[0].iterations)) == 1


@keras.saving.register_keras_serializable(package="keras_dvq_tests")
class TinyDistance(keras.layers.Layer):
    """A stand-in perceptual network: squared differences of random features."""

    def build(self, input_shape):
        x_shape, _ = input_shape
        self.conv = keras.layers.Conv2D(2, 3)
        self.conv.build(x_shape)

    def call(self, inputs):
        x, x_hat = inputs
        return ops.mean(ops.square(self.conv(x) - self.conv(x_hat)), axis=(1, 2, 3))


def test_the_perceptual_distance_joins_the_generator_loss():
    images = make_images(8)
    distance = TinyDistance()
    model = make_gan(
        perceptual_weight=3.0,
        perceptual_model=distance,
        lecam_weight=1.0,
        seed_faithful=True,  # a forward pass changes no state
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        discriminator_optimizer=keras.optimizers.SGD(0.0),
    )
    model.build((None, SIZE, SIZE, 3))
    reconstruction = model(images, training=True)["reconstruction"]
    expected = to_numpy(distance((images, reconstruction))).mean()
    real, fake = logits_of(model, images)
    assert not any("tiny_distance" in v.path for v in model.trainable_variables)
    logs = model.fit(images, batch_size=8, epochs=1, verbose=0).history
    np.testing.assert_allclose(logs["perceptual_loss"][0], expected, rtol=1e-4)
    total = (
        logs["recon_loss"][0]
        + logs["latent_loss"][0]
        + logs["disc_loss"][0]
        + logs["lecam_loss"][0]
        + 3.0 * logs["perceptual_loss"][0]
    )
    np.testing.assert_allclose(logs["loss"][0], total, rtol=1e-5)
    # LeCAM's averages moved from 0 toward this step's mean logits.
    sync_training_state(model)
    np.testing.assert_allclose(
        to_numpy(model.lecam_ema),
        0.001 * np.array([real.mean(), fake.mean()]),
        rtol=1e-3,
        atol=1e-9,
    )


def test_the_tokenizer_part_carries_no_discriminator():
    model = make_gan()
    model.build((None, SIZE, SIZE, 3))
    tokenizer = model.as_vqvae()
    assert type(tokenizer) is VQVAE and tokenizer.built
    assert not any("discriminator" in v.path for v in tokenizer.weights)
    images = make_images(4)
    np.testing.assert_array_equal(tokenizer.encode(images), model.encode(images))
    np.testing.assert_allclose(
        tokenizer.predict(images, verbose=0), model.predict(images, verbose=0)
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"perceptual_weight": 1.0}, "perceptual_model"),
        ({"disc_weight": -1.0}, "disc_weight"),
        ({"disc_start": 1.5}, "disc_start"),
        ({"disc_loss": "wgan"}, "disc_loss"),
        ({"lecam_decay": 1.0}, "lecam_decay"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_gan(**kwargs)


def test_a_discriminator_too_deep_for_the_images_is_bad_input():
    from keras_dvq.utils.errors import BadInput

    model = make_gan(discriminator=PatchDiscriminator(n_layers=3, ndf=4))
    with pytest.raises(BadInput, match="n_layers"):
        model.build((None, SIZE, SIZE, 3))


@pytest.mark.backend_independent
def test_the_exported_tokenizer_holds_no_discriminator(tmp_path):
    import tensorflow as tf

    from keras_dvq.export.saved_model import export_tokenizer

    # An odd width: no encoder or decoder kernel has these shapes.
    model = make_gan(discriminator=PatchDiscriminator(n_layers=1, ndf=5))
    model.build((None, SIZE, SIZE, 3))
    path = export_tokenizer(model, str(tmp_path / "tokenizer"), (SIZE, SIZE, 3))
    exported = tf.saved_model.load(path)
    shapes = [tuple(v.shape) for v in exported.variables]
    for variable in model.discriminator.weights:
        assert tuple(variable.shape) not in shapes or len(variable.shape) < 2
    tokenizer_shapes = [tuple(v.shape) for v in model.as_vqvae().weights]
    assert sorted(set(tokenizer_shapes)) == sorted(set(shapes) - {(2,)})
    images = (make_images(2) * 255).astype("uint8")
    tokens = exported.signatures["encode"](images=images)["tokens"]
    np.testing.assert_array_equal(tokens.numpy(), model.encode(images))


def test_mixed_precision_trains_both_players(mixed_bfloat16):
    model = make_gan()
    model.compile()
    model.build((None, SIZE, SIZE, 3))
    start = numpy_weights(model.discriminator.weights)
    logs = model.fit(make_images(4), batch_size=4, epochs=1, verbose=0).history
    assert all(np.isfinite(values[0]) for values in logs.values())
    assert all(v.dtype == "float32" for v in model.discriminator.weights)
    moved = numpy_weights(model.discriminator.weights)
    assert max(np.abs(a - b).max() for a, b in zip(start, moved, strict=True)) > 0
