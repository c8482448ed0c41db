"""Argument checks shared by layers, models and scripts.

Every check raises `ValueError` naming the argument, what was expected and
what was received, so that a bad flag or config fails at construction time
instead of deep inside a compiled training step.
"""

import math


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"Argument `{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return value


def check_non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"Argument `{name}` must be an integer >= 0. Received: {name}={value!r}"
        )
    return value


def check_non_negative(name, value):
    if not _is_real(value) or value < 0:
        raise ValueError(
            f"Argument `{name}` must be a non-negative number. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_positive(name, value):
    if not _is_real(value) or value <= 0:
        raise ValueError(
            f"Argument `{name}` must be a positive number. Received: {name}={value!r}"
        )
    return float(value)


def check_open_unit_interval(name, value):
    if not _is_real(value) or not 0 < value < 1:
        raise ValueError(
            f"Argument `{name}` must be a number in the open interval (0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_choice(name, value, choices):
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"Argument `{name}` must be one of {allowed}. Received: {name}={value!r}"
        )
    return value


def _is_real(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
