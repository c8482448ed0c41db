"""keras_dvq.utils.run_directory: one run per directory, resumes with one config."""

import json
import os
import subprocess
import sys

import pytest

from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.run_directory import CONFIG_FILE
from keras_dvq.utils.run_directory import DirectoryInUse
from keras_dvq.utils.run_directory import RunLock
from keras_dvq.utils.run_directory import compare_run_config
from keras_dvq.utils.run_directory import write_run_config


def test_second_lock_is_refused_naming_the_owner(tmp_path):
    with RunLock(tmp_path):
        owner = json.loads((tmp_path / "run.lock").read_text())
        assert owner["pid"] == os.getpid()
        with pytest.raises(
            DirectoryInUse, match=f"in use by another run \\(process {os.getpid()}"
        ):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / "run.lock").exists()  # released and removed
    with RunLock(tmp_path):  # free again
        pass


def test_lock_held_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from keras_dvq.utils.run_directory import RunLock; "
         f"lock = RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUse, match=f"process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # Killed (-9) without releasing: its lock file stays, and is stale.
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == holder.pid
    with RunLock(tmp_path):
        owner = json.loads((tmp_path / "run.lock").read_text())
        assert owner["pid"] == os.getpid()


def test_resume_with_another_configuration_is_refused(tmp_path):
    config = {"num_embeddings": 512, "learning_rate": 3e-4, "shape": (32, 32)}
    assert compare_run_config(tmp_path, config, resume=False) == {}
    assert not (tmp_path / CONFIG_FILE).exists()  # comparing writes nothing
    write_run_config(tmp_path, config)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["shape"] == [32, 32]
    assert compare_run_config(tmp_path, config, resume=True) == {}
    with pytest.raises(BadInput, match=r"num_embeddings 512 \(now 1024\)"):
        compare_run_config(tmp_path, {**config, "num_embeddings": 1024}, resume=True)
    changed = compare_run_config(
        tmp_path, {**config, "learning_rate": 1e-4}, True, ("learning_rate",)
    )
    assert changed == {"learning_rate": (3e-4, 1e-4)}
    # A new run (no --resume) compares nothing and records its own.
    assert compare_run_config(tmp_path, {"num_embeddings": 16}, resume=False) == {}
    write_run_config(tmp_path, {"num_embeddings": 16})
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == {"num_embeddings": 16}
