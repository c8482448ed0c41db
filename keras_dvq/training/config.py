"""`TrainingConfig`: everything that defines a tokenizer's training run."""

import dataclasses
import inspect

from keras_dvq.evaluation.lpips import load_lpips
from keras_dvq.evaluation.lpips import lpips_weight_files
from keras_dvq.layers import finite_scalar_quantizer
from keras_dvq.layers import lookup_free_quantizer
from keras_dvq.layers.discriminator import PatchDiscriminator
from keras_dvq.losses import ADVERSARIAL_LOSSES
from keras_dvq.models.flavors import ENCODER_DECODERS
from keras_dvq.models.flavors import QUANTIZERS
from keras_dvq.models.flavors import encoder_decoder_arguments
from keras_dvq.training.builders import ADVERSARIAL_FLAGS
from keras_dvq.training.builders import FLAVOR_OPTIONS
from keras_dvq.training.builders import GUMBEL_DEFAULTS
from keras_dvq.training.builders import LEARNING_RATE
from keras_dvq.training.builders import LEARNING_RATE_DECAYS
from keras_dvq.training.builders import NETWORK_OPTIONS
from keras_dvq.utils.errors import BadInput

# The flavors whose quantizers size codes by num_embeddings and embedding_dim.
SIZED_BY_EMBEDDINGS = ("vq", "gumbel", "rvq")
# The image size of runs recorded before it was a setting.
DEFAULT_IMAGE_SIZE = 32


def networks_sized_by_n_hid():
    """The `enc_dec_flavor` names (old ones included) whose networks take
    `n_hid`, the width a `TrainingConfig` sets. Others (the vqgan network)
    take the options of `NETWORK_OPTIONS` instead."""
    sized = {
        name
        for name in ENCODER_DECODERS
        if "n_hid" in inspect.signature(ENCODER_DECODERS[name][0]).parameters
    }
    return tuple(
        name
        for name in ENCODER_DECODERS.choices
        if ENCODER_DECODERS.aliases.get(name, name) in sized
    )


def encoder_stride(enc_dec_flavor, n_hid=None, network_options=None):
    """The downsampling factor of the encoder that `enc_dec_flavor` builds
    with these arguments (`ValueError` for arguments it cannot take)."""
    encoder_kwargs, _ = encoder_decoder_arguments(
        enc_dec_flavor, n_hid, network_options
    )
    return ENCODER_DECODERS[enc_dec_flavor][0](**encoder_kwargs).stride


def check_image_size(image_size, enc_dec_flavor, n_hid=None, network_options=None):
    """`BadInput` (naming the flag) unless the encoder's stride divides
    `image_size`; returns the stride."""
    try:
        stride = encoder_stride(enc_dec_flavor, n_hid, network_options)
    except ValueError as error:  # the network's own argument checks: flags
        raise BadInput(str(error)) from error
    if image_size % stride:
        raise BadInput(
            f"--image_size {image_size}: the {enc_dec_flavor} encoder downsamples "
            f"by {stride}, which must divide the image size (e.g. "
            f"{max(stride, image_size // stride * stride)} or "
            f"{(image_size // stride + 1) * stride})."
        )
    return stride


def flavor_options(config, table, argument):
    """The options of `table` (a flavor -> option names dict) that `config`
    sets, for the flavor `config` has in `argument`; `BadInput` for one of
    another flavor."""
    chosen = getattr(config, argument)
    options = {}
    for name in dict.fromkeys(name for names in table.values() for name in names):
        if getattr(config, name) is None:
            continue
        if name not in table.get(chosen, ()):
            flavors = " or ".join(flavor for flavor in table if name in table[flavor])
            raise BadInput(f"--{name} applies to --{argument} {flavors} only.")
        options[name] = getattr(config, name)
    return options


# Settings that do not define the run (left out of run_config.json, which
# --resume compares), and those a resumed run may change (after a divergence).
NOT_RUN_CONFIG = (
    "out",
    "resume",
    "gpus",
    "hparams",
    "data_dir",
    "shuffle_buffer",
    "backup_every",
    "vgg_weights",
    "lpips_weights",
)
# Quantizer options whose defaults changed, with the values of before: each
# run record names them resolved, and a record without them is a run begun
# under the old defaults (see `current_flavor_names`).
CHANGED_DEFAULTS = {
    "fsq": finite_scalar_quantizer.OLD_DEFAULTS,
    "lfq": lookup_free_quantizer.OLD_DEFAULTS,
}
MAY_CHANGE_ON_RESUME = ("learning_rate", "mixed_precision")


@dataclasses.dataclass
class TrainingConfig:
    """The settings of one training run, as `scripts/train.py`'s flags name them.

    Fields left `None` take their flavor's default: the learning rate and the
    Gumbel hyperparameters (`GUMBEL_DEFAULTS` for `vq_flavor="gumbel"`,
    `LEARNING_RATE` otherwise), the quantizer options of `FLAVOR_OPTIONS`
    (the quantizer's own defaults) and the network options of
    `NETWORK_OPTIONS` (the network's own defaults). `n_hid` goes only to
    networks that take it (`networks_sized_by_n_hid`). `train_tokenizer` runs
    it.

    Args:
        out: the run's output directory.
        dataset: `"sample"`, `"folder:PATH"` or a tensorflow-datasets name.
        data_dir: tensorflow-datasets' data directory.
        shuffle_buffer: elements in a tensorflow-datasets split's shuffle
            buffer (`None`: `load_dataset`'s default, 10,000 or the split).
        vq_flavor, enc_dec_flavor, loss_flavor, num_embeddings,
        embedding_dim, n_hid, batch_size, seed: the original repo's flags.
        image_size: side of the square training images; the encoder's
            stride must divide it. The model records it.
        max_steps: training steps, rounded up to whole epochs of at most one
            pass over the training split.
        epochs: full passes instead of `max_steps`, or `None`.
        gpus: devices to train on; above 1, `--batch_size` is global.
        resume: continue the interrupted run in `out`.
        backup_every: back up every this many steps (`None`: every 5 minutes).
        seed_faithful: the original repo's VQ recipe (gradient codebook, no
            restarts).
        no_kmeans_init: skip the k-means codebook start.
        mixed_precision: `mixed_bfloat16` encoder and decoder.
        lr_decay: `"original"` or `"run"` (see `LEARNING_RATE_DECAYS`).
        hparams: the `--hparams` file the values came from, if any.
        learning_rate ... decoder_learning_rate, straight_through: the
            learning rate and the Gumbel flavor's hyperparameters.
        use_cosine_sim ... quantizer_dropout: quantizer options.
        ch ... norm_groups: the vqgan network's options (`VQGANEncoder`).
        disc_weight ... lecam_weight: the adversarial training of
            `AdversarialVQVAE` (docs/vqgan.md); `disc_weight` 0 (the
            default) trains without a discriminator. `disc_lr` `None`: the
            learning rate.

    Example:

    ```python
    config = TrainingConfig(out="runs/demo", dataset="sample", max_steps=300)
    logs = train_tokenizer(config)   # the final validation logs
    ```
    """

    out: str
    dataset: str = "cifar10"
    data_dir: str | None = None
    shuffle_buffer: int | None = None
    vq_flavor: str = "vq"
    enc_dec_flavor: str = "deepmind"
    loss_flavor: str = "l2"
    num_embeddings: int = 512
    embedding_dim: int = 64
    n_hid: int = 64
    batch_size: int = 128
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 0
    max_steps: int = 1500
    epochs: int | None = None
    gpus: int = 0
    resume: bool = False
    backup_every: int | None = None
    seed_faithful: bool = False
    no_kmeans_init: bool = False
    mixed_precision: bool = False
    lr_decay: str = "original"
    hparams: str | None = None
    learning_rate: float | None = None
    temperature_start: float | None = None
    temperature_end: float | None = None
    temperature_anneal_fraction: float | None = None
    kl_weight: float | None = None
    kl_ramp_fraction: float | None = None
    diversity_weight: float | None = None
    balance_rate: float | None = None
    decoder_fraction: float | None = None
    decoder_learning_rate: float | None = None
    straight_through: bool | None = None
    use_cosine_sim: bool | None = None
    rotation_trick: bool | None = None
    levels: tuple | None = None
    normalize_latents: bool | None = None
    normalize_features: bool | None = None
    codebook_bits: int | None = None
    entropy_loss_weight: float | None = None
    commitment_cost: float | None = None
    num_quantizers: int | None = None
    quantizer_dropout: float | None = None
    ch: int | None = None
    ch_mult: tuple | None = None
    num_res_blocks: int | None = None
    attn_levels: tuple | None = None
    z_channels: int | None = None
    dropout: float | None = None
    norm_groups: int | None = None
    disc_weight: float = 0.0
    disc_start: int = 0
    disc_loss: str = "hinge"
    disc_layers: int = 3
    disc_ndf: int = 64
    disc_lr: float | None = None
    lecam_weight: float = 0.0
    perceptual_weight: float = 0.0
    vgg_weights: str | None = None
    lpips_weights: str | None = None

    def __post_init__(self):
        # Old flavor names ("vqvae", "openai") become the new ones, with a
        # FutureWarning; unknown ones are bad input.
        try:
            self.vq_flavor = QUANTIZERS.resolve(self.vq_flavor, stacklevel=3)
            self.enc_dec_flavor = ENCODER_DECODERS.resolve(
                self.enc_dec_flavor, stacklevel=3
            )
        except ValueError as error:
            raise BadInput(str(error)) from error
        if self.disc_loss not in ADVERSARIAL_LOSSES:
            raise BadInput(
                f"disc_loss must be one of {sorted(ADVERSARIAL_LOSSES)}, got "
                f"{self.disc_loss!r}."
            )
        if self.lr_decay not in LEARNING_RATE_DECAYS:
            raise BadInput(
                f"lr_decay must be one of {sorted(LEARNING_RATE_DECAYS)}, got "
                f"{self.lr_decay!r}."
            )

    def recipe_hparams(self):
        """The learning rate and, for the gumbel flavor, its hyperparameters:
        the values set, else the flavor's defaults (`BadInput` for a Gumbel
        value set on another flavor)."""
        given = {
            key: getattr(self, key)
            for key in GUMBEL_DEFAULTS
            if getattr(self, key) is not None
        }
        if self.vq_flavor == "gumbel":
            return {**GUMBEL_DEFAULTS, **given}
        gumbel_only = sorted(set(given) - {"learning_rate"})
        if gumbel_only:
            raise BadInput(f"--{gumbel_only[0]} applies to --vq_flavor gumbel only.")
        return {"learning_rate": given.get("learning_rate", LEARNING_RATE)}

    def quantizer_options(self):
        """The quantizer arguments set (`BadInput` for one of another flavor)."""
        return flavor_options(self, FLAVOR_OPTIONS, "vq_flavor")

    def network_options(self):
        """The encoder/decoder arguments set besides `n_hid` (`BadInput` for
        one of another flavor), `VQVAE.from_flavors`' `enc_dec_kwargs`."""
        return flavor_options(self, NETWORK_OPTIONS, "enc_dec_flavor")

    def network_width(self):
        """`n_hid` for networks that take it, else `None`."""
        takes_it = self.enc_dec_flavor in networks_sized_by_n_hid()
        return self.n_hid if takes_it else None

    def check_image_size(self):
        """`BadInput` unless the encoder's stride divides `image_size` (or
        the network's options are bad); returns the stride."""
        return check_image_size(
            self.image_size,
            self.enc_dec_flavor,
            self.network_width(),
            self.network_options(),
        )

    def adversarial_options(self):
        """`None` without a discriminator (`disc_weight` 0), else the dict of
        `ADVERSARIAL_FLAGS` values that `builders.build_model` takes, with
        `disc_lr` resolved. `BadInput` for an adversarial setting without
        `disc_weight` or a discriminator deeper than `image_size` allows."""
        if not self.disc_weight:
            defaults = {
                field.name: field.default
                for field in dataclasses.fields(self)
                if field.name in ADVERSARIAL_FLAGS
            }
            for name in ADVERSARIAL_FLAGS:
                if getattr(self, name) != defaults[name]:
                    raise BadInput(
                        f"--{name} applies with a discriminator only: set "
                        "--disc_weight above 0."
                    )
            return None
        discriminator = PatchDiscriminator(n_layers=self.disc_layers, ndf=self.disc_ndf)
        size = self.image_size
        try:
            discriminator.check_image_shape((None, size, size, None))
        except BadInput as error:
            raise BadInput(f"--disc_layers {self.disc_layers}: {error}") from None
        options = {name: getattr(self, name) for name in ADVERSARIAL_FLAGS}
        if options["disc_lr"] is None:
            options["disc_lr"] = self.recipe_hparams()["learning_rate"]
        return options

    def perceptual_weight_files(self):
        """The LPIPS weight files of a run with `perceptual_weight` above 0
        (`--vgg_weights`, `--lpips_weights` or their defaults), else `None`;
        `BadInput` naming how to supply missing ones, before any data loads."""
        files = {
            "--vgg_weights": self.vgg_weights,
            "--lpips_weights": self.lpips_weights,
        }
        if not self.perceptual_weight:
            for flag, path in files.items():
                if path is not None:
                    raise BadInput(
                        f"{flag} applies with a perceptual loss only: set "
                        "--perceptual_weight above 0."
                    )
            return None
        return self._about_perceptual_weight(
            lpips_weight_files, self.vgg_weights, self.lpips_weights
        )

    def perceptual_model(self):
        """The frozen LPIPS that `perceptual_weight` weighs, or `None`."""
        files = self.perceptual_weight_files()
        if files is None:
            return None
        return self._about_perceptual_weight(load_lpips, *files)

    def _about_perceptual_weight(self, function, *args):
        """`function(*args)`, its `BadInput` prefixed with the flag it is about."""
        try:
            return function(*args)
        except BadInput as error:
            raise BadInput(
                f"--perceptual_weight {self.perceptual_weight:g}: {error}"
            ) from None

    def run_record(self):
        """What defines the run, for run_config.json: the settings without
        `NOT_RUN_CONFIG` and unset flavor defaults, plus the hyperparameters
        in use."""
        optional = set(GUMBEL_DEFAULTS).union(
            *FLAVOR_OPTIONS.values(), *NETWORK_OPTIONS.values()
        )
        record = {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if key not in NOT_RUN_CONFIG and not (key in optional and value is None)
        }
        if self.network_width() is None:  # a width the network never saw
            del record["n_hid"]
        if not self.disc_weight:  # as records of runs before these settings
            for name in ADVERSARIAL_FLAGS:
                record.pop(name)
        elif self.disc_lr is None:
            del record["disc_lr"]
        defaults = inspect.signature(QUANTIZERS[self.vq_flavor]).parameters
        for name in CHANGED_DEFAULTS.get(self.vq_flavor, ()):
            if record.get(name) is None:
                record[name] = defaults[name].default
        return {**record, **self.recipe_hparams()}


def current_flavor_names(record):
    """A stored run record with its flavor names as they are now called
    (records of runs begun before the renames hold "vqvae" or "openai"), the
    image size of runs recorded before it was a setting and the quantizer
    options whose defaults changed since (`CHANGED_DEFAULTS`)."""
    record = {"image_size": DEFAULT_IMAGE_SIZE, **record}
    for key, registry in (
        ("vq_flavor", QUANTIZERS),
        ("enc_dec_flavor", ENCODER_DECODERS),
    ):
        if key in record:
            record[key] = registry.aliases.get(record[key], record[key])
    return {**CHANGED_DEFAULTS.get(record.get("vq_flavor"), {}), **record}
