"""keras_dvq.utils.cli: the script frame maps bad input to one line and exit
2, declared outcomes to their codes, and lets bugs keep their traceback."""

import argparse
import re

import pytest

from keras_dvq.utils import cli
from keras_dvq.utils.errors import BadInput


def parse(argv):
    parser = argparse.ArgumentParser(prog="tool.py")
    parser.add_argument("--count", type=cli.positive_int, default=1)
    return parser.parse_args(argv)


class Diverged(RuntimeError):
    pass


def test_done_is_0_and_work_sees_the_parsed_arguments():
    seen = []
    assert cli.run("tool.py", parse, seen.append, ["--count", "3"]) == 0
    assert seen[0].count == 3


def test_bad_input_is_one_line_and_exit_2(capsys):
    def work(args):
        raise BadInput("--count 3: too many for this folder")

    assert cli.run("tool.py", parse, work, ["--count", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "tool.py: error: --count 3: too many for this folder\n"
    assert captured.out == ""


def test_declared_outcome_has_its_code_and_message(capsys):
    def work(args):
        raise Diverged("at step 7")

    outcomes = {Diverged: (3, lambda args, error: f"{error}; count {args.count}")}
    assert cli.run("tool.py", parse, work, [], outcomes=outcomes) == 3
    assert capsys.readouterr().err == "tool.py: error: at step 7; count 1\n"


@pytest.mark.parametrize("bug", [ValueError("shapes differ"), KeyError("step")])
def test_bugs_keep_their_traceback(bug):
    """A plain ValueError is not bad input: the scripts used to turn every
    ValueError into exit 2 and hid the bugs behind it."""

    def work(args):
        raise bug

    with pytest.raises(type(bug)):
        cli.run("tool.py", parse, work, [])


def test_argparse_errors_exit_2_by_themselves(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run("tool.py", parse, print, ["--count", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (cli.positive_int, "-1", "expected a positive integer, got -1"),
        (cli.non_negative_int, "-1", "expected an integer >= 0, got -1"),
        (cli.positive_float, "inf", "expected a positive number, got inf"),
        (cli.unit_fraction, "1", "expected a number in [0, 1), got 1"),
        (cli.non_negative_float, "-0.5", "expected a number >= 0, got -0.5"),
    ],
)
def test_argument_types_name_what_they_expected(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        kind(text)
