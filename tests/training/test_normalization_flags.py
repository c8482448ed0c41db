"""The FSQ and LFQ normalization flags of train.py, from the command line or
a --hparams file to the quantizer."""

import json

import pytest

from keras_dvq.layers import FiniteScalarQuantizer
from keras_dvq.layers import LookupFreeQuantizer
from keras_dvq.training import run as train_run
from keras_dvq.training.builders import HPARAM_KEYS
from keras_dvq.training.flags import parse_train_config
from keras_dvq.utils.errors import BadInput


def config_of(*flags):
    return parse_train_config([*flags, "--out", "unused"])


def test_the_flags_reach_the_quantizers():
    fsq = config_of(
        "--vq_flavor", "fsq", "--no-normalize_latents", "--normalize_features"
    )
    assert fsq.quantizer_options() == {
        "normalize_latents": False,
        "normalize_features": True,
    }
    quantizer = train_run.build_model(fsq, fsq.recipe_hparams(), 10).quantizer
    assert isinstance(quantizer, FiniteScalarQuantizer)
    assert (quantizer.normalize_latents, quantizer.normalize_features) == (
        False,
        True,
    )
    lfq = config_of("--vq_flavor", "lfq", "--normalize_features")
    assert lfq.quantizer_options() == {"normalize_features": True}
    quantizer = train_run.build_model(lfq, lfq.recipe_hparams(), 10).quantizer
    assert isinstance(quantizer, LookupFreeQuantizer)
    assert quantizer.normalize_features
    # Unset, they keep the layers' defaults and stay out of the run record.
    plain = config_of("--vq_flavor", "fsq")
    assert plain.quantizer_options() == {}
    assert "normalize_features" not in plain.run_record()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--normalize_features"], "--normalize_features applies to --vq_flavor "),
        (["--vq_flavor", "lfq", "--no-normalize_latents"], "--normalize_latents"),
    ],
)
def test_the_flags_of_other_flavors_are_bad_input(flags, message):
    with pytest.raises(BadInput, match=message) as error_info:
        config_of(*flags).quantizer_options()
    if flags == ["--normalize_features"]:
        # An option of two flavors names both.
        assert str(error_info.value) == (
            "--normalize_features applies to --vq_flavor fsq or lfq only."
        )
    else:
        assert str(error_info.value).endswith("applies to --vq_flavor fsq only.")


def test_hparams_files_set_them_both_ways(tmp_path):
    path = tmp_path / "hparams.json"
    path.write_text(
        json.dumps(
            {
                "vq_flavor": "fsq",
                "normalize_latents": False,
                "normalize_features": True,
            }
        )
    )
    config = parse_train_config(["--hparams", str(path), "--out", "unused"])
    assert (config.normalize_latents, config.normalize_features) == (False, True)
    # The command line wins over the file.
    config = parse_train_config(
        ["--hparams", str(path), "--normalize_latents", "--out", "unused"]
    )
    assert config.normalize_latents is True
    # Listed once although two flavors take it.
    assert HPARAM_KEYS.count("normalize_features") == 1
