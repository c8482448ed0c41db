"""The command-line flags of a tokenizer's training run.

`make_train_parser` is `scripts/train.py`'s parser and `parse_train_config`
turns its command line (with a `--hparams` file's values) into a
`TrainingConfig`; `add_model_flags` gives the original repo's model and data
flags to the other scripts that train (tune_gumbel.py).
"""

import argparse
import json

from keras_dvq.callbacks.step_backup import BACKUP_SECONDS
from keras_dvq.models.flavors import ENCODER_DECODERS
from keras_dvq.models.flavors import QUANTIZERS
from keras_dvq.training.builders import GUMBEL_DEFAULTS
from keras_dvq.training.builders import HPARAM_KEYS
from keras_dvq.training.builders import LEARNING_RATE
from keras_dvq.training.builders import LEARNING_RATE_DECAYS
from keras_dvq.training.config import DEFAULT_IMAGE_SIZE
from keras_dvq.training.config import SIZED_BY_EMBEDDINGS
from keras_dvq.training.config import TrainingConfig
from keras_dvq.training.config import networks_sized_by_n_hid
from keras_dvq.utils.cli import non_negative_float
from keras_dvq.utils.cli import non_negative_int
from keras_dvq.utils.cli import positive_float
from keras_dvq.utils.cli import positive_int
from keras_dvq.utils.cli import unit_fraction


def add_model_flags(parser, networks=None):
    """Adds the original repo's model and data flags (all but `--vq_flavor`),
    `--image_size`, `--dataset` and `--seed` to an argparse parser;
    `--enc_dec_flavor` offers `networks` (default: those sized by `--n_hid`,
    `networks_sized_by_n_hid()`)."""
    add = parser.add_argument
    add(
        "--enc_dec_flavor",
        choices=networks or networks_sized_by_n_hid(),
        type=ENCODER_DECODERS.flag_type,
        default="deepmind",
    )
    add("--loss_flavor", choices=["l2", "logit_laplace"], default="l2")
    add("--num_embeddings", type=positive_int, default=512)
    add("--embedding_dim", type=positive_int, default=64)
    add("--n_hid", type=positive_int, default=64)
    add("--batch_size", type=positive_int, default=128)
    add(
        "--image_size",
        type=positive_int,
        default=DEFAULT_IMAGE_SIZE,
        help="side of the square images; the encoder's stride must divide it",
    )
    add("--data_dir", default=None, help="tensorflow-datasets data directory")
    add("--dataset", default="cifar10", help="sample | folder:PATH | a tfds name")
    add("--seed", type=int, default=0)


def make_train_parser():
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a VQ-VAE (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    # The original repo's flags.
    add(
        "--vq_flavor",
        choices=QUANTIZERS.choices,
        type=QUANTIZERS.flag_type,
        default="vq",
    )
    add_model_flags(parser, networks=ENCODER_DECODERS.choices)
    add(
        "--gpus",
        type=non_negative_int,
        default=0,
        help="devices to train on; N > 1: MirroredStrategy (TensorFlow) or "
        "DataParallel (JAX), --batch_size being the global batch",
    )
    # Ours.
    add("--out", required=True, help="output directory")
    add("--max_steps", type=positive_int, default=1500)
    add(
        "--shuffle_buffer",
        type=positive_int,
        default=None,
        metavar="N",
        help="shuffle buffer of a tensorflow-datasets split (default: 10,000 or "
        "the split, if smaller); folders and sample shuffle their file list",
    )
    add("--epochs", type=positive_int, default=None, help="full passes instead")
    add("--resume", action="store_true", help="continue an interrupted run")
    add(
        "--backup_every",
        type=positive_int,
        default=None,
        metavar="STEPS",
        help="back up the training state every STEPS steps (default: every "
        f"{BACKUP_SECONDS / 60:g} minutes) and at each epoch end",
    )
    add(
        "--seed_faithful",
        action="store_true",
        help="the original repo's VQ recipe: gradient codebook, no restarts",
    )
    add(
        "--no_kmeans_init",
        action="store_true",
        help="skip the k-means codebook initialization (vq, rvq)",
    )
    add(
        "--mixed_precision",
        action="store_true",
        help="mixed_bfloat16 encoder/decoder; the quantizer stays float32",
    )
    add(
        "--hparams",
        metavar="JSON",
        help="a file of flag values, e.g. scripts/tune_gumbel.py's "
        "best_hyperparameters.json; keys: " + ", ".join(HPARAM_KEYS) + "; flags "
        "given on the command line win",
    )
    # Unset flags stay absent (SUPPRESS): their defaults depend on --vq_flavor.
    unset = argparse.SUPPRESS
    add(
        "--learning_rate",
        type=positive_float,
        default=unset,
        help=f"peak learning rate (default: {LEARNING_RATE}; gumbel: "
        f"{GUMBEL_DEFAULTS['learning_rate']:g})",
    )
    add(
        "--lr_decay",
        choices=list(LEARNING_RATE_DECAYS),
        default="original",
        help="length of the learning rate's cosine decay: "
        + "; ".join(f"{k}: {v}" for k, v in LEARNING_RATE_DECAYS.items()),
    )
    gumbel = parser.add_argument_group(
        "gumbel flavor",
        "Schedule lengths are fractions of the run's total steps (above 1: the "
        "schedule ends after the run); the last --decoder_fraction trains the "
        "decoder alone, on argmax codes, at --decoder_learning_rate. Defaults: "
        "docs/gumbel_tuning.md.",
    )
    for name, kind in (
        ("temperature_start", positive_float),
        ("temperature_end", positive_float),
        ("temperature_anneal_fraction", positive_float),
        ("kl_weight", non_negative_float),
        ("kl_ramp_fraction", positive_float),
        ("diversity_weight", non_negative_float),
        ("balance_rate", non_negative_float),
        ("decoder_fraction", unit_fraction),
        ("decoder_learning_rate", positive_float),
    ):
        gumbel.add_argument(
            f"--{name}",
            type=kind,
            default=unset,
            help=f"default: {GUMBEL_DEFAULTS[name]:g}",
        )
    gumbel.add_argument(
        "--straight_through",
        action=argparse.BooleanOptionalAction,
        default=unset,
        help="hard one-hot forward pass (default: "
        f"{GUMBEL_DEFAULTS['straight_through']})",
    )
    add_quantizer_flags(parser, unset)
    add_network_flags(parser, unset)
    add_adversarial_flags(parser)
    return parser


def add_adversarial_flags(parser):
    """The flags of adversarial (VQGAN) training (docs/vqgan.md); off
    unless --disc_weight is above 0."""
    gan = parser.add_argument_group(
        "adversarial training",
        "a patch discriminator trained in the same step (AdversarialVQVAE); "
        "--disc_weight 0 trains without one",
    )
    gan.add_argument(
        "--disc_weight",
        type=non_negative_float,
        default=0.0,
        help="fixed weight of the generator's adversarial loss",
    )
    gan.add_argument(
        "--disc_start",
        type=non_negative_int,
        default=0,
        metavar="STEP",
        help="the discriminator trains and weighs in from this step on",
    )
    gan.add_argument(
        "--disc_loss",
        choices=["hinge", "non_saturating"],
        default="hinge",
    )
    gan.add_argument(
        "--disc_layers",
        type=positive_int,
        default=3,
        help="strided convolutions of the discriminator (each halves the image; "
        "image_size // 2**N must be at least 3)",
    )
    gan.add_argument(
        "--disc_ndf", type=positive_int, default=64, help="discriminator base width"
    )
    gan.add_argument(
        "--disc_lr",
        type=positive_float,
        default=None,
        help="discriminator learning rate, Adam with betas 0.5, 0.9 (default: "
        "--learning_rate's value)",
    )
    gan.add_argument(
        "--lecam_weight",
        type=non_negative_float,
        default=0.0,
        help="weight of LeCAM's regularizer of the discriminator",
    )
    gan.add_argument(
        "--perceptual_weight",
        type=non_negative_float,
        default=0.0,
        help="weight of the LPIPS distance in the generator's loss (needs "
        "--vgg_weights and, unless the lpips package is installed, "
        "--lpips_weights)",
    )
    gan.add_argument(
        "--vgg_weights",
        metavar="FILE",
        help="LPIPS backbone: torchvision's vgg16-397923af.pth or a Keras VGG16 "
        "notop .h5 (default: Keras' cached ImageNet file)",
    )
    gan.add_argument(
        "--lpips_weights",
        metavar="FILE",
        help="LPIPS heads: the lpips package's weights/v0.1/vgg.pth or an .npz "
        "of lin0..lin4 (default: the installed lpips package's)",
    )


def levels_list(text):
    try:
        levels = tuple(int(level) for level in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 2:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 2 (e.g. 8,5,5,5), got {text}"
        )
    return levels


def int_list(text, minimum=1, allow_empty=False):
    """A tuple of comma-separated integers >= `minimum` (argparse `type`)."""
    if allow_empty and text.strip().lower() in ("", "none"):
        return ()
    try:
        values = tuple(int(value) for value in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < minimum:
        empty = " or 'none'" if allow_empty else ""
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= {minimum}{empty}, got {text!r}"
        )
    return values


def multipliers(text):
    return int_list(text, minimum=1)


def levels_or_none(text):
    return int_list(text, minimum=0, allow_empty=True)


def add_network_flags(parser, unset):
    """The flags of the vqgan network (docs/vqgan_conversion.md,
    `VQGANEncoder`); unset ones keep its defaults (taming's ImageNet f16)."""
    vqgan = parser.add_argument_group(
        "vqgan flavor", "taming-transformers' VQGAN encoder/decoder; stride "
        "2 ** (number of --ch_mult entries - 1)"
    )  # fmt: skip
    for name, kind, help_text in (
        ("ch", positive_int, "base width (default: 128)"),
        (
            "ch_mult",
            multipliers,
            "width multiplier per level, e.g. 1,2,2 (default: 1,1,2,2,4)",
        ),
        ("num_res_blocks", positive_int, "residual blocks per level (default: 2)"),
        (
            "attn_levels",
            levels_or_none,
            "levels with attention, 0 the full resolution, e.g. 2; 'none' for "
            "none (default: 4)",
        ),
        ("z_channels", positive_int, "encoder output channels (default: 256)"),
        ("dropout", unit_fraction, "dropout rate of the residual blocks (default: 0)"),
        (
            "norm_groups",
            positive_int,
            "GroupNorm groups; must divide every width (default: 32)",
        ),
    ):
        vqgan.add_argument(f"--{name}", type=kind, default=unset, help=help_text)


def add_quantizer_flags(parser, unset):
    """The flags of the vq, fsq, lfq and rvq flavors (docs/quantizers.md);
    unset ones keep the quantizer's defaults."""
    vqvae = parser.add_argument_group("vq flavor")
    for name, help_text in (
        ("use_cosine_sim", "match l2-normalized vectors and codes"),
        ("rotation_trick", "gradients through the rotation trick"),
    ):
        vqvae.add_argument(
            f"--{name}", action="store_const", const=True, default=unset, help=help_text
        )
    fsq = parser.add_argument_group("fsq flavor")
    fsq.add_argument(
        "--levels",
        type=levels_list,
        default=unset,
        help="levels per latent dimension (default: 8,5,5,5, 1,000 codes)",
    )
    fsq.add_argument(
        "--normalize_latents",
        action=argparse.BooleanOptionalAction,
        default=unset,
        help="batch-normalize the latents (no scale or offset) before the "
        "bound (default: False; runs begun before the default changed: True)",
    )
    both = parser.add_argument_group("fsq and lfq flavors")
    both.add_argument(
        "--normalize_features",
        action=argparse.BooleanOptionalAction,
        default=unset,
        help="standardize each position's features (no scale or offset) "
        "before the projection (default: True; runs begun before the default "
        "changed: False)",
    )
    lfq = parser.add_argument_group("lfq flavor")
    lfq.add_argument(
        "--codebook_bits", type=positive_int, default=unset, help="default: 10"
    )
    lfq.add_argument(
        "--entropy_loss_weight",
        type=non_negative_float,
        default=unset,
        help="default: 0.1",
    )
    commitment = parser.add_argument_group("vq, lfq and rvq flavors")
    commitment.add_argument(
        "--commitment_cost",
        type=non_negative_float,
        default=unset,
        help="weight of the commitment term that pulls the latents to their "
        "codes (default: 0.25 for vq and rvq, 0 for lfq; lfq runs begun "
        "before that default: 0.25)",
    )
    rvq = parser.add_argument_group("rvq flavor")
    rvq.add_argument(
        "--num_quantizers", type=positive_int, default=unset, help="default: 4"
    )
    rvq.add_argument(
        "--quantizer_dropout",
        type=non_negative_float,
        default=unset,
        help="default: 0 (every stage always)",
    )


def parse_train_config(argv):
    """The `TrainingConfig` of `scripts/train.py`'s arguments `argv` (a list):
    a `--hparams` file's values first, the command line's flags over them.
    Bad flags exit 2 through argparse, with its one-line message."""
    parser = make_train_parser()
    argv = list(argv)
    args = parser.parse_args(argv)
    if args.hparams:
        try:
            words = hparams_argv(args.hparams)
        except ValueError as error:
            parser.error(f"--hparams {args.hparams}: {error}")
        # The file's values first: a flag repeated on the command line wins.
        args = parser.parse_args(words + argv)
    if args.enc_dec_flavor not in networks_sized_by_n_hid() and any(
        word.split("=")[0] == "--n_hid" for word in argv
    ):
        parser.error(
            f"--n_hid does not apply to --enc_dec_flavor {args.enc_dec_flavor} "
            "(see --ch and --ch_mult)"
        )
    if args.vq_flavor not in SIZED_BY_EMBEDDINGS:
        for name in ("num_embeddings", "embedding_dim"):
            if any(word.split("=")[0] == f"--{name}" for word in argv):
                parser.error(
                    f"--{name} does not apply to --vq_flavor {args.vq_flavor} "
                    "(see --levels and --codebook_bits)"
                )
    return TrainingConfig(**vars(args))


# Keys of a --hparams file that hold true/false, or lists (comma lists as flags).
BOOLEAN_KEYS = (
    "straight_through",
    "use_cosine_sim",
    "rotation_trick",
    "normalize_latents",
    "normalize_features",
)
# Those with a --no- flag (on by default, or a choice either way).
NEGATABLE_KEYS = ("straight_through", "normalize_latents", "normalize_features")
LIST_KEYS = ("levels", "ch_mult", "attn_levels")


def hparams_argv(path):
    """The command-line words that a `--hparams` JSON file stands for."""
    try:
        with open(path) as file:
            values = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read it: {error}") from None
    if not isinstance(values, dict):
        raise ValueError("expected a JSON object of flag values")
    words = []
    for key, value in values.items():
        if key not in HPARAM_KEYS:
            raise ValueError(
                f"unknown key {key!r}; expected some of: {', '.join(HPARAM_KEYS)}"
            )
        if key in BOOLEAN_KEYS:
            if not isinstance(value, bool):
                raise ValueError(f"{key!r} must be true or false, got {value!r}")
            if key in NEGATABLE_KEYS:
                words.append(f"--{key}" if value else f"--no-{key}")
            elif value:  # the quantizer's options are off unless given
                words.append(f"--{key}")
        elif key in LIST_KEYS and isinstance(value, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(f"bad value for {key!r}: {json.dumps(value)}")
            words += [f"--{key}", ",".join(map(str, value)) or "none"]
        elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"bad value for {key!r}: {json.dumps(value)}")
        else:
            words += [f"--{key}", str(value)]
    return words
