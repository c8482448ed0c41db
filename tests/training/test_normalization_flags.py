"""The FSQ and LFQ normalization flags of train.py, from the command line or
a --hparams file to the quantizer."""

import json

import pytest

from keras_dvq.layers import FiniteScalarQuantizer
from keras_dvq.layers import LookupFreeQuantizer
from keras_dvq.training import run as train_run
from keras_dvq.training.builders import HPARAM_KEYS
from keras_dvq.training.config import current_flavor_names
from keras_dvq.training.flags import parse_train_config
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.run_directory import compare_run_config


def config_of(*flags):
    return parse_train_config([*flags, "--out", "unused"])


def test_the_flags_reach_the_quantizers():
    fsq = config_of(
        "--vq_flavor", "fsq", "--normalize_latents", "--no-normalize_features"
    )
    assert fsq.quantizer_options() == {
        "normalize_latents": True,
        "normalize_features": False,
    }
    quantizer = train_run.build_model(fsq, fsq.recipe_hparams(), 10).quantizer
    assert isinstance(quantizer, FiniteScalarQuantizer)
    assert (quantizer.normalize_latents, quantizer.normalize_features) == (
        True,
        False,
    )
    lfq = config_of("--vq_flavor", "lfq", "--no-normalize_features")
    assert lfq.quantizer_options() == {"normalize_features": False}
    quantizer = train_run.build_model(lfq, lfq.recipe_hparams(), 10).quantizer
    assert isinstance(quantizer, LookupFreeQuantizer)
    assert not quantizer.normalize_features


@pytest.mark.parametrize(
    "flavor, defaults",
    [
        ("fsq", {"normalize_latents": False, "normalize_features": True}),
        ("lfq", {"normalize_features": True, "commitment_cost": 0.0}),
    ],
)
def test_unset_the_new_defaults_apply_and_are_recorded(flavor, defaults):
    config = config_of("--vq_flavor", flavor)
    assert config.quantizer_options() == {}
    quantizer = train_run.build_model(config, config.recipe_hparams(), 10).quantizer
    assert {name: getattr(quantizer, name) for name in defaults} == defaults
    record = config.run_record()
    assert {name: record[name] for name in defaults} == defaults
    assert "normalize_features" not in config_of("--vq_flavor", "vq").run_record()


@pytest.mark.parametrize(
    "flavor, old, refusal",
    [
        (
            "fsq",
            {"normalize_latents": True, "normalize_features": False},
            r"normalize_features false \(now true\)",
        ),
        (
            "lfq",
            {"normalize_features": False, "commitment_cost": 0.25},
            r"normalize_features false \(now true\)",
        ),
        # An LFQ run begun between issue 31's two changes: feature
        # normalization recorded, the commitment cost (then 0.25) not.
        ("lfq", {"commitment_cost": 0.25}, r"commitment_cost 0\.25 \(now 0\.0\)"),
    ],
)
def test_a_run_begun_under_the_old_defaults_resumes_only_with_them(
    tmp_path, flavor, old, refusal
):
    """Its record lacks the keys whose defaults changed since: it was trained
    with the old defaults, so resuming it under the new ones is refused,
    naming them, and the old ones given as flags continue it."""
    out = tmp_path / "run"
    out.mkdir()
    stored = config_of("--vq_flavor", flavor).run_record()
    for name in old:
        del stored[name]
    (out / "run_config.json").write_text(json.dumps(stored))
    new = config_of("--vq_flavor", flavor).run_record()
    with pytest.raises(BadInput, match=refusal):
        compare_run_config(str(out), new, True, normalize=current_flavor_names)
    # The old values as flags: a --hparams file stands for them.
    hparams = tmp_path / "old.json"
    hparams.write_text(json.dumps({"vq_flavor": flavor, **old}))
    again = config_of("--hparams", str(hparams)).run_record()
    assert (
        compare_run_config(str(out), again, True, normalize=current_flavor_names) == {}
    )


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
