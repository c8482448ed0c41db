"""One run per output directory, and resumes only with the same configuration.

`RunLock` refuses a second process writing into a directory that another
live process owns; `compare_run_config` refuses to continue a run with other
settings than it started with, and `write_run_config` records them.
"""

import contextlib
import json
import os
import socket

from keras_dvq.utils import atomic
from keras_dvq.utils.errors import BadInput

LOCK_FILE = "run.lock"
CONFIG_FILE = "run_config.json"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class DirectoryInUse(BadInput):
    """Another live process holds the directory's lock."""


class RunLock:
    """An exclusive lock on an output directory, held by one process.

    The lock file `run.lock` names its owner (pid and host). It is an OS
    file lock (`flock`), which the kernel releases when the owner dies in
    any way, `kill -9` included: a lock file left by a dead process is
    recognised as stale and taken over without any manual clean-up. Where
    `flock` is missing (Windows), the pid in the file decides instead.

    Args:
        directory: the directory to own; created if missing.
        name: the lock file's name. Defaults to `"run.lock"`.

    Example:

    ```python
    with RunLock("runs/demo"):
        ...  # write into runs/demo; a second RunLock("runs/demo") raises
    ```
    """

    def __init__(self, directory, name=LOCK_FILE):
        self.directory = os.fspath(directory)
        self.name = name
        self.path = os.path.join(self.directory, name)
        self._file = None

    def acquire(self):
        os.makedirs(self.directory, exist_ok=True)
        if fcntl is None:
            self._acquire_by_pid()
        else:
            self._acquire_by_flock()
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        self._file.seek(0)
        self._file.truncate()
        self._file.write(owner + "\n")
        self._file.flush()
        return self

    def _acquire_by_flock(self):
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(self.path)
                file.close()
                raise DirectoryInUse(self._in_use_message(owner)) from None
            # The owner may have removed the file between our open and our
            # lock: then we hold a lock on a file nobody else will see.
            try:
                same = os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._file = file
                return
            file.close()

    def _acquire_by_pid(self):
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR)
            except FileExistsError:
                owner = _read_owner(self.path)
                if owner.get("pid") is not None and _alive(owner["pid"]):
                    raise DirectoryInUse(self._in_use_message(owner)) from None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)  # stale: its owner is gone
                continue
            self._file = os.fdopen(descriptor, "r+")
            return

    def _in_use_message(self, owner):
        who = f"process {owner.get('pid', '?')}"
        if owner.get("host") and owner["host"] != socket.gethostname():
            who += f" on {owner['host']}"
        return (
            f"{self.directory} is in use by another run ({who}, lock file "
            f"{self.path}); wait for it to finish or choose another directory."
        )

    def release(self):
        if self._file is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # while still locked: nobody can take it
        self._file.close()  # releases the flock
        self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _read_owner(path):
    try:
        with open(path) as file:
            return json.loads(file.read() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def compare_run_config(directory, config, resume, may_change=(), normalize=None):
    """Compares a resumed run's configuration with the one stored in `directory`.

    Writes nothing: `write_run_config` stores the configuration once the run
    is under way, so a run that fails before leaves the directory's record as
    it was.

    Args:
        directory: the run's output directory.
        config: a JSON-serializable dict of what defines the run.
        resume: bool. Whether the run continues an earlier one; then its
            stored configuration must equal `config` except in the keys of
            `may_change`. A fresh run compares nothing.
        may_change: keys that a resumed run may set differently (e.g. a
            lower learning rate after a divergence).
        normalize: a function of the stored dict giving what `config` is
            compared with (values renamed since), or `None`.

    Returns:
        The keys of `may_change` whose values changed, as `{key: (old, new)}`.

    Raises:
        BadInput: the stored configuration differs from `config`, naming
            the keys, the stored values and the given ones.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if not (resume and os.path.exists(path)):
        return {}
    # A JSON round trip makes tuples lists, as they come back from the file.
    config = json.loads(json.dumps(config))
    with open(path) as file:
        stored = json.load(file)
    if normalize is not None:
        stored = normalize(stored)
    keys = sorted(set(stored) | set(config))
    differing = [
        key
        for key in keys
        if stored.get(key) != config.get(key) and key not in may_change
    ]
    if differing:
        details = ", ".join(
            f"{key} {json.dumps(stored.get(key))} (now {json.dumps(config.get(key))})"
            for key in differing
        )
        raise BadInput(
            f"--resume: {directory} holds a run with another configuration "
            f"({details}); resume with the same flags or choose another --out."
        )
    return {
        key: (stored.get(key), config.get(key))
        for key in may_change
        if stored.get(key) != config.get(key)
    }


def write_run_config(directory, config):
    """Stores a run's configuration (a JSON-serializable dict) in `directory`,
    atomically."""
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic.write_text(os.path.join(directory, CONFIG_FILE), text)
