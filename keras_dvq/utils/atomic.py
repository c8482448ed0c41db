"""Atomic file writes: a kill at any instant leaves the old file or the new one.

Every file a run writes for later (models, backups, metrics, token shards,
exports) goes through here: it is written under a temporary name in the same
directory (same file system, so the rename is atomic), flushed to disk, and
renamed into place with `os.replace`. A process killed mid-write leaves a
temporary file behind, never a torn target; `remove_temporaries` sweeps them
once the directory's lock is held (`keras_dvq.run_directory.RunLock`).
"""

import contextlib
import os
import shutil

# Temporary names start with this prefix (and keep the target's suffix, which
# `model.save` and `save_weights` check).
TEMPORARY_PREFIX = ".partial-"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write instead of `path`; renames it into
    place when the block succeeds, removes it when the block raises.

    Example:

    ```python
    with atomic_path("runs/demo/model.keras") as temporary:
        model.save(temporary)
    ```
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f"{TEMPORARY_PREFIX}{os.getpid()}-{name}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise
    _fsync_directory(directory)


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w") as file:
            file.write(text)


def save_array(path, array):
    """`np.save(path, array)`, atomically (`path` ends in `.npy`)."""
    import numpy as np

    with atomic_path(path) as temporary:
        np.save(temporary, array)


def save_model(model, path):
    """`model.save(path)`, atomically."""
    with atomic_path(path) as temporary:
        model.save(temporary)


def remove_temporaries(directory):
    """Removes what killed writers left in `directory` (not recursive);
    call it only while holding the directory's lock."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(TEMPORARY_PREFIX):
            _remove(os.path.join(directory, name))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _fsync(path):
    """Flushes a written file (or every file of a written directory) to disk,
    so that a power cut after the rename cannot leave an empty target."""
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(os.path.join(root, name))
        return
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _fsync_directory(directory):
    # Makes the rename itself durable; not every platform can open a folder.
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
