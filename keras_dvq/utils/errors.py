"""The one exception that means "the user gave something unusable".

`BadInput` is raised where a file, a dataset, a directory or a flag value
that a person chose cannot be used: a missing dataset, a corrupt shard, a run
directory in use, a model whose weights are not finite. Scripts print its
message on one line and exit with status 2 (`keras_dvq.utils.cli`); any
other exception is a bug and keeps its traceback. It subclasses
`ValueError`, so Python callers that catch `ValueError` keep working.
"""


class BadInput(ValueError):
    """An input a user chose cannot be used; the message says which, what
    was expected and what was received.

    Example:

    ```python
    raise BadInput("--dataset folder:photos: no images found under photos")
    ```
    """


def describe(error):
    """`"TypeName: first line of its message"` (the type alone for an empty
    message): what a one-line error says of an exception it wraps, e.g. one
    of the many that a corrupt file raises inside a loader."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__
