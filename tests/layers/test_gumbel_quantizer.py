import math
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.layers import GumbelQuantizer
from keras_dvq.schedules import CosineAnnealing
from keras_dvq.schedules import cosine_anneal
from tests.testing import gradients
from tests.testing import run_layer_test

K, D, F = 16, 4, 8


def to_numpy(x):
    return ops.convert_to_numpy(x)


def quantizer_pair(seed=5, **kwargs):
    """Two built quantizers with the same weights and the same noise seed."""
    first = GumbelQuantizer(K, D, seed=seed, **kwargs)
    second = GumbelQuantizer(K, D, seed=seed, **kwargs)
    first.build((None, F))
    second.build((None, F))
    second.set_weights(first.get_weights())
    return first, second


def distance_to_nearest_code(quantized, codebook):
    quantized = np.asarray(quantized, "float64").reshape(-1, codebook.shape[1])
    distances = np.linalg.norm(quantized[:, None] - codebook[None], axis=-1)
    return distances.min(axis=1)


def numpy_kl(logits):
    logits = np.asarray(logits, "float64")
    logits = logits - logits.max(-1, keepdims=True)
    log_q = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return (np.exp(log_q) * (log_q + np.log(logits.shape[-1]))).sum(-1).mean()


@pytest.mark.parametrize("straight_through", [False, True])
def test_layer(straight_through, tmp_path):
    run_layer_test(
        GumbelQuantizer,
        {
            "num_embeddings": K,
            "embedding_dim": D,
            "straight_through": straight_through,
            "seed": 2,
        },
        input_shape=(2, 4, 4, F),
        expected_output_shape=((2, 4, 4, D), (2, 4, 4)),
        tmp_path=tmp_path,
        expected_num_trainable_weights=3,
    )


def test_config_round_trip_keeps_every_argument():
    quantizer = GumbelQuantizer(
        num_embeddings=12,
        embedding_dim=3,
        temperature=0.5,
        kl_weight=0.1,
        balance_rate=0.02,
        straight_through=True,
        temperature_schedule=CosineAnnealing(1.0, 0.25, 6),
        codebook_initializer=keras.initializers.RandomUniform(-1.0, 1.0),
        seed=9,
        name="gumbel",
    )
    config = quantizer.get_config()
    assert config["temperature"] == 0.5
    assert config["kl_weight"] == 0.1
    assert config["balance_rate"] == 0.02
    assert config["kl_weight_schedule"] is None
    revived = GumbelQuantizer.from_config(config)
    assert revived.get_config() == config
    revived.build((None, F))
    assert float(to_numpy(revived.temperature)) == 0.5
    assert float(to_numpy(revived.kl_weight)) == pytest.approx(0.1)
    assert revived.straight_through
    assert isinstance(revived.codebook_initializer, keras.initializers.RandomUniform)
    assert isinstance(revived.temperature_schedule, CosineAnnealing)
    assert revived.temperature_schedule.get_config() == {
        "start_value": 1.0,
        "end_value": 0.25,
        "num_steps": 6,
    }


def test_schedules_set_each_training_step_from_the_step_count(rng):
    quantizer = GumbelQuantizer(
        K,
        D,
        temperature=3.0,
        kl_weight=0.5,
        temperature_schedule=CosineAnnealing(1.0, 0.25, 6),
        kl_weight_schedule=CosineAnnealing(0.0, 1e-3, 4),
    )
    quantizer.build((None, F))
    inputs = rng.normal(size=(8, F)).astype("float32")
    logits = to_numpy(quantizer.projection(inputs))
    for step in range(8):
        assert int(to_numpy(quantizer.iterations)) == step
        quantizer(inputs, training=True)
        temperature = cosine_anneal(step, 1.0, 0.25, 6)
        kl_weight = cosine_anneal(step, 0.0, 1e-3, 4)
        assert float(to_numpy(quantizer.temperature)) == pytest.approx(temperature)
        assert float(to_numpy(quantizer.kl_weight)) == pytest.approx(kl_weight)
        # The step's loss used the scheduled weight, not the variable's old value.
        np.testing.assert_allclose(
            to_numpy(quantizer.losses[-1]), kl_weight * numpy_kl(logits), rtol=1e-4
        )
    # Inference neither advances the count nor moves the values.
    quantizer(inputs)
    assert int(to_numpy(quantizer.iterations)) == 8
    assert float(to_numpy(quantizer.temperature)) == pytest.approx(0.25)


def test_the_scheduled_temperature_drives_the_noise_mixture(rng):
    # Same weights, same noise: a schedule at 0.02 mixes like the variable
    # at 0.02, and unlike the variable's own value (5.0) that it overrides.
    scheduled, assigned = quantizer_pair(
        temperature=5.0, temperature_schedule=lambda step: 0.02
    )
    assigned.temperature_schedule = None
    assigned.temperature.assign(0.02)
    inputs = rng.normal(size=(16, F)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(scheduled(inputs, training=True)[0]),
        to_numpy(assigned(inputs, training=True)[0]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_inference_takes_the_argmax_of_the_logits(rng):
    quantizer = GumbelQuantizer(K, D, seed=1)
    inputs = rng.normal(size=(2, 3, 5, F)).astype("float32")
    quantized, tokens = quantizer(inputs)
    assert tuple(quantized.shape) == (2, 3, 5, D)
    assert keras.backend.standardize_dtype(tokens.dtype) == "int32"

    logits = to_numpy(quantizer.projection(inputs))
    expected = logits.argmax(-1)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(to_numpy(tokens), expected)
    np.testing.assert_array_equal(to_numpy(quantizer.tokenize(inputs)), expected)
    codebook = to_numpy(quantizer.codebook)
    np.testing.assert_array_equal(to_numpy(quantized), codebook[expected])
    # Inference is deterministic.
    np.testing.assert_array_equal(to_numpy(quantizer(inputs)[1]), expected)


def test_training_samples_with_seeded_noise(rng):
    first, second = quantizer_pair()
    inputs = rng.normal(size=(64, F)).astype("float32")
    inference_tokens = to_numpy(first(inputs)[1])

    quantized, tokens = first(inputs, training=True)
    again, tokens_again = first(inputs, training=True)
    assert not np.array_equal(to_numpy(tokens), to_numpy(tokens_again))
    assert not np.array_equal(to_numpy(tokens), inference_tokens)
    # The same seed replays the same noise.
    replayed, replayed_tokens = second(inputs, training=True)
    np.testing.assert_array_equal(to_numpy(replayed_tokens), to_numpy(tokens))
    np.testing.assert_allclose(to_numpy(replayed), to_numpy(quantized), rtol=1e-6)


def test_hard_forward_pass_emits_codebook_rows(rng):
    quantizer = GumbelQuantizer(K, D, straight_through=True, seed=3)
    inputs = rng.normal(size=(2, 4, 4, F)).astype("float32")
    quantized, tokens = quantizer(inputs, training=True)
    codebook = to_numpy(quantizer.codebook)
    np.testing.assert_array_equal(to_numpy(quantized), codebook[to_numpy(tokens)])


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch profiler")
def test_straight_through_reads_nothing_more_back_to_the_host(rng):
    import torch

    inputs = torch.as_tensor(rng.normal(size=(2, 4, 4, F)).astype("float32"))

    def host_reads(straight_through):
        quantizer = GumbelQuantizer(K, D, straight_through=straight_through, seed=3)
        quantizer(inputs, training=True)  # builds
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]
        ) as profile:
            quantizer(inputs, training=True)
        averages = profile.key_averages()
        return sum(e.count for e in averages if e.key == "aten::_local_scalar_dense")

    # The soft pass's reads (Keras seeding the Gumbel noise) are the floor.
    assert host_reads(True) == host_reads(False)


def test_soft_forward_pass_mixes_codes(rng):
    quantizer = GumbelQuantizer(K, D, temperature=1.0, seed=3)
    inputs = rng.normal(size=(2, 4, 4, F)).astype("float32")
    quantized = to_numpy(quantizer(inputs, training=True)[0]).reshape(-1, D)
    codebook = to_numpy(quantizer.codebook)
    assert np.all(quantized >= codebook.min(0) - 1e-5)
    assert np.all(quantized <= codebook.max(0) + 1e-5)
    # A mixture, not a lookup: at temperature 1 most rows lie between codes.
    assert np.median(distance_to_nearest_code(quantized, codebook)) > 1e-3


def test_straight_through_gradient_is_the_soft_gradient(rng):
    hard, hard_twin = quantizer_pair(straight_through=True)
    soft = GumbelQuantizer(K, D, seed=5)
    soft.build((None, F))
    soft.set_weights(hard.get_weights())
    inputs = rng.normal(size=(32, F)).astype("float32")
    weights = rng.normal(size=(32, D)).astype("float32")

    def loss(quantizer):
        def fn():
            quantized, _ = quantizer(inputs, training=True)
            return ops.sum(ops.convert_to_tensor(weights) * quantized)

        return fn

    hard_kernel, hard_codebook = gradients(
        loss(hard), [hard.projection.kernel, hard.codebook]
    )
    (soft_kernel,) = gradients(loss(soft), [soft.projection.kernel])
    # Same noise, same soft weights y: the encoder sees the soft gradient.
    assert np.abs(hard_kernel).max() > 0
    np.testing.assert_allclose(hard_kernel, soft_kernel, rtol=1e-4, atol=1e-6)
    # The codebook sees the one-hot forward pass: each position's weight
    # lands on its chosen code only.
    tokens = to_numpy(hard_twin(inputs, training=True)[1])
    expected = np.zeros((K, D))
    np.add.at(expected, tokens, weights)
    np.testing.assert_allclose(hard_codebook, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("straight_through", [False, True])
def test_argmax_codes_train_on_the_inference_codes_without_gradient(
    rng, straight_through
):
    quantizer = GumbelQuantizer(
        K, D, kl_weight=0.5, diversity_weight=0.5, straight_through=straight_through
    )
    quantizer.build((None, F))
    inputs = rng.normal(size=(32, F)).astype("float32")
    weights = ops.convert_to_tensor(rng.normal(size=(32, D)).astype("float32"))
    variables = [quantizer.projection.kernel, quantizer.codebook]

    def loss():
        quantized, _ = quantizer(inputs, training=True)
        return ops.sum(weights * quantized) + quantizer.losses[-1]

    assert all(np.abs(g).max() > 0 for g in gradients(loss, variables))
    inference_codes, inference_tokens = quantizer(inputs)
    quantizer.argmax_codes.assign(1.0)
    codes, tokens = quantizer(inputs, training=True)
    # What the tokenizer emits, whatever the noise and temperature.
    np.testing.assert_array_equal(to_numpy(tokens), to_numpy(inference_tokens))
    np.testing.assert_allclose(to_numpy(codes), to_numpy(inference_codes))
    assert float(to_numpy(quantizer.losses[-1])) == 0.0
    for gradient in gradients(loss, variables):
        np.testing.assert_array_equal(gradient, 0.0)


def test_temperature_and_kl_weight_are_assignable_state():
    quantizer = GumbelQuantizer(K, D, temperature=2.0, kl_weight=0.3)
    quantizer.build((None, F))
    for variable, initial in (
        (quantizer.temperature, 2.0),
        (quantizer.kl_weight, 0.3),
    ):
        assert not variable.trainable
        assert any(v is variable for v in quantizer.non_trainable_weights)
        assert all(v is not variable for v in quantizer.trainable_weights)
        assert float(to_numpy(variable)) == pytest.approx(initial)
        variable.assign(0.125)
        assert float(to_numpy(variable)) == 0.125


def test_latent_loss_is_kl_to_uniform_times_kl_weight(rng):
    quantizer = GumbelQuantizer(K, D, kl_weight=0.5)
    inputs = rng.normal(size=(3, 4, F)).astype("float32")
    quantizer(inputs)
    (loss,) = quantizer.losses
    logits = to_numpy(quantizer.projection(inputs))
    np.testing.assert_allclose(to_numpy(loss), 0.5 * numpy_kl(logits), rtol=1e-5)

    quantizer.kl_weight.assign(1.0)
    quantizer(inputs)
    (doubled,) = quantizer.losses
    np.testing.assert_allclose(to_numpy(doubled), 2 * to_numpy(loss), rtol=1e-6)


def numpy_softmax(logits):
    """Float64 softmax over the last axis, positions flattened: (N, K)."""
    logits = np.asarray(logits, "float64").reshape(-1, logits.shape[-1])
    q = np.exp(logits - logits.max(-1, keepdims=True))
    return q / q.sum(-1, keepdims=True)


def numpy_average_kl(logits):
    """KL to uniform of the softmax averaged over all positions."""
    average = numpy_softmax(logits).mean(0)
    return (average * np.log(average * len(average))).sum()


def test_diversity_term_is_kl_of_the_average_distribution(rng):
    quantizer = GumbelQuantizer(K, D, kl_weight=0.5, diversity_weight=0.25)
    inputs = rng.normal(size=(3, 4, F)).astype("float32")
    quantizer(inputs, training=True)
    (loss,) = quantizer.losses
    logits = to_numpy(quantizer.projection(inputs))
    expected = 0.5 * numpy_kl(logits) + 0.25 * numpy_average_kl(logits)
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)
    assert numpy_average_kl(logits) < numpy_kl(logits)  # two different terms


def test_diversity_term_rewards_spread_not_flat_positions(rng):
    """Confident positions on different codes: no diversity loss, though the
    per-position KL is at its maximum, log K."""
    quantizer = GumbelQuantizer(K, D, kl_weight=0.0, diversity_weight=1.0)
    quantizer.build((None, K))
    quantizer.projection.kernel.assign(50.0 * np.eye(K, dtype="float32"))
    quantizer.projection.bias.assign(np.zeros(K, "float32"))
    quantizer(np.eye(K, dtype="float32"))  # position k picks code k
    (spread,) = quantizer.losses
    assert abs(float(to_numpy(spread))) < 1e-5
    quantizer(np.eye(K, dtype="float32")[[3] * K])  # every position picks code 3
    (collapsed,) = quantizer.losses
    np.testing.assert_allclose(to_numpy(collapsed), math.log(K), rtol=1e-4)


def test_diversity_gradient_matches_numpy(rng):
    quantizer = GumbelQuantizer(K, D, kl_weight=0.0, diversity_weight=0.7)
    inputs = rng.normal(size=(24, F)).astype("float32")
    quantizer.build((None, F))

    def diversity_loss():
        logits = quantizer.projection(inputs)
        return quantizer.quantize_latents(logits)[2]

    (kernel_gradient,) = gradients(diversity_loss, [quantizer.projection.kernel])
    # d/dlogit_nj of KL(p || uniform), p = mean_n q_n:
    # q_nj (log p_j - sum_k q_nk log p_k) / N.
    q = numpy_softmax(to_numpy(quantizer.projection(inputs)))
    log_p = np.log(q.mean(0))
    logit_gradient = q * (log_p - (q * log_p).sum(-1, keepdims=True)) / len(q)
    expected = 0.7 * inputs.astype("float64").T @ logit_gradient
    np.testing.assert_allclose(kernel_gradient, expected, rtol=1e-4, atol=1e-8)


def codes_used_after_training(diversity_weight, num_embeddings=64):
    """Codes in use after fitting a Gumbel bottleneck and a linear decoder to
    reconstruct 512 fixed Gaussian vectors (60 Adam steps, no KL term)."""
    features = np.random.default_rng(0).normal(size=(512, F)).astype("float32")
    quantizer = GumbelQuantizer(
        num_embeddings, D, kl_weight=0.0, diversity_weight=diversity_weight, seed=0
    )
    inputs = keras.Input((F,))
    quantized, _ = quantizer(inputs)
    model = keras.Model(inputs, keras.layers.Dense(F)(quantized))
    model.compile(keras.optimizers.Adam(2e-2), loss="mse")
    model.fit(features, features, batch_size=128, epochs=15, verbose=0)
    return len(np.unique(to_numpy(quantizer.tokenize(features))))


def test_diversity_term_keeps_codes_in_use_where_reconstruction_alone_collapses():
    # Measured on the three backends: 21-31 of 64 codes without the term,
    # 58-63 with weight 1.
    assert codes_used_after_training(0.0) <= 40
    assert codes_used_after_training(1.0) >= 52


def collapsed_quantizer(balance_rate, inputs):
    """A quantizer whose projection bias makes code 0 every position's argmax
    by a margin of 5."""
    quantizer = GumbelQuantizer(K, D, balance_rate=balance_rate, seed=0)
    quantizer(inputs)
    quantizer.projection.bias.assign(5.0 * np.eye(K, dtype="float32")[0])
    return quantizer


def test_balance_revives_every_code_of_a_collapsed_quantizer(rng):
    inputs = rng.normal(size=(64, F)).astype("float32")
    codes_used = {}
    for rate in (0.0, 0.1):
        quantizer = collapsed_quantizer(rate, inputs)
        assert len(np.unique(to_numpy(quantizer.tokenize(inputs)))) == 1
        for _ in range(60):
            quantizer(inputs, training=True)
        codes_used[rate] = len(np.unique(to_numpy(quantizer.tokenize(inputs))))
    # Measured: 1 and 16 of 16 codes on the three backends (16 after 30
    # steps already).
    assert codes_used == {0.0: 1, 0.1: K}


def test_balance_step_matches_numpy(rng):
    inputs = rng.normal(size=(40, F)).astype("float32")
    quantizer = GumbelQuantizer(K, D, balance_rate=0.1, seed=0)
    quantizer(inputs)
    offset = rng.normal(size=K).astype("float32")
    quantizer.logit_offset.assign(offset)
    logits = to_numpy(quantizer.projection(inputs)) + offset
    share = np.bincount(logits.argmax(-1), minlength=K) / len(inputs)
    # Codes over the even share 1/K step down, those under it up; the step is
    # centred.
    step = np.sign(1.0 / K - share)
    expected = offset + 0.1 * (step - step.mean())
    _, tokens = quantizer(inputs, training=True)
    np.testing.assert_allclose(to_numpy(quantizer.logit_offset), expected, atol=1e-6)
    # Inference after the step takes the argmax with the new offset.
    np.testing.assert_array_equal(
        to_numpy(quantizer(inputs)[1]),
        np.argmax(to_numpy(quantizer.projection(inputs)) + expected, axis=-1),
    )
    assert tuple(tokens.shape) == (40,)


def test_offset_takes_part_in_inference_and_freezes_with_argmax_codes(rng):
    inputs = rng.normal(size=(32, F)).astype("float32")
    quantizer = GumbelQuantizer(K, D, balance_rate=0.1, seed=0)
    quantizer(inputs)
    offset = 3.0 * np.eye(K, dtype="float32")[7]
    quantizer.logit_offset.assign(offset)
    logits = to_numpy(quantizer.projection(inputs)) + offset
    np.testing.assert_array_equal(
        to_numpy(quantizer.tokenize(inputs)), logits.argmax(-1)
    )
    np.testing.assert_array_equal(to_numpy(quantizer(inputs)[1]), logits.argmax(-1))
    # Inference leaves it alone; so does training in the decoder-only phase.
    np.testing.assert_array_equal(to_numpy(quantizer.logit_offset), offset)
    quantizer.argmax_codes.assign(1.0)
    quantizer(inputs, training=True)
    np.testing.assert_array_equal(to_numpy(quantizer.logit_offset), offset)
    quantizer.argmax_codes.assign(0.0)
    quantizer(inputs, training=True)
    assert not np.array_equal(to_numpy(quantizer.logit_offset), offset)


def test_without_balance_the_offset_stays_zero(rng):
    inputs = rng.normal(size=(32, F)).astype("float32")
    quantizer = GumbelQuantizer(K, D, seed=0)
    for _ in range(3):
        quantizer(inputs, training=True)
    np.testing.assert_array_equal(to_numpy(quantizer.logit_offset), 0.0)


@pytest.mark.parametrize("saved_later", [(), (0.6,), (0.6, 0.0), (0.6, 0.0, 0.25)])
def test_models_saved_before_the_later_variables_load(rng, saved_later):
    quantizer = GumbelQuantizer(
        K, D, temperature=0.7, kl_weight=0.2, diversity_weight=0.1
    )
    quantizer.build((None, F))
    quantizer.argmax_codes.assign(1.0)
    quantizer.logit_offset.assign(np.full(K, 0.5, "float32"))
    quantizer.iterations.assign(7)
    # The stores of files written before `iterations`, `logit_offset`,
    # `argmax_codes` and `diversity_weight` existed: each lacks the variables
    # added after it.
    codebook = rng.normal(size=(K, D)).astype("float32")
    old_store = {"0": codebook, "1": np.float32(0.9), "2": np.float32(0.3)}
    for index, value in enumerate(saved_later, start=3):
        shape = (K,) if index == 5 else ()  # the offset has one per code
        old_store[f"{index}"] = np.full(shape, value, "float32")
    quantizer.load_own_variables(old_store)
    np.testing.assert_array_equal(to_numpy(quantizer.codebook), codebook)
    assert float(to_numpy(quantizer.temperature)) == pytest.approx(0.9)
    assert float(to_numpy(quantizer.kl_weight)) == pytest.approx(0.3)
    assert float(to_numpy(quantizer.diversity_weight)) == pytest.approx(
        saved_later[0] if saved_later else 0.1
    )
    # Variables the file lacks are left as they were.
    argmax_codes = saved_later[1] if len(saved_later) > 1 else 1.0
    assert float(to_numpy(quantizer.argmax_codes)) == argmax_codes
    offset = saved_later[2] if len(saved_later) > 2 else 0.5
    np.testing.assert_array_equal(to_numpy(quantizer.logit_offset), offset)
    assert int(to_numpy(quantizer.iterations)) == 7
    with pytest.raises(ValueError, match="expected 7 variables"):
        quantizer.load_own_variables({"0": codebook})


FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "saved")


@pytest.mark.parametrize("name", ["gumbel", "dalle"])
def test_files_saved_before_the_step_count_load_without_schedules(name):
    model = keras.models.load_model(os.path.join(FIXTURES, f"{name}.keras"))
    quantizer = model.quantizer
    assert quantizer.temperature_schedule is None
    assert quantizer.kl_weight_schedule is None
    assert int(to_numpy(quantizer.iterations)) == 0
    # The saved temperature is kept, and holds still without a schedule.
    temperature = float(to_numpy(quantizer.temperature))
    x = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    assert int(to_numpy(quantizer.iterations)) == 1
    assert float(to_numpy(quantizer.temperature)) == temperature


def test_kl_is_zero_for_uniform_logits(rng):
    quantizer = GumbelQuantizer(K, D, kl_weight=1.0)
    quantizer.build((None, F))
    quantizer.projection.kernel.assign(np.zeros((F, K), "float32"))
    quantizer.projection.bias.assign(np.zeros(K, "float32"))
    quantizer(rng.normal(size=(8, F)).astype("float32"))
    (loss,) = quantizer.losses
    assert abs(float(to_numpy(loss))) < 1e-6


def test_kl_is_log_k_for_peaked_logits(rng):
    quantizer = GumbelQuantizer(K, D, kl_weight=1.0)
    quantizer.build((None, F))
    quantizer.projection.kernel.assign(np.zeros((F, K), "float32"))
    quantizer.projection.bias.assign(50.0 * np.eye(K, dtype="float32")[3])
    _, tokens = quantizer(rng.normal(size=(8, F)).astype("float32"))
    (loss,) = quantizer.losses
    np.testing.assert_allclose(to_numpy(loss), math.log(K), rtol=1e-4)
    np.testing.assert_array_equal(to_numpy(tokens), 3)


def test_lower_temperature_gives_outputs_closer_to_codes(rng):
    cold, hot = quantizer_pair()
    cold.temperature.assign(0.02)
    hot.temperature.assign(5.0)
    inputs = rng.normal(size=(64, F)).astype("float32")
    codebook = to_numpy(cold.codebook)
    cold_distance = distance_to_nearest_code(
        to_numpy(cold(inputs, training=True)[0]), codebook
    )
    hot_distance = distance_to_nearest_code(
        to_numpy(hot(inputs, training=True)[0]), codebook
    )
    assert cold_distance.mean() < 0.25 * hot_distance.mean()
    assert np.median(cold_distance) < 1e-2


def test_mixed_precision_keeps_logits_and_codebook_in_float32(mixed_bfloat16, rng):
    quantizer = GumbelQuantizer(K, D, seed=0)
    inputs = rng.normal(size=(2, 4, 4, F)).astype("float32")
    quantized, tokens = quantizer(inputs, training=True)
    assert quantizer.compute_dtype == "bfloat16"
    assert quantizer.codebook.dtype == "float32"
    assert quantizer.projection.compute_dtype == "float32"
    assert keras.backend.standardize_dtype(quantized.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(tokens.dtype) == "int32"
    _, inference_tokens = quantizer(inputs)
    logits = to_numpy(quantizer.projection(inputs))
    np.testing.assert_array_equal(to_numpy(inference_tokens), logits.argmax(-1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_embeddings": 0}, "num_embeddings=0"),
        ({"embedding_dim": -1}, "embedding_dim=-1"),
        ({"embedding_dim": "4"}, "embedding_dim='4'"),
        ({"temperature": 0}, "temperature=0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"kl_weight": -1}, "kl_weight=-1"),
        ({"kl_weight": float("inf")}, "kl_weight=inf"),
        ({"diversity_weight": -0.1}, "diversity_weight=-0.1"),
        ({"balance_rate": -0.01}, "balance_rate=-0.01"),
        ({"temperature_schedule": 0.5}, "temperature_schedule=0.5"),
        ({"kl_weight_schedule": "cosine"}, "kl_weight_schedule='cosine'"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GumbelQuantizer(**kwargs)
