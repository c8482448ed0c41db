"""Training runs on several devices, for test_distribute.py.

    python tests/distribution/distributed_run.py CHECK RESULTS.npz FLAVOR [CHECK ...]

runs each triple in turn in this process, one model after another (on
TensorFlow under the one MirroredStrategy that `distribution_scope` keeps
per set of devices).
CHECK is `equivalence` (one step on one device, then the same step from the
same weights on two), `restarts` (one step on two replicas that restarts
most codes, with the encoder outputs it saw) or `consistency` (a few steps
on two replicas with k-means init and dead-code restarts; each replica's copy
of the quantizer state) or `worker` (one worker of a two-process
TF_CONFIG cluster). TensorFlow splits the CPU into two logical devices;
JAX needs XLA_FLAGS=--xla_force_host_platform_device_count=2. Writes the
results as NumPy arrays.
"""

import contextlib
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_dvq import distribution

if keras.backend.backend() == "tensorflow" and not distribution.tf_config_workers():
    distribution.split_cpu(2)

from keras_dvq.callbacks.kmeans_init import KMeansInit  # noqa: E402
from keras_dvq.layers import PatchDiscriminator  # noqa: E402
from keras_dvq.models import VQVAE  # noqa: E402
from keras_dvq.models import AdversarialVQVAE  # noqa: E402

SIZES = {"num_embeddings": 16, "embedding_dim": 4}
FLAVORS = {
    "ema": {**SIZES, "use_ema": True, "dead_code_threshold": 0.0},
    "gradient": {**SIZES, "seed_faithful": True},
    "restarts": {**SIZES, "use_ema": True, "dead_code_threshold": 40.0},
    "fsq": {"vq_flavor": "fsq", "levels": (4, 3, 3)},
    "lfq": {"vq_flavor": "lfq", "codebook_bits": 4, "inverse_temperature": 2.0},
    "gumbel": {
        **SIZES,
        "vq_flavor": "gumbel",
        "kl_weight": 0.1,
        "diversity_weight": 1.0,
        "balance_rate": 0.5,
    },
    "rvq": {
        **SIZES,
        "vq_flavor": "rvq",
        "num_quantizers": 3,
        "dead_code_threshold": 0.0,
    },
    # With a patch discriminator (AdversarialVQVAE), LeCAM's moving averages
    # and both players' SGD.
    "adversarial": {
        **SIZES,
        "use_ema": True,
        "dead_code_threshold": 0.0,
        "disc_weight": 1.0,
        "lecam_weight": 0.1,
        "disc_loss": "non_saturating",
    },
}


def make_model(flavor, optimizer):
    if flavor == "adversarial":
        discriminator = PatchDiscriminator(n_layers=1, ndf=4, name="discriminator")
        model = AdversarialVQVAE.from_flavors(
            n_hid=8, discriminator=discriminator, **FLAVORS[flavor]
        )
        model.build((None, 16, 16, 3))
        model.compile(
            optimizer=optimizer,
            discriminator_optimizer=optimizer.from_config(optimizer.get_config()),
        )
        return model
    model = VQVAE.from_flavors(n_hid=8, **FLAVORS[flavor])
    model.build((None, 16, 16, 3))
    # SGD: Adam's first step is about lr * sign(gradient), blind to the
    # gradient's scale, which is what replicas can get wrong.
    model.compile(optimizer=optimizer)
    return model


def images(count):
    return np.random.default_rng(0).uniform(size=(count, 16, 16, 3)).astype("float32")


@contextlib.contextmanager
def without_gumbel_noise():
    """Uniform draws of 1/e, Gumbel noise -log(-log(u)) of 0: one device and
    two replicas would draw different noise for the same images, and the
    step must differ by the replica logic alone."""

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return keras.ops.full(shape, math.exp(-1.0), dtype=dtype or "float32")

    original, keras.random.uniform = keras.random.uniform, uniform
    try:
        yield
    finally:
        keras.random.uniform = original


def equivalence(flavor):
    data = images(16)
    noise = without_gumbel_noise() if flavor == "gumbel" else contextlib.nullcontext()
    with noise:
        keras.utils.set_random_seed(0)
        single = make_model(flavor, keras.optimizers.SGD(0.5))
        initial = [variable.numpy() for variable in single.weights]
        one = single.fit(data, batch_size=16, epochs=1, shuffle=False, verbose=0)
        with distribution.distribution_scope(2, "CPU"):
            model = make_model(flavor, keras.optimizers.SGD(0.5))
            for variable, value in zip(model.weights, initial, strict=True):
                variable.assign(value)
            two = model.fit(data, batch_size=16, epochs=1, shuffle=False, verbose=0)
    results = {
        "names": np.array([v.path for v in single.weights]),
        "replicas": np.array(len(replica_copies(model.quantizer.projection.kernel))),
    }
    for prefix, trained, history in (("one", single, one), ("two", model, two)):
        for index, variable in enumerate(trained.weights):
            results[f"{prefix}/{index}"] = keras.ops.convert_to_numpy(variable)
        for key, values in history.history.items():
            results[f"{prefix}_log/{key}"] = np.array(values)
    for index, value in enumerate(initial):
        results[f"initial/{index}"] = value
    return results


def restarts(flavor):
    """One step that restarts most codes (the EMA counts start at 1)."""
    data = images(32)
    keras.utils.set_random_seed(0)
    with distribution.distribution_scope(2, "CPU"):
        model = make_model(flavor, keras.optimizers.SGD(0.0))
        encoder_outputs = model.project(data).reshape(-1, 4)
        model.fit(data, batch_size=32, epochs=1, shuffle=False, verbose=0)
    quantizer = model.quantizer
    return {
        "encoder_outputs": encoder_outputs,
        "threshold": np.array(quantizer.dead_code_threshold),
        "ema_cluster_size": keras.ops.convert_to_numpy(quantizer.ema_cluster_size),
        "ema_embedding_sum": keras.ops.convert_to_numpy(quantizer.ema_embedding_sum),
    }


def consistency(flavor):
    data = images(256)
    keras.utils.set_random_seed(0)
    with distribution.distribution_scope(2, "CPU"):
        model = make_model(flavor, "adam")
        kmeans = KMeansInit(data, num_samples=2000, seed=0)
        model.fit(data, batch_size=32, epochs=2, callbacks=[kmeans], verbose=0)
    quantizer = model.quantizer
    results = {"centroids": kmeans.centroids}
    for variable in (quantizer.codebook, *quantizer.non_trainable_weights):
        results[variable.name] = np.stack(replica_copies(variable))
    return results


def worker(flavor):
    """Two epochs on this worker of a TF_CONFIG cluster; the chief saves the
    model beside the results. KERAS_DVQ_NO_WORKAROUND=1 runs Keras' own
    multi-worker code paths instead of VQVAE's workarounds."""
    if os.environ.get("KERAS_DVQ_NO_WORKAROUND"):
        VQVAE._maybe_symbolic_build = keras.Model._maybe_symbolic_build
        VQVAE.compute_metrics = keras.Model.compute_metrics
    # First: the cluster's collectives must be configured before any op runs.
    scope = distribution.distribution_scope()
    data = images(64)
    dataset = tf.data.Dataset.from_tensor_slices((data, np.zeros(64))).batch(16)
    keras.utils.set_random_seed(0)
    with scope:
        model = make_model(flavor, "adam")
    history = model.fit(dataset, epochs=2, verbose=0)
    if distribution.is_chief():
        model.save(os.path.join(os.environ["KERAS_DVQ_CHIEF_DIR"], "model.keras"))
    results = {
        f"log/{key}": np.array(values) for key, values in history.history.items()
    }
    results["codebook"] = keras.ops.convert_to_numpy(model.quantizer.codebook)
    return results


def replica_copies(variable):
    """The per-device copies of a variable, as NumPy arrays."""
    if keras.backend.backend() == "tensorflow":
        return [copy.numpy() for copy in variable.value.values]  # MirroredVariable
    return [np.asarray(shard.data) for shard in variable.value.addressable_shards]


if __name__ == "__main__":
    checks = {
        "equivalence": equivalence,
        "restarts": restarts,
        "consistency": consistency,
        "worker": worker,
    }
    arguments = sys.argv[1:]
    for start in range(0, len(arguments), 3):
        check, path, flavor = arguments[start : start + 3]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        keras.backend.clear_session(free_memory=False)
        np.savez(path, **checks[check](flavor))
