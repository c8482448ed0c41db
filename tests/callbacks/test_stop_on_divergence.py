"""StopOnDivergence and utils.divergence: a diverged run stops at once, its
weights are refused."""

import keras
import numpy as np
import pytest

from keras_dvq.callbacks.stop_on_divergence import StopOnDivergence
from keras_dvq.models import VQVAE
from keras_dvq.utils.divergence import TrainingDiverged
from keras_dvq.utils.divergence import check_finite_model
from keras_dvq.utils.divergence import non_finite_variables
from keras_dvq.utils.training_state import sync_training_state


def tiny_model():
    model = VQVAE.from_flavors(num_embeddings=8, embedding_dim=4, n_hid=8)
    model.compile()
    model.build((None, 8, 8, 3))
    return model


def images(count=16):
    return np.random.default_rng(0).uniform(size=(count, 8, 8, 3)).astype("float32")


class PoisonAtStep(keras.callbacks.Callback):
    """Sets a decoder weight to NaN before the optimizer step `step` (1-based),
    as a too large learning rate would."""

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            sync_training_state(self.model)
            # The output layer's bias: NaN anywhere before a ReLU may vanish.
            bias = self.model.decoder.weights[-1]
            bias.assign(np.full(bias.shape, np.nan, "float32"))


def test_fit_stops_at_the_first_non_finite_step_naming_the_terms():
    model = tiny_model()
    with pytest.raises(TrainingDiverged) as info:
        model.fit(
            images(),
            batch_size=4,
            epochs=3,
            callbacks=[StopOnDivergence(), PoisonAtStep(6)],
            verbose=0,
        )
    assert info.value.step == 6  # epoch 1, its second step
    assert {"loss", "recon_loss"} <= set(info.value.terms)
    assert str(info.value).startswith("training diverged at step 6: non-finite")


def test_finite_runs_are_left_alone():
    model = tiny_model()
    history = model.fit(
        images(), batch_size=4, epochs=2, callbacks=[StopOnDivergence()], verbose=0
    )
    assert len(history.history["loss"]) == 2


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="only JAX syncs state for callbacks"
)
def test_watching_the_loss_syncs_no_state_per_batch(monkeypatch):
    """On JAX, reading `callback.model` copies the training state back into
    the variables; a check of the logged loss per batch must not."""
    model = tiny_model()
    syncs = []
    sync = model.jax_state_sync
    monkeypatch.setattr(model, "jax_state_sync", lambda: syncs.append(1) or sync())
    model.fit(
        images(32), batch_size=2, epochs=1, callbacks=[StopOnDivergence()], verbose=0
    )
    # 16 batches: the callback's read at on_train_begin and Keras' own around
    # the epoch (4 in all with Keras 3.15), not one a batch (20).
    assert len(syncs) < 8, len(syncs)


def test_non_finite_variables_are_named():
    model = tiny_model()
    assert non_finite_variables(model) == []
    check_finite_model(model, "MODEL m.keras")  # no error
    kernel = model.decoder.weights[0]
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    assert non_finite_variables(model) == [kernel.path]
    with pytest.raises(ValueError, match=r"MODEL m.keras: the model's weights are not"):
        check_finite_model(model, "MODEL m.keras")
