"""The pieces of a training run built from its settings, shared by every
script that trains a tokenizer.

The model and its optimizer, the learning-rate schedule, the run length, the
data splits and the Gumbel schedules come from here, so that a keras-tuner
trial and a `train.py --hparams` run with the trial's values are the same
computation.

The Gumbel flavor's hyperparameters (`GUMBEL_DEFAULTS`) give the lengths of
the temperature anneal and the KL ramp as fractions of the run's total steps:
a length in steps only means something relative to the run (the original
repo's 150,000-step anneal barely moves in a 1,500-step run), and fractions
carry a search made with short trials over to longer training. A fraction
above 1 stretches the schedule past the end of the run.
"""

import math

import keras

from keras_dvq.callbacks.quantizer_schedules import ArgmaxCodesPhase
from keras_dvq.callbacks.quantizer_schedules import KLWeightRamp
from keras_dvq.callbacks.quantizer_schedules import TemperatureAnnealing
from keras_dvq.data.datasets import load_dataset
from keras_dvq.layers.discriminator import PatchDiscriminator
from keras_dvq.models import VQVAE
from keras_dvq.models.adversarial import DISC_BETAS
from keras_dvq.models.adversarial import AdversarialVQVAE
from keras_dvq.schedules import CosineAnnealing
from keras_dvq.schedules import FinalPhase
from keras_dvq.utils.errors import BadInput

LEARNING_RATE = 3e-4  # the original repo's; the vqvae flavor's default


# How long the learning rate's cosine decay (to 1.25e-6) lasts. "original":
# the original repo's 1,200,000 steps, so a run of a few thousand steps
# trains at its peak rate to the end, and its last epochs' validation moves
# by 1-3 dB (docs/quantizers.md). "run": the same decay over the run's own
# steps, ending near zero, so the final model is a settled one.
LEARNING_RATE_DECAYS = {
    "original": "the original repo's decay over 1,200,000 steps",
    "run": "the same decay over this run's steps, ending near zero",
}


# The gumbel flavor's defaults: the winner of the keras-tuner search of
# docs/gumbel_tuning.md (28 trials of 400 steps on `sample`;
# rounded to three significant digits). At 1,500 steps it reached val
# recon_loss 0.0116 (0.0170 rounded, as here) where the original repo's
# hand-picked values (learning rate 3e-4, temperature 1 -> 1/16 over 150,000
# steps, KL weight 5e-4 ramped over 5,000 steps, soft) reached 0.0613.
# The diversity weight came later, measured by hand at 1,500 steps (0, 1e-3,
# 1e-2, 3e-2; docs/gumbel_tuning.md): 3e-2 took the codes used on validation
# from 41 to 418 of 512 and the PSNR from 28.7 to 32.1 dB. The last fifth
# of the run trains the decoder alone on argmax codes at learning rate 3e-4
# (ArgmaxCodesPhase): the tokenizer emits argmax codes, which a decoder
# trained on soft mixtures decodes about 2 dB worse; with the phase, 34.25
# and 34.24 dB on two seeds (a tenth: 33.69 and 34.21). Two later checks
# left them as they are: `balance_rate` 1e-2 (33.89 and 34.03 dB) and the
# winner of a second search scored as a tokenizer (20 trials of 300 steps;
# at 1,500 steps 32.73 and 33.54 dB, with more codes). The DALL-E recipe,
# which needs the balance, is the file recipes/dalle.json.
GUMBEL_DEFAULTS = {
    "learning_rate": 3e-3,
    "temperature_start": 0.594,
    "temperature_end": 0.5,
    "temperature_anneal_fraction": 0.1,
    "kl_weight": 1.5e-5,
    "kl_ramp_fraction": 0.881,
    "diversity_weight": 3e-2,
    "balance_rate": 0.0,
    "straight_through": False,
    "decoder_fraction": 0.2,
    "decoder_learning_rate": 3e-4,
}


# The arguments of one quantizer flavor each (None: the quantizer's default);
# an argument may belong to several flavors.
FLAVOR_OPTIONS = {
    "vq": ("use_cosine_sim", "rotation_trick", "commitment_cost"),
    "fsq": ("levels", "normalize_latents", "normalize_features"),
    "lfq": (
        "codebook_bits",
        "entropy_loss_weight",
        "normalize_features",
        "commitment_cost",
    ),
    "rvq": ("num_quantizers", "quantizer_dropout", "commitment_cost"),
}
# The arguments of one encoder/decoder flavor each (None: the network's
# default), given to `VQVAE.from_flavors` as `enc_dec_kwargs`.
NETWORK_OPTIONS = {
    "vqgan": (
        "ch",
        "ch_mult",
        "num_res_blocks",
        "attn_levels",
        "z_channels",
        "dropout",
        "norm_groups",
    ),
}


# The model flags a tuned recipe pins down besides GUMBEL_DEFAULTS; with them
# and the flavors' options, the keys a `train.py --hparams` JSON file may hold
# (flags of the same name).
MODEL_FLAGS = (
    "vq_flavor",
    "enc_dec_flavor",
    "loss_flavor",
    "num_embeddings",
    "embedding_dim",
    "n_hid",
    "batch_size",
    "image_size",
)


# The adversarial (VQGAN) settings, train.py's flags of the same names; a
# run without a discriminator has `disc_weight` 0 (docs/vqgan.md).
ADVERSARIAL_FLAGS = (
    "disc_weight",
    "disc_start",
    "disc_loss",
    "disc_layers",
    "disc_ndf",
    "disc_lr",
    "lecam_weight",
    "perceptual_weight",
)


HPARAM_KEYS = tuple(
    dict.fromkeys(  # once each, in order: flavors share some options
        MODEL_FLAGS
        + tuple(GUMBEL_DEFAULTS)
        + tuple(name for names in FLAVOR_OPTIONS.values() for name in names)
        + tuple(name for names in NETWORK_OPTIONS.values() for name in names)
        + ADVERSARIAL_FLAGS
    )
)


def load_splits(
    dataset, batch_size, data_dir=None, seed=None, image_size=32, shuffle_buffer=None
):
    """The training and validation pipelines of `load_dataset` at
    `image_size` (the training split shuffled through `shuffle_buffer`
    elements where it is a tensorflow-datasets split); raises `BadInput`
    where the training split holds less than one batch."""
    train_data = load_dataset(
        dataset,
        "train",
        batch_size,
        image_size=image_size,
        data_dir=data_dir,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
    )
    val_data = load_dataset(
        dataset, "validation", batch_size, image_size=image_size, data_dir=data_dir
    )
    if int(train_data.cardinality()) < 1:
        raise BadInput(
            f"--dataset {dataset}: fewer training images than one batch of "
            f"--batch_size {batch_size}."
        )
    return train_data, val_data


def run_length(batches_per_pass, max_steps):
    """`(epochs, steps_per_epoch)`: epochs of at most one pass over the
    training data each, `max_steps` in all (rounded up to whole epochs)."""
    epochs = math.ceil(max_steps / batches_per_pass)
    return epochs, math.ceil(max_steps / epochs)


def build_model(
    learning_rate=LEARNING_RATE,
    adversarial=None,
    perceptual_model=None,
    **flavor_kwargs,
):
    """A compiled `VQVAE.from_flavors(**flavor_kwargs)`, or with
    `adversarial` an `AdversarialVQVAE` trained against a
    `PatchDiscriminator`.

    The optimizer is the original's AdamW (weight decay 1e-4); a float
    `learning_rate` starts the original's cosine decay to 1.25e-6 over
    1,200,000 steps, a `LearningRateSchedule` is used as it is (see
    `learning_rate_schedule`).

    Args:
        learning_rate: float or schedule of the generator (the tokenizer).
        adversarial: `None` or a dict of `ADVERSARIAL_FLAGS` values: the
            discriminator's depth (`disc_layers`) and width (`disc_ndf`), its
            Adam learning rate (`disc_lr`, betas 0.5 and 0.9) and the
            `AdversarialVQVAE` arguments `disc_weight`, `disc_start`,
            `disc_loss`, `lecam_weight` and `perceptual_weight`.
        perceptual_model: the frozen distance `perceptual_weight` weighs
            (e.g. `LPIPS`), with `adversarial` only.
        **flavor_kwargs: `VQVAE.from_flavors` arguments.
    """
    schedule = learning_rate
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        schedule = CosineAnnealing(start_value=learning_rate)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4)
    if not adversarial:
        model = VQVAE.from_flavors(**flavor_kwargs)
        model.compile(optimizer=optimizer)
        return model
    discriminator = PatchDiscriminator(
        n_layers=adversarial["disc_layers"],
        ndf=adversarial["disc_ndf"],
        name="discriminator",
    )
    model = AdversarialVQVAE.from_flavors(
        discriminator=discriminator,
        disc_weight=adversarial["disc_weight"],
        disc_start=adversarial["disc_start"],
        disc_loss=adversarial["disc_loss"],
        lecam_weight=adversarial["lecam_weight"],
        perceptual_weight=adversarial["perceptual_weight"],
        perceptual_model=perceptual_model,
        **flavor_kwargs,
    )
    beta_1, beta_2 = DISC_BETAS
    model.compile(
        optimizer=optimizer,
        discriminator_optimizer=keras.optimizers.Adam(
            adversarial["disc_lr"], beta_1=beta_1, beta_2=beta_2
        ),
    )
    return model


def decoder_phase_start(hparams, total_steps):
    """First step of the decoder-only phase, the last `decoder_fraction` of
    the run (`total_steps`: no such phase)."""
    fraction = hparams.get("decoder_fraction", 0.0)
    return total_steps - round(fraction * total_steps)


def learning_rate_schedule(hparams, total_steps, decay="original"):
    """The learning rate of a run of `total_steps` from a dict with
    `learning_rate` and, optionally, the decoder phase's keys of
    `GUMBEL_DEFAULTS`: the original's cosine decay from `learning_rate`
    (over `LEARNING_RATE_DECAYS[decay]`), then `decoder_learning_rate` for
    the decoder-only phase."""
    if decay not in LEARNING_RATE_DECAYS:
        raise ValueError(
            f"Argument `decay` must be one of {sorted(LEARNING_RATE_DECAYS)}. "
            f"Received: decay={decay!r}"
        )
    length = {"num_steps": total_steps} if decay == "run" else {}
    schedule = CosineAnnealing(start_value=hparams["learning_rate"], **length)
    start = decoder_phase_start(hparams, total_steps)
    if start >= total_steps:
        return schedule
    return FinalPhase(schedule, start, hparams["decoder_learning_rate"])


def gumbel_quantizer_kwargs(hparams, total_steps=None):
    """`GumbelQuantizer` arguments of a dict shaped like `GUMBEL_DEFAULTS`;
    with `total_steps`, also the temperature and KL-weight schedules of a
    run that long (`gumbel_schedules`), which the quantizer then carries in
    its config."""
    kwargs = {
        "temperature": hparams["temperature_start"],
        "kl_weight": hparams["kl_weight"],
        "diversity_weight": hparams["diversity_weight"],
        "balance_rate": hparams["balance_rate"],
        "straight_through": hparams["straight_through"],
    }
    if total_steps is not None:
        kwargs.update(gumbel_schedules(hparams, total_steps))
    return kwargs


def gumbel_schedules(hparams, total_steps):
    """The `temperature_schedule` and `kl_weight_schedule` (each a
    `CosineAnnealing`) of a run of `total_steps`, as `GumbelQuantizer`
    arguments: the schedules that `gumbel_callbacks` hands the quantizer."""
    temperature, kl_ramp = gumbel_callbacks(hparams, total_steps)[:2]
    return {
        "temperature_schedule": temperature.schedule,
        "kl_weight_schedule": kl_ramp.schedule,
    }


def gumbel_callbacks(hparams, total_steps):
    """Fresh temperature-annealing, KL-ramp and (if any) decoder-phase
    callbacks for a run of `total_steps` steps, from a dict shaped like
    `GUMBEL_DEFAULTS`. The first two hand their schedules to the quantizer
    when `fit` begins; the compiled step evaluates them."""

    def steps(fraction):
        return max(1, round(fraction * total_steps))

    callbacks = [
        TemperatureAnnealing(
            hparams["temperature_start"],
            hparams["temperature_end"],
            steps(hparams["temperature_anneal_fraction"]),
        ),
        KLWeightRamp(0.0, hparams["kl_weight"], steps(hparams["kl_ramp_fraction"])),
    ]
    start = decoder_phase_start(hparams, total_steps)
    if start < total_steps:
        callbacks.append(ArgmaxCodesPhase(start))
    return callbacks
