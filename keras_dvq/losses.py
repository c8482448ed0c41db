"""Reconstruction negative log-likelihoods with their pixel maps.

Each loss is a `keras.losses.Loss` whose `y_true` are images already passed
through its `in_map` and whose `y_pred` is the decoder output. It also says how
many decoder channels it needs per image channel (`params_per_channel`) and
maps a decoder output back to an image in [0, 1] (`out_map`).
"""

import math

import keras
from keras import ops

from keras_dvq.utils.validation import check_choice
from keras_dvq.utils.validation import check_open_unit_interval
from keras_dvq.utils.validation import check_positive

# CIFAR-10's pixel variance in [0, 1] units, from DeepMind's sonnet notebook.
CIFAR10_VARIANCE = 0.06327039811675479


@keras.saving.register_keras_serializable(package="keras_dvq")
class GaussianNLL(keras.losses.Loss):
    """Gaussian reconstruction loss as the original repo reports it.

    `mean((x - mu)^2) / (2 * data_variance)`: the Gaussian negative
    log-likelihood with a fixed variance, without its constant. Pixels are
    centred (`in_map(x) = x - 0.5`) and the decoder predicts the mean.

    Args:
        data_variance: float. Pixel variance of the data in [0, 1] units.
            Defaults to CIFAR-10's `0.06327039811675479`.
        name: name of the loss. Defaults to `"gaussian_nll"`.
        reduction: see `keras.losses.Loss`.
        dtype: dtype of the computation.

    Example:

    ```python
    loss = GaussianNLL()
    images = np.random.uniform(size=(2, 32, 32, 3))
    loss(loss.in_map(images), loss.in_map(images))  # 0.0
    ```
    """

    params_per_channel = 1

    def __init__(
        self,
        data_variance=CIFAR10_VARIANCE,
        name="gaussian_nll",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.data_variance = check_positive("data_variance", data_variance)

    def in_map(self, images):
        return images - 0.5

    def out_map(self, decoder_output):
        return ops.clip(decoder_output + 0.5, 0.0, 1.0)

    def call(self, y_true, y_pred):
        squared_error = ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))
        return squared_error / (2.0 * self.data_variance)

    def get_config(self):
        return {**super().get_config(), "data_variance": self.data_variance}


@keras.saving.register_keras_serializable(package="keras_dvq")
class LogitLaplaceNLL(keras.losses.Loss):
    """DALL-E's logit-Laplace reconstruction loss.

    Pixels are squeezed into `(eps, 1 - eps)` by
    `in_map(x) = (1 - 2 eps) x + eps`. The decoder emits, per image channel,
    a location `mu` and a log-scale `ln b` (its `2C` output channels are all
    `mu`s followed by all `ln b`s). The density on (0, 1) is
    `f(x | mu, b) = exp(-|logit(x) - mu| / b) / (2 b x (1 - x))`, a Laplace
    distribution on `logit(x)`, and the loss is its mean negative log per
    pixel: `ln 2 + ln b + ln x + ln(1 - x) + |logit(x) - mu| / b`. The
    reconstruction is `unmap(sigmoid(mu))`.

    Args:
        eps: float in (0, 0.5). Margin of the pixel map. Defaults to `0.1`.
        name: name of the loss. Defaults to `"logit_laplace_nll"`.
        reduction: see `keras.losses.Loss`.
        dtype: dtype of the computation.

    Example:

    ```python
    loss = LogitLaplaceNLL()
    images = np.random.uniform(size=(2, 32, 32, 3))
    decoder_output = np.zeros((2, 32, 32, 6))  # mu = 0, ln b = 0
    loss(loss.in_map(images), decoder_output)
    ```

    Reference:
        - [Ramesh et al., 2021](https://arxiv.org/abs/2102.12092), sec. A.3.
    """

    params_per_channel = 2

    def __init__(
        self,
        eps=0.1,
        name="logit_laplace_nll",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.eps = check_open_unit_interval("eps", eps)
        if self.eps >= 0.5:
            raise ValueError(f"Argument `eps` must be below 0.5. Received: eps={eps}")

    def in_map(self, images):
        return (1.0 - 2.0 * self.eps) * images + self.eps

    def out_map(self, decoder_output):
        mu, _ = self.split(decoder_output)
        pixels = (ops.sigmoid(mu) - self.eps) / (1.0 - 2.0 * self.eps)
        return ops.clip(pixels, 0.0, 1.0)

    def split(self, decoder_output):
        """Splits a decoder output into `(mu, log_b)`, `C` channels each."""
        channels = decoder_output.shape[-1] // 2
        return decoder_output[..., :channels], decoder_output[..., channels:]

    def log_prob(self, x, decoder_output):
        """Log-density of mapped pixels `x` in (0, 1), per pixel."""
        x = ops.convert_to_tensor(x, dtype=self.dtype)
        mu, log_b = self.split(ops.convert_to_tensor(decoder_output, dtype=self.dtype))
        log_x, log_1mx = ops.log(x), ops.log1p(-x)
        distance = ops.abs(log_x - log_1mx - mu)
        return -(math.log(2.0) + log_b + log_x + log_1mx + distance * ops.exp(-log_b))

    def call(self, y_true, y_pred):
        return -ops.mean(self.log_prob(y_true, y_pred), axis=(1, 2, 3))

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


RECONSTRUCTION_LOSSES = {"l2": GaussianNLL, "logit_laplace": LogitLaplaceNLL}


def get(identifier):
    """Returns a reconstruction loss from a flavor name, config or instance."""
    if isinstance(identifier, (GaussianNLL, LogitLaplaceNLL)):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    check_choice("loss_flavor", identifier, tuple(RECONSTRUCTION_LOSSES))
    return RECONSTRUCTION_LOSSES[identifier]()


# Adversarial losses on a patch discriminator's logits (any shape; each term
# is a mean over all logits). The discriminator's loss takes the logits of
# real and reconstructed images; the generator's is a mean of an elementwise
# function of the reconstructions' logits, so that `generator_adversarial_terms`
# can cancel its gradient with respect to the discriminator.


def hinge_discriminator_loss(logits_real, logits_fake):
    """`(mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))) / 2` (taming's)."""
    return 0.5 * (
        ops.mean(ops.relu(1.0 - logits_real)) + ops.mean(ops.relu(1.0 + logits_fake))
    )


def non_saturating_discriminator_loss(logits_real, logits_fake):
    """Binary cross-entropy of real (1) against reconstructed (0) logits,
    halved: `(mean(softplus(-D(x))) + mean(softplus(D(x_hat)))) / 2`."""
    return 0.5 * (
        ops.mean(ops.softplus(-logits_real)) + ops.mean(ops.softplus(logits_fake))
    )


def hinge_generator_loss(logits_fake):
    """`-mean(D(x_hat))`: the generator's term of the hinge GAN."""
    return -ops.mean(logits_fake)


def non_saturating_generator_loss(logits_fake):
    """`mean(softplus(-D(x_hat)))`, the cross-entropy of calling them real."""
    return ops.mean(ops.softplus(-logits_fake))


# name -> (discriminator loss, generator loss)
ADVERSARIAL_LOSSES = {
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "non_saturating": (
        non_saturating_discriminator_loss,
        non_saturating_generator_loss,
    ),
}


def adversarial_losses(name):
    """The `(discriminator_loss, generator_loss)` pair of `"hinge"` or
    `"non_saturating"`."""
    check_choice("disc_loss", name, tuple(ADVERSARIAL_LOSSES))
    return ADVERSARIAL_LOSSES[name]


def generator_adversarial_terms(generator_loss, logits_fake, logits_fake_detached):
    """`g(D(x_hat)) - g(D(sg(x_hat)))`: the generator's gradient of
    `generator_loss` (`g`), with no gradient for the discriminator's weights.

    Both logits come from the same weights and equal values, so their
    gradients with respect to the weights cancel and the value is 0; only
    `logits_fake`, which sees the generator, carries a gradient to it.
    """
    return generator_loss(logits_fake) - generator_loss(logits_fake_detached)


def lecam_regularization(logits_real, logits_fake, ema_real, ema_fake):
    """LeCAM's regularizer of the discriminator: `mean(relu(D(x) -
    ema_fake)^2) + mean(relu(ema_real - D(x_hat))^2)`, with `ema_real` and
    `ema_fake` moving averages of the mean logits.

    Reference:
        - [Tseng et al., 2021](https://arxiv.org/abs/2104.03310), eq. 3.
    """
    return ops.mean(ops.square(ops.relu(logits_real - ema_fake))) + ops.mean(
        ops.square(ops.relu(ema_real - logits_fake))
    )
