"""keras_dvq.utils.errors: BadInput, and how a wrapped exception is named."""

from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.errors import describe


def test_bad_input_is_a_value_error():
    assert issubclass(BadInput, ValueError)


def test_describe_names_the_type_and_the_first_line_only():
    error = OSError("  Unable to open file\n  (truncated header)\n")
    assert describe(error) == "OSError: Unable to open file"
    assert describe(KeyError()) == "KeyError"
