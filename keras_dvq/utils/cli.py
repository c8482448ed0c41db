"""The frame every script shares: parse, run, one line for bad input, exit codes.

    def main(argv=None):
        return cli.run("evaluate.py", make_parser().parse_args, evaluate, argv)

Exit codes: 0 done; 2 bad input (`BadInput`, and argparse's own usage
errors), with one line on stderr naming the script; other outcomes a script
declares (train.py: 3 for a diverged run) with their own one-line message.
Anything else is a bug: it propagates with its traceback (exit 1).

Also here: argparse types that reject a bad value with a message naming what
was expected and what was received.
"""

import argparse
import math
import sys

from keras_dvq.utils.errors import BadInput

EXIT_BAD_INPUT = 2


def run(prog, parse, work, argv=None, outcomes=None):
    """Runs a script: `work(parse(argv))`, mapping its known failures to exit codes.

    Args:
        prog: the script's name, the prefix of its error line.
        parse: a function of the argument list (`sys.argv[1:]` when `argv`
            is `None`) returning the parsed arguments; argparse errors exit
            2 by themselves.
        work: a function of the parsed arguments doing the job.
        argv: the arguments, or `None` for the command line.
        outcomes: a dict `{exception class: (exit code, message function)}`
            for failures other than `BadInput` that the script reports in one
            line; the message function takes the parsed arguments and the
            exception.

    Returns:
        The exit status: 0, 2 for `BadInput`, or an outcome's code.
    """
    args = parse(sys.argv[1:] if argv is None else list(argv))
    outcomes = dict(outcomes or {})
    try:
        work(args)
    except BadInput as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except tuple(outcomes) as error:
        code, message = next(
            value for kind, value in outcomes.items() if isinstance(error, kind)
        )
        print(f"{prog}: error: {message(args, error)}", file=sys.stderr)
        return code
    return 0


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def unit_fraction(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value
