"""`AdversarialVQVAE`: a `VQVAE` trained against a patch discriminator.

One `fit` step updates both players on every backend, with no per-backend
`train_step`: `compute_loss` adds the discriminator's loss on `D(x)` and
`D(sg(x_hat))` (its only path to the generator is cut) and the generator's
adversarial term `g(D(x_hat)) - g(D(sg(x_hat)))`, whose value is 0 and whose
gradient with respect to the discriminator's weights cancels exactly, leaving
the generator's gradient of `g(D(x_hat))`. One gradient of the sum then holds
each player's gradient of its own loss, and `keras.optimizers.MultiOptimizer`
hands the discriminator's variables (routed by path) to their own optimizer.

A subclass rather than options of `VQVAE`: the plain model keeps its single
optimizer, config and files, and the tokenizer that scripts export is the
`VQVAE` part (encoder, quantizer, decoder) of either.
"""

import re

import keras
from keras import ops

from keras_dvq import distribution
from keras_dvq import losses
from keras_dvq.layers.discriminator import PatchDiscriminator
from keras_dvq.models import flavors
from keras_dvq.models.vqvae import VQVAE
from keras_dvq.utils.validation import check_choice

DISC_LEARNING_RATE = 3e-4
DISC_BETAS = (0.5, 0.9)  # taming-transformers' Adam betas
# Our reconstruction loss (squared error / (2 * 0.063)) is about 8x the
# squared error that LlamaGen weighs against 0.5; on `sample` at 32 px, 0.1
# from step 100 let the discriminator win and cost 11 dB of PSNR in 400
# steps, 0.01 did not (docs/vqgan.md).
DISC_WEIGHT = 0.01
LECAM_DECAY = 0.999
ADVERSARIAL_LOG_KEYS = ("adv_loss", "disc_loss", "logits_real", "logits_fake")


def _check_non_negative(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"Argument `{name}` must be a number >= 0. Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="keras_dvq")
class AdversarialVQVAE(VQVAE):
    """A `VQVAE` trained with a patch discriminator (the VQGAN recipe).

    Training minimizes, for the generator (encoder, quantizer, decoder),
    `recon_loss + latent_loss + perceptual_weight * perceptual_loss +
    w * g(D(x_hat))` and, for the discriminator `D`, `disc_loss(D(x),
    D(x_hat)) + lecam_weight * lecam_loss`, where `w` is `disc_weight` from
    step `disc_start` on and 0 before (the discriminator does not train
    before either: its loss is weighted the same way, and Adam moves no
    weight on zero gradients). Images enter `D` mapped to [-1, 1]. `g` is the
    generator loss of `disc_loss` (`"hinge"`: `-mean(D(x_hat))`;
    `"non_saturating"`: `mean(softplus(-D(x_hat)))`).

    Besides the `VQVAE` logs, each step logs `adv_loss` (the generator's
    `g(D(x_hat))`), `disc_loss`, `logits_real` and `logits_fake` (the mean
    logits on real and reconstructed images), `adv_weight` (the weight `w`
    in use), and `lecam_loss` and `perceptual_loss` where they are on. The
    logged `loss` is the sum that is differentiated: the generator's terms,
    whose adversarial part is 0 by construction, plus the discriminator's.

    `compile()` routes the discriminator's variables to their own optimizer
    (default Adam(3e-4, betas 0.5, 0.9)) through a
    `keras.optimizers.MultiOptimizer`; the generator's is `VQVAE`'s
    (AdamW(3e-4, weight decay 1e-4) by default). Both optimizers' states,
    the discriminator and the step counter behind `disc_start` are in the
    model's `.keras` file and weights, so training resumes where it stopped.

    Taming's adaptive adversarial weight (a ratio of gradient norms at the
    decoder's last layer) is not offered: it needs gradients of two losses
    inside the loss computation, which only a per-backend training step
    could take (docs/vqgan.md).

    Args:
        encoder, quantizer, decoder, reconstruction_loss, image_channels,
            image_size: as `VQVAE`.
        discriminator: a `PatchDiscriminator` (or any layer mapping images in
            [-1, 1] to logits) or `None` for `PatchDiscriminator()`.
        disc_weight: float >= 0. Weight of the generator's adversarial loss.
            Defaults to `0.01` (docs/vqgan.md).
        disc_start: int >= 0. First training step at which the
            discriminator trains and weighs in. Defaults to `0`.
        disc_loss: `"hinge"` (default) or `"non_saturating"`.
        lecam_weight: float >= 0. Weight of LeCAM's regularizer of the
            discriminator (`0`: off, the default).
        lecam_decay: float in [0, 1). Decay of LeCAM's moving averages of
            the mean logits. Defaults to `0.999`.
        perceptual_weight: float >= 0. Weight of `perceptual_model`'s
            distance. Defaults to `0`.
        perceptual_model: `None` or a Keras layer or model called as
            `perceptual_model((x, x_hat))` on a pair of image batches in
            [0, 1] that returns one distance per image (e.g. `LPIPS`, see
            `keras_dvq.evaluation.load_lpips`); it is frozen.
        **kwargs: base model keyword arguments, such as `name`.

    Example:

    ```python
    model = AdversarialVQVAE.from_flavors(
        vq_flavor="vq",
        enc_dec_flavor="deepmind",
        discriminator=PatchDiscriminator(n_layers=2, ndf=32),
        disc_start=1000,
    )
    model.compile()
    model.fit(images, batch_size=64, epochs=1)  # images: (N, 32, 32, 3)
    ```
    """

    def __init__(
        self,
        encoder,
        quantizer,
        decoder,
        discriminator=None,
        disc_weight=DISC_WEIGHT,
        disc_start=0,
        disc_loss="hinge",
        lecam_weight=0.0,
        lecam_decay=LECAM_DECAY,
        perceptual_weight=0.0,
        perceptual_model=None,
        **kwargs,
    ):
        super().__init__(encoder, quantizer, decoder, **kwargs)
        if discriminator is None:
            discriminator = PatchDiscriminator(name="discriminator")
        self.discriminator = discriminator
        self.disc_weight = _check_non_negative("disc_weight", disc_weight)
        if not isinstance(disc_start, int) or isinstance(disc_start, bool):
            raise ValueError(
                "Argument `disc_start` must be an int >= 0. "
                f"Received: disc_start={disc_start!r}"
            )
        self.disc_start = int(_check_non_negative("disc_start", disc_start))
        self.disc_loss = check_choice(
            "disc_loss", disc_loss, tuple(losses.ADVERSARIAL_LOSSES)
        )
        self.lecam_weight = _check_non_negative("lecam_weight", lecam_weight)
        self.lecam_decay = _check_non_negative("lecam_decay", lecam_decay)
        if self.lecam_decay >= 1.0:
            raise ValueError(
                f"Argument `lecam_decay` must be below 1. Received: {lecam_decay}"
            )
        self.perceptual_weight = _check_non_negative(
            "perceptual_weight", perceptual_weight
        )
        if self.perceptual_weight > 0 and perceptual_model is None:
            raise ValueError(
                "Argument `perceptual_model` is required when `perceptual_weight` "
                f"> 0. Received: perceptual_weight={perceptual_weight}, "
                "perceptual_model=None"
            )
        self.perceptual_model = perceptual_model
        if isinstance(perceptual_model, keras.layers.Layer):
            perceptual_model.trainable = False
        self.adv_loss_tracker = keras.metrics.Mean(name="adv_loss")
        self.disc_loss_tracker = keras.metrics.Mean(name="disc_loss")
        self.logits_real_tracker = keras.metrics.Mean(name="logits_real")
        self.logits_fake_tracker = keras.metrics.Mean(name="logits_fake")
        self.adv_weight_tracker = keras.metrics.Mean(name="adv_weight")
        self.lecam_tracker = None
        if self.lecam_weight > 0:
            self.lecam_tracker = keras.metrics.Mean(name="lecam_loss")
        self.perceptual_tracker = None
        if perceptual_model is not None:
            self.perceptual_tracker = keras.metrics.Mean(name="perceptual_loss")
        # The steps trained so far, counted in the graph: on JAX the loss
        # computation does not see the optimizer's `iterations`.
        self.adversarial_step = self.add_weight(
            name="adversarial_step",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        # LeCAM's moving averages of the mean logits on real and
        # reconstructed images (replica means: the same on every replica).
        self.lecam_ema = self.add_weight(
            name="lecam_ema",
            shape=(2,),
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="mean",
        )

    @classmethod
    def from_flavors(
        cls,
        vq_flavor="vq",
        enc_dec_flavor="deepmind",
        discriminator=None,
        disc_weight=DISC_WEIGHT,
        disc_start=0,
        disc_loss="hinge",
        lecam_weight=0.0,
        lecam_decay=LECAM_DECAY,
        perceptual_weight=0.0,
        perceptual_model=None,
        image_size=None,
        **flavor_kwargs,
    ):
        """`VQVAE.from_flavors` with the adversarial arguments of the class.

        Args:
            vq_flavor, enc_dec_flavor, image_size, **flavor_kwargs: as
                `VQVAE.from_flavors`.
            discriminator ... perceptual_model: as the constructor.
        """
        return cls(
            **flavors.model_arguments(
                vq_flavor=vq_flavor, enc_dec_flavor=enc_dec_flavor, **flavor_kwargs
            ),
            discriminator=discriminator,
            disc_weight=disc_weight,
            disc_start=disc_start,
            disc_loss=disc_loss,
            lecam_weight=lecam_weight,
            lecam_decay=lecam_decay,
            perceptual_weight=perceptual_weight,
            perceptual_model=perceptual_model,
            image_size=image_size,
        )

    def build(self, input_shape):
        super().build(input_shape)
        if isinstance(input_shape, dict):
            input_shape = input_shape["image"]
        if not self.discriminator.built:
            self.discriminator.build(tuple(input_shape))
        perceptual = self.perceptual_model
        if isinstance(perceptual, keras.layers.Layer):
            if not perceptual.built and None not in tuple(input_shape)[1:]:
                # Built here, not in the first step: its variables must exist
                # (frozen) before the optimizer lists the trainable ones.
                zeros = ops.zeros((1, *tuple(input_shape)[1:]))
                perceptual((zeros, zeros))
            perceptual.trainable = False
            # Sublayers created in the perceptual model's own build may miss
            # the flag, and the model lists trainable variables flat.
            for variable in perceptual.weights:
                variable.trainable = False

    def compile(self, optimizer=None, loss=None, discriminator_optimizer=None, **kw):
        """Configures training: the generator's optimizer (`VQVAE`'s default
        without one) and the discriminator's (default Adam(3e-4, betas 0.5,
        0.9)), combined in a `MultiOptimizer` that routes the
        discriminator's variables by path. A `MultiOptimizer` given as
        `optimizer` (e.g. from a saved model) is used as it is."""
        if isinstance(optimizer, keras.optimizers.MultiOptimizer):
            if discriminator_optimizer is not None:
                raise ValueError(
                    "Argument `discriminator_optimizer` must be None when "
                    "`optimizer` is a MultiOptimizer, which routes every "
                    f"variable. Received: {discriminator_optimizer!r}"
                )
        else:
            if optimizer is None:
                optimizer = keras.optimizers.AdamW(
                    learning_rate=3e-4, weight_decay=1e-4
                )
            if discriminator_optimizer is None:
                beta_1, beta_2 = DISC_BETAS
                discriminator_optimizer = keras.optimizers.Adam(
                    DISC_LEARNING_RATE, beta_1=beta_1, beta_2=beta_2
                )
            optimizer = keras.optimizers.MultiOptimizer(
                keras.optimizers.OptimizerMap(
                    default_optimizer=keras.optimizers.get(optimizer),
                    optimizer_map={
                        self.discriminator_pattern(): keras.optimizers.get(
                            discriminator_optimizer
                        )
                    },
                )
            )
        for inner in optimizer.optimizers:
            if getattr(inner, "weight_decay", None):
                inner.exclude_from_weight_decay(var_names=["bias", "codebook"])
        super().compile(optimizer=optimizer, loss=loss, **kw)

    def as_vqvae(self):
        """The tokenizer alone: a `VQVAE` sharing this model's encoder,
        quantizer and decoder, without the discriminator, the perceptual
        network or an optimizer (what exports and token shards carry)."""
        model = VQVAE(
            self.encoder,
            self.quantizer,
            self.decoder,
            reconstruction_loss=self.reconstruction_loss,
            image_channels=self.image_channels,
            image_size=self.image_size,
            name=self.name,
        )
        model.built = self.built  # its parts are this model's, built or not
        return model

    def discriminator_pattern(self):
        """The regular expression of the discriminator's variable paths."""
        return f"(.*/)?{re.escape(self.discriminator.name)}/.*"

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        images = self._images(x)
        reconstruction = y_pred["reconstruction"]
        extra = self._adversarial_loss(images, reconstruction, training)
        if self.perceptual_model is not None:
            distance = self.perceptual_model((images, reconstruction))
            perceptual = ops.mean(ops.cast(distance, "float32"))
            self.perceptual_tracker.update_state(perceptual)
            extra = extra + self.perceptual_weight * perceptual
        return loss + distribution.scale_loss_for_replicas(extra)

    def _adversarial_loss(self, images, reconstruction, training):
        disc_loss_fn, generator_loss_fn = losses.adversarial_losses(self.disc_loss)
        real = 2.0 * images - 1.0
        fake = 2.0 * reconstruction - 1.0
        # One call on the three batches: the normalizations are per image
        # (with "batch", the three share statistics).
        logits = self.discriminator(
            ops.concatenate([real, ops.stop_gradient(fake), fake], axis=0),
            training=training,
        )
        logits = ops.cast(logits, "float32")
        logits_real, logits_fake_detached, logits_fake = ops.split(logits, 3, axis=0)

        step = ops.convert_to_tensor(self.adversarial_step)
        active = ops.cast(ops.greater_equal(step, self.disc_start), "float32")
        if training:
            self.adversarial_step.assign_add(ops.ones((), "int32"))

        disc_loss = disc_loss_fn(logits_real, logits_fake_detached)
        adv_loss = generator_loss_fn(logits_fake)
        adv_term = losses.generator_adversarial_terms(
            generator_loss_fn, logits_fake, logits_fake_detached
        )
        weight = active * self.disc_weight
        total = weight * adv_term + active * disc_loss

        mean_real = ops.mean(logits_real)
        mean_fake = ops.mean(logits_fake_detached)
        if self.lecam_weight > 0:
            ema_real, ema_fake = self.lecam_ema[0], self.lecam_ema[1]
            lecam = losses.lecam_regularization(
                logits_real, logits_fake_detached, ema_real, ema_fake
            )
            self.lecam_tracker.update_state(lecam)
            total = total + active * self.lecam_weight * lecam
            if training:
                means = distribution.replica_mean(ops.stack([mean_real, mean_fake]))
                decay = self.lecam_decay
                updated = decay * self.lecam_ema + (1.0 - decay) * means
                # The averages follow the discriminator: frozen before it trains.
                self.lecam_ema.assign(
                    active * updated + (1.0 - active) * self.lecam_ema
                )

        self.adv_loss_tracker.update_state(adv_loss)
        self.disc_loss_tracker.update_state(disc_loss)
        self.logits_real_tracker.update_state(mean_real)
        self.logits_fake_tracker.update_state(mean_fake)
        self.adv_weight_tracker.update_state(weight)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "discriminator": keras.layers.serialize(self.discriminator),
                "disc_weight": self.disc_weight,
                "disc_start": self.disc_start,
                "disc_loss": self.disc_loss,
                "lecam_weight": self.lecam_weight,
                "lecam_decay": self.lecam_decay,
                "perceptual_weight": self.perceptual_weight,
                "perceptual_model": keras.saving.serialize_keras_object(
                    self.perceptual_model
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["discriminator"] = keras.layers.deserialize(config["discriminator"])
        if config.get("perceptual_model") is not None:
            config["perceptual_model"] = keras.saving.deserialize_keras_object(
                config["perceptual_model"]
            )
        for key in ("encoder", "quantizer", "decoder"):
            config[key] = keras.layers.deserialize(config[key])
        config["reconstruction_loss"] = keras.saving.deserialize_keras_object(
            config["reconstruction_loss"]
        )
        return cls(**config)
