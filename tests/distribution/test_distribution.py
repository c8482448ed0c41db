"""Multi-replica training equals single-device training, replicas agree.

Each check runs tests/distribution/distributed_run.py in a fresh process: TensorFlow's
logical devices and JAX's host device count must be set before start-up.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_dvq import distribution

RUN = Path(__file__).resolve().parent / "distributed_run.py"
BACKEND = keras.backend.backend()
multi_device_backend = pytest.mark.skipif(
    BACKEND == "torch", reason="multi-device training needs TensorFlow or JAX"
)


def run_checks(jobs):
    """Runs (check, flavor, results path) jobs in one fresh process."""
    environment = dict(
        os.environ,
        KERAS_BACKEND=BACKEND,
        # Not the suite's unoptimized XLA (tests/conftest.py): the replicas'
        # logs agree to 1e-5 with LLVM's optimizations, only to 2e-4 without.
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    arguments = [
        str(value) for check, flavor, path in jobs for value in (check, path, flavor)
    ]
    process = subprocess.run(
        [sys.executable, str(RUN), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]


# Every quantizer with its own replica logic: EMA statistics (VQ, RVQ's
# stages), gradient codebooks, FSQ's batch normalization, LFQ's global-batch
# entropy, the Gumbel diversity term's global-batch average (a noise-free
# step). Cosine codes and the rotation trick add none.
EQUIVALENCE_FLAVORS = ["ema", "gradient", "fsq", "lfq", "rvq", "gumbel", "adversarial"]
# Scalars that only callbacks change.
SCHEDULED = ("temperature", "kl_weight", "diversity_weight", "argmax_codes")
REPLICA_CHECKS = [
    *(("equivalence", flavor) for flavor in EQUIVALENCE_FLAVORS),
    ("restarts", "restarts"),
    ("consistency", "restarts"),
]


@pytest.fixture(scope="module")
def replica_results(tmp_path_factory):
    """The results of the checks of distributed_run.py, by (check, flavor).

    All run in one process, one model after another, as a program that
    trains several models would: on TensorFlow they share one
    MirroredStrategy (a second one's first all-reduce fails), which
    `distribution_scope` must provide. (A process spends 5-10 s starting.)
    """
    folder = tmp_path_factory.mktemp("replicas")
    run_checks([(c, f, folder / f"{c}-{f}.npz") for c, f in REPLICA_CHECKS])

    def results(check, flavor):
        with np.load(folder / f"{check}-{flavor}.npz") as loaded:
            return dict(loaded)

    return results


@multi_device_backend
@pytest.mark.parametrize("flavor", EQUIVALENCE_FLAVORS)
def test_two_replicas_take_the_single_device_step(flavor, replica_results):
    results = replica_results("equivalence", flavor)
    for index, name in enumerate(results["names"]):
        initial = results[f"initial/{index}"]
        one, two = results[f"one/{index}"], results[f"two/{index}"]
        # Every weight moved, and by the same step on two replicas: a loss
        # term counted once per replica would double its gradient.
        step = np.abs(one - initial).max()
        if name.endswith(SCHEDULED):
            np.testing.assert_array_equal(one, initial, err_msg=name)
            continue
        if name.endswith(("bias", "ema_cluster_size")) and step == 0:
            continue  # e.g. biases before a ReLU with no active unit
        assert step > 0, name
        np.testing.assert_allclose(two, one, atol=1e-4 * step + 1e-7, err_msg=name)
    keys = ["loss", "recon_loss", "latent_loss", "perplexity", "cluster_use"]
    if flavor == "adversarial":
        keys += ["disc_loss", "adv_loss", "logits_real", "logits_fake", "lecam_loss"]
    for key in keys:
        np.testing.assert_allclose(
            results[f"two_log/{key}"], results[f"one_log/{key}"], rtol=1e-5
        )


@multi_device_backend
def test_restarted_codes_are_encoder_outputs_on_every_replica(replica_results):
    results = replica_results("restarts", "restarts")
    threshold = float(results["threshold"])
    restarted = results["ema_cluster_size"] == threshold
    assert restarted.sum() >= 8
    codes = results["ema_embedding_sum"][restarted] / threshold
    outputs = results["encoder_outputs"]
    distances = ((codes[:, None, :] - outputs[None]) ** 2).sum(axis=-1).min(axis=1)
    # Each is one encoder output of the global batch (replica 0's half), not
    # a blend of the replicas' candidates.
    assert distances.max() < 1e-10


@multi_device_backend
def test_replicas_hold_identical_codebooks_after_kmeans_and_training(
    replica_results,
):
    results = replica_results("consistency", "restarts")
    for name in ("codebook", "ema_cluster_size", "ema_embedding_sum"):
        copies = results[name]
        assert len(copies) == 2, name
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=name)
    # Trained on from the k-means centroids, not left at them.
    assert not np.allclose(results["codebook"][0], results["centroids"])


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_two_workers(tmp_path, **environment):
    """Starts two worker processes of a localhost TF_CONFIG cluster."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        chief_dir = tmp_path / f"outputs-{index}"
        chief_dir.mkdir()
        env = dict(
            os.environ,
            KERAS_BACKEND="tensorflow",
            TF_CONFIG=json.dumps(config),
            KERAS_DVQ_CHIEF_DIR=str(chief_dir),
            TF_CPP_MIN_LOG_LEVEL="2",
            **environment,
        )
        command = [sys.executable, str(RUN), "worker", str(tmp_path / f"{index}.npz")]
        processes.append(
            subprocess.Popen(
                [*command, "ema"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=600) for process in processes]
    return [process.returncode for process in processes], [err for _, err in outputs]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="MultiWorkerMirroredStrategy")
def test_two_workers_train_together_and_only_the_chief_saves(tmp_path):
    codes, errors = run_two_workers(tmp_path)
    assert codes == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    chief, other = (dict(np.load(tmp_path / f"{index}.npz")) for index in range(2))
    for key in chief:  # one model: the same logs and codebook on both workers
        np.testing.assert_allclose(other[key], chief[key], rtol=1e-6, err_msg=key)
    assert chief["log/loss"].shape == (2,) and np.all(np.isfinite(chief["log/loss"]))
    assert (tmp_path / "outputs-0" / "model.keras").is_file()
    assert not any((tmp_path / "outputs-1").iterdir())


@pytest.mark.skipif(BACKEND != "tensorflow", reason="MultiWorkerMirroredStrategy")
def test_keras_alone_fails_across_workers(tmp_path):
    # Guards the workarounds in VQVAE: if Keras fixes keras-team/keras#20585,
    # this fails and they can go.
    codes, errors = run_two_workers(tmp_path, KERAS_DVQ_NO_WORKAROUND="1")
    assert codes[0] != 0
    assert "PerReplica" in errors[0] or "Invalid reduction dimension" in errors[0]


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's error")
def test_torch_backend_says_multi_device_needs_tensorflow_or_jax():
    with pytest.raises(ValueError, match="needs the TensorFlow or JAX backend"):
        distribution.distribution_scope(2)


@pytest.mark.parametrize("num_devices", [0, 99, 1.5])
def test_bad_device_counts(num_devices):
    if BACKEND == "torch":
        pytest.skip("torch has no multi-device path")
    with pytest.raises(ValueError, match="num_devices"):
        distribution.distribution_scope(num_devices, "CPU")


def test_tf_config_decides_workers_and_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution.tf_config_workers() == 0 and distribution.is_chief()
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    for index, chief in ((0, True), (1, False)):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert distribution.tf_config_workers() == 2
        assert distribution.is_chief() is chief
