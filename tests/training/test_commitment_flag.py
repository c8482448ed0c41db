"""train.py's --commitment_cost, from the command line or a --hparams file to
the quantizers that have a commitment term (vq, lfq, rvq)."""

import json

import pytest

from keras_dvq.training import run as train_run
from keras_dvq.training.flags import parse_train_config
from keras_dvq.utils.errors import BadInput


def config_of(*flags):
    return parse_train_config([*flags, "--out", "unused"])


def commitment_costs(quantizer):
    stages = getattr(quantizer, "stages", [quantizer])
    return [stage.commitment_cost for stage in stages]


@pytest.mark.parametrize(
    "flavor, stages, default", [("vq", 1, 0.25), ("lfq", 1, 0.0), ("rvq", 4, 0.25)]
)
def test_the_flag_reaches_the_quantizer_and_the_record(flavor, stages, default):
    config = config_of("--vq_flavor", flavor, "--commitment_cost", "0.5")
    assert config.quantizer_options() == {"commitment_cost": 0.5}
    quantizer = train_run.build_model(config, config.recipe_hparams(), 10).quantizer
    assert commitment_costs(quantizer) == [0.5] * stages
    assert config.run_record()["commitment_cost"] == 0.5
    # Unset: the quantizer's default. LFQ's changed (issue 31), so its record
    # names it; vq's and rvq's records leave it out, as those of runs begun
    # before the flag (--resume compares them).
    unset = config_of("--vq_flavor", flavor)
    quantizer = train_run.build_model(unset, unset.recipe_hparams(), 10).quantizer
    assert commitment_costs(quantizer) == [default] * stages
    assert unset.run_record().get("commitment_cost") == (
        0.0 if flavor == "lfq" else None
    )


def test_a_hparams_file_sets_it(tmp_path):
    hparams = tmp_path / "lfq.json"
    hparams.write_text(json.dumps({"vq_flavor": "lfq", "commitment_cost": 0.1}))
    config = config_of("--hparams", str(hparams))
    assert config.quantizer_options() == {"commitment_cost": 0.1}


@pytest.mark.parametrize("flavor", ["fsq", "gumbel"])
def test_a_flavor_without_a_commitment_term_refuses_it(flavor):
    config = config_of("--vq_flavor", flavor, "--commitment_cost", "0.5")
    with pytest.raises(BadInput) as error_info:
        config.quantizer_options()
    assert str(error_info.value) == (
        "--commitment_cost applies to --vq_flavor vq or lfq or rvq only."
    )


def test_a_negative_cost_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        config_of("--vq_flavor", "lfq", "--commitment_cost", "-1")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--commitment_cost" in error and "-1" in error
