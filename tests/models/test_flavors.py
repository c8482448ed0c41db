"""The flavors registry (keras_dvq/models/flavors.py) behind
`VQVAE.from_flavors` and the scripts' flags."""

import argparse
import json
import warnings

import pytest

from keras_dvq.layers import VectorQuantizer
from keras_dvq.models import VQVAE
from keras_dvq.models import DalleDecoder
from keras_dvq.models import DalleEncoder
from keras_dvq.models.flavors import ENCODER_DECODERS
from keras_dvq.models.flavors import QUANTIZERS
from keras_dvq.training import flags
from tests.models.tiny_vqvae import make_model

# Old name -> (argument, new name).
RENAMED = {"vqvae": ("vq_flavor", "vq"), "openai": ("enc_dec_flavor", "dalle")}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"vq_flavor": "vqa"},
            "vq_flavor.*'vq', 'gumbel', 'fsq', 'lfq', 'rvq', 'vqvae'.*vq_flavor='vqa'",
        ),
        (
            {"enc_dec_flavor": "taming"},
            "enc_dec_flavor.*'deepmind', 'dalle', 'vqgan', 'openai'"
            ".*enc_dec_flavor='taming'",
        ),
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


def test_vq_flavor_defaults_to_ema_with_dead_code_restarts():
    default = make_model().quantizer
    assert default.use_ema and default.dead_code_threshold == 1.0
    faithful = make_model(seed_faithful=True).quantizer
    assert not faithful.use_ema and faithful.dead_code_threshold == 0.0
    gradient = make_model(use_ema=False).quantizer
    assert not gradient.use_ema and gradient.dead_code_threshold == 0.0
    tuned = make_model(dead_code_threshold=2.0).quantizer
    assert tuned.use_ema and tuned.dead_code_threshold == 2.0


def model_config(model):
    """The configuration of a model but its (automatic, unique) name."""
    config = json.loads(json.dumps(model.get_config()))
    del config["name"]
    return config


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_old_flavor_names_warn_and_build_the_same_model(old):
    argument, new = RENAMED[old]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns of nothing
        renamed = make_model(**{argument: new})
    with pytest.warns(FutureWarning, match=f"{argument}='{old}'.*{argument}='{new}'"):
        deprecated = make_model(**{argument: old})
    assert model_config(deprecated) == model_config(renamed)


def test_the_new_names_build_what_they_name():
    assert isinstance(make_model("vq").quantizer, VectorQuantizer)
    model = make_model(enc_dec_flavor="dalle")
    assert isinstance(model.encoder, DalleEncoder)
    assert isinstance(model.decoder, DalleDecoder)


def test_registries_list_new_names_first_and_resolve_old_ones():
    assert QUANTIZERS.choices == ("vq", "gumbel", "fsq", "lfq", "rvq", "vqvae")
    assert ENCODER_DECODERS.choices == ("deepmind", "dalle", "vqgan", "openai")
    # Iteration, as a dict's, gives the current names only.
    assert list(QUANTIZERS) == ["vq", "gumbel", "fsq", "lfq", "rvq"]
    assert "vqvae" in QUANTIZERS and "vqa" not in QUANTIZERS
    with pytest.warns(FutureWarning, match="enc_dec_flavor='dalle'"):
        assert ENCODER_DECODERS["openai"] == (DalleEncoder, DalleDecoder)
    with pytest.raises(KeyError):
        QUANTIZERS["vqa"]


def test_flags_accept_old_names_as_new_ones():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--vq_flavor", choices=QUANTIZERS.choices, type=QUANTIZERS.flag_type
    )
    flags.add_model_flags(parser)
    with pytest.warns(FutureWarning) as record:
        args = parser.parse_args(["--vq_flavor", "vqvae", "--enc_dec_flavor", "openai"])
    assert (args.vq_flavor, args.enc_dec_flavor) == ("vq", "dalle")
    assert len(record) == 2
    args = parser.parse_args(["--vq_flavor", "gumbel", "--enc_dec_flavor", "dalle"])
    assert (args.vq_flavor, args.enc_dec_flavor) == ("gumbel", "dalle")
    # vqgan takes its own arguments, which the training flags do not set yet.
    assert "{deepmind,dalle,openai}" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--enc_dec_flavor", "taming"])
