"""The flavors of `VQVAE.from_flavors` and of the scripts' flags: which
quantizer, encoder/decoder pair and defaults each name stands for.

Old names stay accepted: they resolve here, and only here, to the new ones
with a `FutureWarning` naming the new value.
"""

import inspect
import warnings
from collections.abc import Mapping

from keras_dvq import losses
from keras_dvq.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from keras_dvq.layers.gumbel_quantizer import GumbelQuantizer
from keras_dvq.layers.lookup_free_quantizer import LookupFreeQuantizer
from keras_dvq.layers.residual_vector_quantizer import ResidualVectorQuantizer
from keras_dvq.layers.vector_quantizer import VectorQuantizer
from keras_dvq.models.dalle import DalleDecoder
from keras_dvq.models.dalle import DalleEncoder
from keras_dvq.models.deepmind import DeepMindDecoder
from keras_dvq.models.deepmind import DeepMindEncoder
from keras_dvq.models.vqgan import VQGANDecoder
from keras_dvq.models.vqgan import VQGANEncoder
from keras_dvq.utils.validation import check_choice
from keras_dvq.utils.validation import check_positive_int


class FlavorRegistry(Mapping):
    """Flavor names mapped to what they build, plus old names that resolve to
    new ones with a `FutureWarning`.

    Iterating gives the current names only; `choices` lists them first, then
    the old ones, for argparse.

    Args:
        argument: the argument or flag the names are values of, e.g.
            `"vq_flavor"`, for messages.
        entries: dict of current name -> value.
        aliases: dict of old name -> current name.

    Example:

    ```python
    QUANTIZERS["vqvae"]  # VectorQuantizer, with a FutureWarning naming "vq"
    parser.add_argument(
        "--vq_flavor", choices=QUANTIZERS.choices, type=QUANTIZERS.flag_type
    )
    ```
    """

    def __init__(self, argument, entries, aliases=None):
        self.argument = argument
        self._entries = dict(entries)
        self.aliases = dict(aliases or {})
        self.choices = (*self._entries, *self.aliases)

    def resolve(self, name, stacklevel=1):
        """The current name of `name`; warns for an old one (at the caller
        `stacklevel` frames up) and raises `ValueError`, naming the choices,
        for an unknown one."""
        check_choice(self.argument, name, self.choices)
        if name not in self.aliases:
            return name
        new = self.aliases[name]
        warnings.warn(
            f"{self.argument}={name!r} is deprecated and will be removed; use "
            f"{self.argument}={new!r} (the same model).",
            FutureWarning,
            stacklevel=1 + stacklevel,
        )
        return new

    def flag_type(self, text):
        """argparse `type` of the flag: an old name becomes its new one (with
        the warning); unknown names are left for `choices` to refuse."""
        return self.resolve(text) if text in self.aliases else text

    def __getitem__(self, name):
        if name not in self.choices:
            raise KeyError(name)
        return self._entries[self.resolve(name, stacklevel=2)]

    def __contains__(self, name):
        return name in self.choices

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"FlavorRegistry({self.argument!r}, {self._entries!r})"


QUANTIZERS = FlavorRegistry(
    "vq_flavor",
    {
        "vq": VectorQuantizer,
        "gumbel": GumbelQuantizer,
        "fsq": FiniteScalarQuantizer,
        "lfq": LookupFreeQuantizer,
        "rvq": ResidualVectorQuantizer,
    },
    # "vqvae" named the whole model, not its nearest-code quantizer.
    aliases={"vqvae": "vq"},
)
ENCODER_DECODERS = FlavorRegistry(
    "enc_dec_flavor",
    {
        "deepmind": (DeepMindEncoder, DeepMindDecoder),
        "dalle": (DalleEncoder, DalleDecoder),
        "vqgan": (VQGANEncoder, VQGANDecoder),
    },
    # The DALL-E dVAE's network, released by OpenAI: the classes are Dalle*.
    aliases={"openai": "dalle"},
)
# What keeps the codebook healthy (docs/codebook.md: 500 of 512 codes
# used vs 118 for the original recipe): an EMA codebook whose codes are
# restarted from encoder outputs when used less than once per step on average.
# Use with KMeansInit, as scripts/train.py does.
HEALTHY_VQ_DEFAULTS = {"use_ema": True, "dead_code_threshold": 1.0}
# Quantizer arguments that `from_flavors` sets unless told otherwise.
FLAVOR_DEFAULTS = {"vq": HEALTHY_VQ_DEFAULTS, "rvq": HEALTHY_VQ_DEFAULTS}


def model_arguments(
    vq_flavor="vq",
    enc_dec_flavor="deepmind",
    loss_flavor="l2",
    num_embeddings=None,
    embedding_dim=None,
    n_hid=None,
    image_channels=3,
    seed_faithful=False,
    enc_dec_kwargs=None,
    **quantizer_kwargs,
):
    """The `VQVAE` constructor arguments of `VQVAE.from_flavors` (whose
    docstring describes these arguments): encoder, quantizer, decoder,
    reconstruction loss and image channels."""
    check_positive_int("image_channels", image_channels)
    # Warnings point at the caller of `VQVAE.from_flavors`.
    vq_flavor = QUANTIZERS.resolve(vq_flavor, stacklevel=3)
    enc_dec_flavor = ENCODER_DECODERS.resolve(enc_dec_flavor, stacklevel=3)
    reconstruction_loss = losses.get(loss_flavor)
    quantizer_class = QUANTIZERS[vq_flavor]
    for name, value in (
        ("num_embeddings", num_embeddings),
        ("embedding_dim", embedding_dim),
    ):
        if value is None:
            continue
        if name not in inspect.signature(quantizer_class).parameters:
            raise ValueError(
                f"Argument `{name}` does not apply to vq_flavor={vq_flavor!r} "
                f"({quantizer_class.__name__} sizes its codes with its own "
                f"arguments). Received: {name}={value}"
            )
        quantizer_kwargs[name] = value
    # An explicit use_ema=False means the gradient codebook, which has no
    # restarts: it opts out of both defaults, as seed_faithful does.
    if not seed_faithful and quantizer_kwargs.get("use_ema", True):
        quantizer_kwargs = {**FLAVOR_DEFAULTS.get(vq_flavor, {}), **quantizer_kwargs}
    encoder_class, decoder_class = ENCODER_DECODERS[enc_dec_flavor]
    output_channels = image_channels * reconstruction_loss.params_per_channel
    encoder_kwargs, decoder_kwargs = encoder_decoder_arguments(
        enc_dec_flavor, n_hid, enc_dec_kwargs
    )
    return {
        "encoder": encoder_class(name="encoder", **encoder_kwargs),
        "quantizer": quantizer_class(name="quantizer", **quantizer_kwargs),
        "decoder": decoder_class(
            output_channels=output_channels, name="decoder", **decoder_kwargs
        ),
        "reconstruction_loss": reconstruction_loss,
        "image_channels": image_channels,
    }


def encoder_decoder_arguments(enc_dec_flavor, n_hid=None, enc_dec_kwargs=None):
    """The encoder's and the decoder's keyword arguments of `enc_dec_flavor`.

    Each argument goes to the classes whose constructors take it, so a flavor
    needs no code here for its own arguments (e.g. `ch_mult` of `"vqgan"`).
    `n_hid=None` keeps the flavor's default width; a width or an argument
    that neither class takes raises `ValueError`, as does `output_channels`,
    which the loss decides.
    """
    classes = ENCODER_DECODERS[enc_dec_flavor]
    kwargs = dict(enc_dec_kwargs or {})
    if "n_hid" in kwargs:
        raise ValueError(
            "Argument `enc_dec_kwargs` must not hold `n_hid`; pass `n_hid` "
            f"itself. Received: enc_dec_kwargs={enc_dec_kwargs}"
        )
    if n_hid is not None:
        kwargs["n_hid"] = n_hid
    accepted = [_named_parameters(cls) for cls in classes]
    for name, value in kwargs.items():
        if name == "output_channels":
            raise ValueError(
                "Argument `enc_dec_kwargs` must not hold `output_channels`: the "
                "decoder's follow the loss and the image channels. Received: "
                f"output_channels={value!r}"
            )
        if not any(name in names for names in accepted):
            raise ValueError(
                f"Argument `{name}` does not apply to enc_dec_flavor="
                f"{enc_dec_flavor!r}, whose encoder and decoder take "
                f"{sorted(set().union(*accepted) - {'output_channels'})}. "
                f"Received: {name}={value!r}"
            )
    return tuple(
        {name: value for name, value in kwargs.items() if name in names}
        for names in accepted
    )


def _named_parameters(cls):
    return {
        name
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    }
