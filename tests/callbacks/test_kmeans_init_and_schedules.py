import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.callbacks import quantizer_schedules
from keras_dvq.callbacks.kmeans_init import KMeansInit
from keras_dvq.callbacks.kmeans_init import images_for_kmeans
from keras_dvq.callbacks.quantizer_schedules import ArgmaxCodesPhase
from keras_dvq.callbacks.quantizer_schedules import KLWeightRamp
from keras_dvq.callbacks.quantizer_schedules import TemperatureAnnealing
from keras_dvq.models import VQVAE
from keras_dvq.schedules import cosine_anneal
from keras_dvq.utils.training_state import sync_training_state


def tiny_model(vq_flavor="vq", **kwargs):
    return VQVAE.from_flavors(
        vq_flavor=vq_flavor, num_embeddings=8, embedding_dim=4, n_hid=8, **kwargs
    )


class CodebookAtStart(keras.callbacks.Callback):
    """Records the codebook, and the latents of `data`, before the first step."""

    def __init__(self, data=None):
        super().__init__()
        self.data = data

    def on_train_begin(self, logs=None):
        self.codebook = ops.convert_to_numpy(self.model.quantizer.codebook)
        if self.data is not None:
            self.latents = self.model.project(self.data)


def images(rng, count=32, size=8):
    return rng.uniform(size=(count, size, size, 3)).astype("float32")


@pytest.mark.parametrize("use_ema", [False, True])
def test_kmeans_init_sets_the_kmeans_centroids_of_the_data(rng, use_ema):
    data = images(rng)
    model = tiny_model(use_ema=use_ema)
    model.compile()
    init = KMeansInit(data, num_samples=10_000, num_iterations=300, seed=0)
    probe = CodebookAtStart(data)
    model.fit(data, batch_size=16, epochs=1, callbacks=[init, probe], verbose=0)
    np.testing.assert_allclose(probe.codebook, init.centroids, atol=1e-6)
    # The clustered vectors are all the encoder outputs of the handed data
    # (num_samples exceeds their count) ...
    latents = probe.latents.reshape(-1, 4)
    np.testing.assert_allclose(
        np.sort(init.samples, axis=0), np.sort(latents, axis=0), atol=1e-5
    )
    # ... and the centroids are their k-means centroids: each is the mean of
    # the vectors nearest to it.
    assignment = ((latents[:, None] - init.centroids[None]) ** 2).sum(-1).argmin(1)
    for k in np.unique(assignment):
        np.testing.assert_allclose(
            init.centroids[k], latents[assignment == k].mean(0), atol=1e-4
        )
    if use_ema:  # the moving averages restart from the centroids
        cluster_size = ops.convert_to_numpy(model.quantizer.ema_cluster_size)
        assert np.all(cluster_size > 0)


def test_kmeans_init_accepts_datasets_of_pairs_and_dicts(rng):
    tf = pytest.importorskip("tensorflow")
    data = (images(rng) * 255).astype("uint8")
    labels = np.zeros(len(data), dtype="int64")
    for dataset in (
        tf.data.Dataset.from_tensor_slices((data, labels)).batch(8),
        tf.data.Dataset.from_tensor_slices({"image": data, "label": labels}).batch(8),
    ):
        model = tiny_model()
        model.compile()
        init = KMeansInit(dataset, num_samples=500, seed=0)
        model.fit(data, batch_size=16, epochs=1, callbacks=[init], verbose=0)
        assert init.centroids.shape == (8, 4)
        assert np.isfinite(init.centroids).all()


def test_kmeans_image_budget_follows_the_latent_grid():
    # 4 x 20,000 positions: 64 per 32-px image at stride 4, 256 per 256-px
    # image at stride 16, 4 per 8-px image at stride 4.
    assert images_for_kmeans(20_000, 32, 4) == 1250
    assert images_for_kmeans(20_000, 256, 16) == 313
    assert images_for_kmeans(20_000, 256, 8) == 79
    assert images_for_kmeans(100, 8, 4) == 100
    assert images_for_kmeans(100, None, None) == 1  # 32 px, stride 1


def test_kmeans_init_draws_enough_images_of_any_size(rng):
    # 8-px images at stride 4 have 4 positions each: 200 samples need 200
    # images (of the 64 there are), not the 13 a 32-px budget would take.
    data = images(rng, count=64)
    model = tiny_model()
    model.compile()
    init = KMeansInit(data, num_samples=200, seed=0)
    model.fit(data, batch_size=16, epochs=1, callbacks=[init], verbose=0)
    assert init.samples.shape == (200, 4)


def test_kmeans_init_leaves_a_trained_model_alone(rng):
    data = images(rng)
    model = tiny_model()
    model.compile()
    model.fit(data, batch_size=16, epochs=1, verbose=0)
    before = ops.convert_to_numpy(model.quantizer.codebook)
    probe = CodebookAtStart()
    init = KMeansInit(data, seed=0)
    model.fit(data, batch_size=16, epochs=1, callbacks=[init, probe], verbose=0)
    assert init.centroids is None
    np.testing.assert_array_equal(probe.codebook, before)


def test_kmeans_init_rejects_gumbel_and_too_little_data(rng):
    data = images(rng)
    gumbel = tiny_model("gumbel")
    gumbel.compile()
    with pytest.raises(ValueError, match="VectorQuantizer.*GumbelQuantizer"):
        gumbel.fit(data, epochs=1, callbacks=[KMeansInit(data)], verbose=0)
    model = VQVAE.from_flavors(num_embeddings=512, embedding_dim=4, n_hid=8)
    model.compile()
    with pytest.raises(ValueError, match="at least 512 encoder outputs"):
        model.fit(data[:2], epochs=1, callbacks=[KMeansInit(data[:2])], verbose=0)
    with pytest.raises(ValueError, match="num_samples"):
        KMeansInit(data, num_samples=0)


class ValueAtEveryStep(keras.callbacks.Callback):
    """Records a quantizer variable as each training step left it (a test
    probe: it syncs the JAX state after every step)."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        sync_training_state(self.model)
        variable = getattr(self.model.quantizer, self.variable)
        self.values.append(float(ops.convert_to_numpy(variable)))


SCHEDULES = [
    (TemperatureAnnealing, "temperature", 1.0, 0.25),
    (KLWeightRamp, "kl_weight", 0.0, 1e-3),
]


@pytest.mark.parametrize("callback_class, variable, start, end", SCHEDULES)
def test_schedules_set_the_quantizer_variable_every_step(
    rng, callback_class, variable, start, end
):
    data = images(rng)
    model = tiny_model("gumbel")
    model.compile()
    callback = callback_class(start_value=start, end_value=end, num_steps=6)
    probe = ValueAtEveryStep(variable)
    history = model.fit(
        data, batch_size=8, epochs=2, callbacks=[callback, probe], verbose=0
    )  # 4 steps per epoch; the last step is step 7
    # The compiled step computed each step's value itself.
    expected = [cosine_anneal(step, start, end, 6) for step in range(8)]
    assert probe.values == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert history.history[variable] == pytest.approx([expected[3], expected[7]])
    # A second fit continues from the optimizer's step count, also where
    # that count was set by hand (as a tuner resuming a trial does).
    model.optimizer.iterations.assign(10)
    probe.values = []
    model.fit(data, batch_size=8, epochs=1, callbacks=[callback, probe], verbose=0)
    expected = [cosine_anneal(step, start, end, 6) for step in range(10, 14)]
    assert probe.values == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_a_saved_model_continues_its_schedules_without_callbacks(rng, tmp_path):
    data = images(rng)
    model = tiny_model("gumbel")
    model.compile()
    schedules = [TemperatureAnnealing(2.0, 0.5, 12), KLWeightRamp(0.0, 1e-2, 9)]
    model.fit(data, batch_size=8, epochs=1, callbacks=schedules, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    probes = [ValueAtEveryStep("temperature"), ValueAtEveryStep("kl_weight")]
    restored.fit(data, batch_size=8, epochs=2, callbacks=probes, verbose=0)
    # The file carries the schedules and the step count (4 steps done).
    steps = range(4, 12)
    temperature = [cosine_anneal(step, 2.0, 0.5, 12) for step in steps]
    kl_weight = [cosine_anneal(step, 0.0, 1e-2, 9) for step in steps]
    assert probes[0].values == pytest.approx(temperature, rel=1e-6)
    assert probes[1].values == pytest.approx(kl_weight, rel=1e-6)


class SyncCounter(keras.callbacks.Callback):
    """Counts host syncs of the training state: calls of the schedules'
    `sync_training_state` and, on JAX, the calls of `model.jax_state_sync`
    that had state to write back (Keras calls it, as a no-op, wherever a
    callback reads `self.model`)."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.monkeypatch = monkeypatch
        self.schedule_syncs = 0
        self.jax_syncs = 0

        def counted(model):
            self.schedule_syncs += 1
            sync_training_state(model)

        monkeypatch.setattr(quantizer_schedules, "sync_training_state", counted)

    def on_train_begin(self, logs=None):
        model = self.model
        jax_state_sync = getattr(model, "jax_state_sync", None)
        if jax_state_sync is not None and "jax_state_sync" not in vars(model):

            def counted():
                self.jax_syncs += not model._jax_state_synced
                jax_state_sync()

            self.monkeypatch.setattr(model, "jax_state_sync", counted)


def test_schedules_make_no_per_batch_host_sync(rng, monkeypatch):
    data = images(rng, count=96)
    model = tiny_model("gumbel")
    model.compile()
    counter = SyncCounter(monkeypatch)
    schedules = [TemperatureAnnealing(1.0, 0.5, 5), KLWeightRamp(0.0, 1e-3, 5)]
    fit = {"batch_size": 8, "epochs": 1, "verbose": 0}
    model.fit(data, callbacks=[*schedules, counter], **fit)
    assert counter.schedule_syncs == 0
    # Of 12 steps, one sync: Keras' own, at the end of the epoch.
    if keras.backend.backend() == "jax":
        assert counter.jax_syncs == 1
    # No batch hooks at all (Keras skips calling them).
    for schedule in schedules:
        for hook in ("on_train_batch_begin", "on_train_batch_end"):
            callback_hook = getattr(keras.callbacks.Callback, hook)
            assert getattr(type(schedule), hook) is callback_hook
    # The decoder phase touches the state once, when it begins.
    counter.jax_syncs = 0
    phase = ArgmaxCodesPhase(start_step=12 + 5)
    model.fit(data, callbacks=[phase, counter], **fit)
    assert counter.schedule_syncs == 1
    if keras.backend.backend() == "jax":
        assert counter.jax_syncs == 2


def test_argmax_codes_phase_starts_at_its_step_and_continues_on_resume(rng):
    data = images(rng)
    model = tiny_model("gumbel")
    model.compile()
    phase, probe = ArgmaxCodesPhase(start_step=5), ValueAtEveryStep("argmax_codes")
    # After the phase callback, so the probe sees what the step saw.
    history = model.fit(
        data, batch_size=8, epochs=2, callbacks=[phase, probe], verbose=0
    )  # 4 steps per epoch
    assert probe.values == [0.0] * 5 + [1.0] * 3
    assert history.history["argmax_codes"] == [0.0, 1.0]
    # A new fit (a resumed run) counts from the optimizer's steps.
    model.quantizer.argmax_codes.assign(0.0)
    fresh, probe = ArgmaxCodesPhase(start_step=5), ValueAtEveryStep("argmax_codes")
    model.fit(data, batch_size=8, epochs=1, callbacks=[fresh, probe], verbose=0)
    assert probe.values == [1.0] * 4


class WeightsAtStep(keras.callbacks.Callback):
    """Records the trainable weights before step `step` (after the callbacks
    listed before it) and at the end of training."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            self.at_step = trainable_weights(self.model)

    def on_train_end(self, logs=None):
        self.at_end = trainable_weights(self.model)


def trainable_weights(model):
    return {v.path: ops.convert_to_numpy(v) for v in model.trainable_weights}


def test_argmax_codes_phase_freezes_the_tokenizer_momentum_included(rng):
    model = tiny_model("gumbel")
    model.build((None, 8, 8, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))  # no weight decay
    initial = trainable_weights(model)
    weights = WeightsAtStep(4)
    model.fit(
        images(rng),
        batch_size=8,
        epochs=2,
        callbacks=[ArgmaxCodesPhase(start_step=4), weights],
        verbose=0,
    )  # 8 steps, the last 4 in the phase
    for path, value in weights.at_step.items():
        moved = np.abs(weights.at_end[path] - value).max()
        if "/decoder/" in path:
            assert moved > 0 or path.endswith("bias"), path
        else:
            # Moved before the phase (Adam's momentum would carry it on),
            # not in it.
            assert np.abs(value - initial[path]).max() > 0, path
            assert moved == 0, path


def test_schedules_reject_a_model_without_the_variable(rng):
    model = tiny_model("vq")
    model.compile()
    with pytest.raises(ValueError, match="`temperature` variable.*VectorQuantizer"):
        model.fit(images(rng), epochs=1, callbacks=[TemperatureAnnealing()], verbose=0)
    with pytest.raises(ValueError, match="end_value"):
        TemperatureAnnealing(end_value=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        KLWeightRamp(num_steps=0)
    with pytest.raises(ValueError, match="`argmax_codes` variable"):
        model.fit(images(rng), epochs=1, callbacks=[ArgmaxCodesPhase(0)], verbose=0)
    with pytest.raises(ValueError, match="start_step=-2"):
        ArgmaxCodesPhase(start_step=-2)
