import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.layers import VectorQuantizer
from keras_dvq.layers import vector_quantizer
from tests.testing import gradients
from tests.testing import run_layer_test

K, D = 8, 4


def identity_quantizer(num_embeddings=K, embedding_dim=D, **kwargs):
    """A built quantizer whose projection is the identity, so `z_e == inputs`."""
    quantizer = VectorQuantizer(num_embeddings, embedding_dim, **kwargs)
    quantizer.build((None, embedding_dim))
    quantizer.projection.kernel.assign(np.eye(embedding_dim, dtype="float32"))
    quantizer.projection.bias.assign(np.zeros(embedding_dim, dtype="float32"))
    return quantizer


def numpy_tokens(z, codebook):
    z = np.asarray(z, "float64").reshape(-1, codebook.shape[1])
    codebook = np.asarray(codebook, "float64")
    distances = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    return distances.argmin(axis=1)


def to_numpy(x):
    return ops.convert_to_numpy(x)


def smoothed(cluster_size, epsilon):
    total = cluster_size.sum()
    return (cluster_size + epsilon) / (total + len(cluster_size) * epsilon) * total


EMA_CASES = [False, True]


@pytest.mark.parametrize("use_ema", EMA_CASES)
def test_layer(use_ema, tmp_path):
    run_layer_test(
        VectorQuantizer,
        {"num_embeddings": K, "embedding_dim": D, "use_ema": use_ema, "seed": 3},
        input_shape=(2, 4, 4, 8),
        expected_output_shape=((2, 4, 4, D), (2, 4, 4)),
        tmp_path=tmp_path,
        expected_num_trainable_weights=2 if use_ema else 3,
    )


def test_config_round_trip_keeps_every_argument():
    quantizer = VectorQuantizer(
        num_embeddings=12,
        embedding_dim=3,
        commitment_cost=0.5,
        latent_loss_weight=2.0,
        use_ema=True,
        ema_decay=0.9,
        ema_epsilon=1e-3,
        dead_code_threshold=0.25,
        codebook_initializer=keras.initializers.RandomUniform(-2.0, 2.0),
        seed=7,
        name="vq",
    )
    revived = VectorQuantizer.from_config(quantizer.get_config())
    for name in (
        "num_embeddings",
        "embedding_dim",
        "commitment_cost",
        "latent_loss_weight",
        "use_ema",
        "ema_decay",
        "ema_epsilon",
        "dead_code_threshold",
        "seed",
        "name",
    ):
        assert getattr(revived, name) == getattr(quantizer, name), name
    assert isinstance(revived.codebook_initializer, keras.initializers.RandomUniform)
    assert revived.codebook_initializer.get_config() == (
        quantizer.codebook_initializer.get_config()
    )
    assert revived.get_config() == quantizer.get_config()


def test_tokens_are_int32_nearest_codes(rng):
    quantizer = VectorQuantizer(num_embeddings=16, embedding_dim=D)
    inputs = rng.normal(size=(2, 5, 3, 8)).astype("float32")
    quantized, tokens = quantizer(inputs)
    assert tuple(quantized.shape) == (2, 5, 3, D)
    assert tuple(tokens.shape) == (2, 5, 3)
    assert keras.backend.standardize_dtype(tokens.dtype) == "int32"

    codebook = to_numpy(quantizer.codebook)
    z_e = to_numpy(quantizer.project(inputs))
    expected = numpy_tokens(z_e, codebook).reshape(2, 5, 3)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(to_numpy(tokens), expected)
    np.testing.assert_array_equal(to_numpy(quantizer.tokenize(inputs)), expected)
    np.testing.assert_allclose(to_numpy(quantized), codebook[expected], atol=1e-6)
    np.testing.assert_array_equal(
        to_numpy(quantizer.lookup(ops.convert_to_tensor(expected, "int32"))),
        codebook[expected],
    )


def test_straight_through_gradient_is_the_identity(rng):
    quantizer = identity_quantizer()
    z_e = keras.Variable(rng.normal(size=(6, D)), dtype="float32", name="z_e")
    weights = ops.convert_to_tensor(rng.normal(size=(6, D)), "float32")

    def decoder_loss():
        quantized, _ = quantizer(ops.convert_to_tensor(z_e))
        return ops.sum(weights * quantized)

    grad_z, grad_codebook = gradients(decoder_loss, [z_e, quantizer.codebook])
    np.testing.assert_array_equal(grad_z, to_numpy(weights))
    # The decoder's gradient trains the encoder only; the codebook learns
    # from the latent loss.
    np.testing.assert_array_equal(grad_codebook, np.zeros((K, D)))


def latent_loss_gradients(quantizer, z_e, variables):
    def latent_loss():
        quantizer(ops.convert_to_tensor(z_e))
        return sum(quantizer.losses)

    return gradients(latent_loss, variables)


def expected_codebook_gradient(z, codebook, weight):
    """d/dE of weight * mean((sg[z] - E[tokens])^2)."""
    tokens = numpy_tokens(z, codebook)
    grad = np.zeros_like(codebook, dtype="float64")
    np.add.at(grad, tokens, 2.0 * weight * (codebook[tokens] - z) / z.size)
    return grad, tokens


def test_codebook_term_moves_codes_towards_encoder_outputs(rng):
    weight = 2.0
    quantizer = identity_quantizer(commitment_cost=0.0, latent_loss_weight=weight)
    z = rng.normal(size=(32, D)).astype("float32")
    z_e = keras.Variable(z, name="z_e")
    codebook = to_numpy(quantizer.codebook)

    grad_z, grad_codebook = latent_loss_gradients(
        quantizer, z_e, [z_e, quantizer.codebook]
    )
    # Without the commitment term nothing reaches the encoder.
    np.testing.assert_array_equal(grad_z, np.zeros_like(z))
    expected, tokens = expected_codebook_gradient(z, codebook, weight)
    np.testing.assert_allclose(grad_codebook, expected, rtol=1e-5, atol=1e-7)

    # One SGD step on the latent loss pulls the chosen codes towards z_e.
    quantizer.codebook.assign(codebook - 1.0 * grad_codebook)
    updated = to_numpy(quantizer.codebook)
    before = ((codebook[tokens] - z) ** 2).sum()
    after = ((updated[tokens] - z) ** 2).sum()
    assert after < before


@pytest.mark.parametrize("use_ema", [False, True])
def test_commitment_term_reaches_only_the_encoder(use_ema, rng):
    weight, beta = 3.0, 0.25
    quantizer = identity_quantizer(
        commitment_cost=beta, latent_loss_weight=weight, use_ema=use_ema
    )
    z = rng.normal(size=(32, D)).astype("float32")
    z_e = keras.Variable(z, name="z_e")
    codebook = to_numpy(quantizer.codebook)
    tokens = numpy_tokens(z, codebook)

    grad_z, grad_codebook, grad_kernel = latent_loss_gradients(
        quantizer, z_e, [z_e, quantizer.codebook, quantizer.projection.kernel]
    )
    # beta * |z_e - sg[e]|^2: the encoder is pulled towards its code ...
    expected_z = 2.0 * weight * beta * (z - codebook[tokens]) / z.size
    np.testing.assert_allclose(grad_z, expected_z, rtol=1e-5, atol=1e-7)
    assert np.abs(grad_kernel).max() > 0
    # ... while the codebook sees only the unweighted codebook term (none
    # with EMA): beta must not scale it.
    if use_ema:
        np.testing.assert_array_equal(grad_codebook, np.zeros((K, D)))
    else:
        expected_codebook, _ = expected_codebook_gradient(z, codebook, weight)
        np.testing.assert_allclose(
            grad_codebook, expected_codebook, rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("use_ema", [False, True])
def test_latent_loss_value(use_ema, rng):
    weight, beta = 10.0, 0.25
    quantizer = VectorQuantizer(
        K, D, commitment_cost=beta, latent_loss_weight=weight, use_ema=use_ema
    )
    inputs = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    quantizer(inputs)
    (loss,) = quantizer.losses
    z = to_numpy(quantizer.project(inputs)).reshape(-1, D)
    codebook = to_numpy(quantizer.codebook)
    mse = ((z - codebook[numpy_tokens(z, codebook)]) ** 2).mean()
    factor = beta if use_ema else 1.0 + beta
    np.testing.assert_allclose(to_numpy(loss), weight * factor * mse, rtol=1e-5)


def test_codebook_is_trainable_only_without_ema():
    plain = identity_quantizer()
    ema = identity_quantizer(use_ema=True)
    assert plain.codebook.trainable
    assert any(v is plain.codebook for v in plain.trainable_weights)
    assert not ema.codebook.trainable
    assert all(v is not ema.codebook for v in ema.trainable_weights)
    assert not ema.ema_cluster_size.trainable
    assert not ema.ema_embedding_sum.trainable


def test_ema_update_follows_the_moving_average_formulas(rng):
    decay, epsilon = 0.9, 1e-5
    quantizer = identity_quantizer(use_ema=True, ema_decay=decay, ema_epsilon=epsilon)
    codebook = to_numpy(quantizer.codebook).astype("float64")
    z = (codebook[rng.integers(0, K, 64)] + rng.normal(size=(64, D))).astype("float32")
    tokens = numpy_tokens(z, codebook)
    counts = np.bincount(tokens, minlength=K)
    sums = np.zeros((K, D))
    np.add.at(sums, tokens, z)

    # Inference leaves the moving averages alone.
    quantizer(z, training=False)
    np.testing.assert_array_equal(to_numpy(quantizer.codebook), codebook)
    np.testing.assert_array_equal(to_numpy(quantizer.ema_cluster_size), np.ones(K))

    quantizer(z, training=True)
    cluster_size = decay * 1.0 + (1 - decay) * counts
    embedding_sum = decay * codebook + (1 - decay) * sums
    expected = embedding_sum / smoothed(cluster_size, epsilon)[:, None]
    np.testing.assert_allclose(
        to_numpy(quantizer.ema_cluster_size), cluster_size, rtol=1e-6
    )
    np.testing.assert_allclose(
        to_numpy(quantizer.ema_embedding_sum), embedding_sum, rtol=1e-5, atol=1e-6
    )
    updated = to_numpy(quantizer.codebook)
    np.testing.assert_allclose(updated, expected, rtol=1e-5, atol=1e-6)
    # The invariant codebook == sum / smoothed(count) holds on the layer state.
    np.testing.assert_allclose(
        updated,
        to_numpy(quantizer.ema_embedding_sum)
        / smoothed(to_numpy(quantizer.ema_cluster_size), epsilon)[:, None],
        rtol=1e-5,
        atol=1e-6,
    )
    # Every used code moved towards the mean of the inputs assigned to it.
    used = counts > 0
    assert used.sum() > 1
    means = sums[used] / counts[used, None]
    before = np.linalg.norm(codebook[used] - means, axis=1)
    after = np.linalg.norm(updated[used] - means, axis=1)
    assert np.all(after < before)


def is_row_of(codes, rows, atol=1e-4):
    distances = np.abs(codes[:, None, :] - rows[None, :, :]).max(-1)
    return distances.min(axis=1) < atol


def test_dead_code_restart_reseeds_every_code_from_the_batch(rng):
    quantizer = identity_quantizer(
        num_embeddings=16, use_ema=True, dead_code_threshold=1e6, seed=1
    )
    z = rng.normal(loc=5.0, size=(40, D)).astype("float32")
    quantizer(z, training=True)
    codebook = to_numpy(quantizer.codebook)
    assert np.all(is_row_of(codebook, z, atol=1e-5 * np.abs(z).max()))
    np.testing.assert_allclose(to_numpy(quantizer.ema_cluster_size), 1e6)


def test_dead_code_restart_replaces_only_unused_codes(rng):
    decay, epsilon, threshold = 0.99, 1e-5, 0.995
    quantizer = identity_quantizer(
        num_embeddings=16,
        use_ema=True,
        ema_decay=decay,
        ema_epsilon=epsilon,
        dead_code_threshold=threshold,
        seed=1,
    )
    codebook = to_numpy(quantizer.codebook).astype("float64")
    # Inputs near the first four codes only: the other twelve go unused and
    # their moving-average count decays to 0.99 < threshold.
    z = (codebook[rng.integers(0, 4, 48)] + 0.01 * rng.normal(size=(48, D))).astype(
        "float32"
    )
    tokens = numpy_tokens(z, codebook)
    counts = np.bincount(tokens, minlength=16)
    used = counts > 0
    assert 0 < used.sum() <= 4

    quantizer(z, training=True)
    sums = np.zeros((16, D))
    np.add.at(sums, tokens, z)
    cluster_size = np.where(used, decay + (1 - decay) * counts, threshold)
    np.testing.assert_allclose(
        to_numpy(quantizer.ema_cluster_size), cluster_size, rtol=1e-6
    )
    updated = to_numpy(quantizer.codebook)
    expected_used = (decay * codebook + (1 - decay) * sums)[used] / smoothed(
        cluster_size, epsilon
    )[used, None]
    np.testing.assert_allclose(updated[used], expected_used, rtol=1e-5, atol=1e-6)
    assert np.all(is_row_of(updated[~used], z))


def test_zero_dead_code_threshold_restarts_nothing(rng):
    decay = 0.99
    quantizer = identity_quantizer(
        num_embeddings=16, use_ema=True, ema_decay=decay, dead_code_threshold=0.0
    )
    codebook = to_numpy(quantizer.codebook)
    z = (codebook[:2].repeat(20, axis=0) + 0.01 * rng.normal(size=(40, D))).astype(
        "float32"
    )
    quantizer(z, training=True)
    unused = np.bincount(numpy_tokens(z, codebook), minlength=16) == 0
    assert unused.sum() >= 14
    np.testing.assert_allclose(
        to_numpy(quantizer.ema_cluster_size)[unused], decay, rtol=1e-6
    )
    updated = to_numpy(quantizer.codebook)
    # Unused codes only shrink by the smoothing, they are not re-seeded.
    np.testing.assert_allclose(updated[unused], codebook[unused], rtol=0.02)
    assert not np.any(is_row_of(updated[unused], z, atol=1e-3))


@pytest.mark.parametrize("use_ema", [False, True])
def test_set_codebook(use_ema, rng):
    quantizer = identity_quantizer(use_ema=use_ema)
    if use_ema:
        quantizer(rng.normal(size=(16, D)).astype("float32"), training=True)
    codes = rng.normal(size=(K, D)).astype("float32")
    quantizer.set_codebook(codes)
    np.testing.assert_array_equal(to_numpy(quantizer.codebook), codes)
    if use_ema:
        np.testing.assert_array_equal(to_numpy(quantizer.ema_cluster_size), 1.0)
        np.testing.assert_array_equal(to_numpy(quantizer.ema_embedding_sum), codes)
    # The lookup uses the new codes at once.
    z = codes[[3, 1, 6]] + 1e-3
    np.testing.assert_array_equal(to_numpy(quantizer.tokenize(z)), [3, 1, 6])


def test_set_codebook_rejects_wrong_shapes():
    quantizer = identity_quantizer()
    with pytest.raises(ValueError, match=r"shape \(8, 4\).*\(8, 5\)"):
        quantizer.set_codebook(np.zeros((K, D + 1)))
    with pytest.raises(ValueError, match=r"shape \(8, 4\).*\(4, 8\)"):
        quantizer.set_codebook(np.zeros((D, K)))


@pytest.mark.parametrize("use_ema", [False, True])
def test_mixed_precision_keeps_the_lookup_in_float32(use_ema, mixed_bfloat16, rng):
    num_embeddings, dim = 64, 8
    mixed = identity_quantizer(num_embeddings, dim, use_ema=use_ema)
    reference = identity_quantizer(num_embeddings, dim, dtype="float32")
    assert mixed.compute_dtype == "bfloat16"
    assert reference.compute_dtype == "float32"
    reference.codebook.assign(mixed.codebook.value)
    # Multiples of 1/16 in [-2, 2] are exact in bfloat16, so both layers see
    # the same z_e and only the precision of the search could differ.
    inputs = (rng.integers(-32, 33, size=(512, dim)) / 16).astype("float32")

    quantized, tokens = mixed(inputs, training=True)
    _, expected = reference(inputs)
    assert mixed.codebook.dtype == "float32"
    assert keras.backend.standardize_dtype(quantized.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(tokens.dtype) == "int32"
    np.testing.assert_array_equal(to_numpy(tokens), to_numpy(expected))
    if use_ema:
        assert mixed.ema_cluster_size.dtype == "float32"
        assert mixed.ema_embedding_sum.dtype == "float32"
        assert not np.array_equal(
            to_numpy(mixed.codebook), to_numpy(reference.codebook)
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_embeddings": 0}, "num_embeddings=0"),
        ({"num_embeddings": 2.5}, "num_embeddings=2.5"),
        ({"embedding_dim": -1}, "embedding_dim=-1"),
        ({"commitment_cost": -1}, "commitment_cost=-1"),
        ({"latent_loss_weight": float("nan")}, "latent_loss_weight=nan"),
        ({"ema_decay": 1.5}, "ema_decay=1.5"),
        ({"ema_decay": 0}, "ema_decay=0"),
        ({"ema_epsilon": 0}, "ema_epsilon=0"),
        ({"dead_code_threshold": -1, "use_ema": True}, "dead_code_threshold=-1"),
        ({"dead_code_threshold": 2.0}, "dead_code_threshold=2.0.*use_ema=False"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**kwargs)


@pytest.mark.parametrize("use_ema", EMA_CASES)
def test_fit_one_step(use_ema, rng):
    images = rng.uniform(size=(8, 4, 4, 6)).astype("float32")
    inputs = keras.Input((4, 4, 6))
    quantizer = VectorQuantizer(K, D, use_ema=use_ema, name="quantizer")
    quantized, _ = quantizer(inputs)
    model = keras.Model(inputs, keras.layers.Dense(6)(quantized))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    codebook = to_numpy(quantizer.codebook)

    history = model.fit(images, images, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    updated = to_numpy(quantizer.codebook)
    assert not np.allclose(updated, codebook)
    if use_ema:
        # Moved by the moving averages inside the compiled step, not by the
        # optimizer.
        np.testing.assert_allclose(
            updated,
            to_numpy(quantizer.ema_embedding_sum)
            / smoothed(to_numpy(quantizer.ema_cluster_size), 1e-5)[:, None],
            rtol=1e-5,
            atol=1e-6,
        )
        assert 0 < to_numpy(quantizer.ema_cluster_size).min()


def test_equally_near_codes_go_to_the_lowest_index(rng):
    """Duplicated codes (k-means or restarts can make them) tie exactly: the
    search keeps the first, as NumPy's argmin does, on every backend."""
    quantizer = identity_quantizer(num_embeddings=8)
    codebook = rng.normal(size=(8, D)).astype("float32")
    codebook[[2, 5, 6]] = codebook[1]
    codebook[7] = codebook[3]
    quantizer.set_codebook(codebook)
    inputs = np.concatenate([codebook, codebook + 1e-3, codebook[::-1]])
    expected = numpy_tokens(inputs, codebook)
    assert set(expected) == {0, 1, 3, 4}
    np.testing.assert_array_equal(to_numpy(quantizer.tokenize(inputs)), expected)


@pytest.mark.parametrize("block_rows", [7, 45, 46])
def test_search_in_blocks_finds_the_nearest_codes(monkeypatch, block_rows, rng):
    """Searches of more rows than `SEARCH_BLOCK_ELEMENTS / K` go block by
    block (45 rows: 7 blocks of 7, the last padded; 1 block; less than 1)."""
    monkeypatch.setattr(vector_quantizer, "SEARCH_BLOCK_ELEMENTS", 16 * block_rows)
    quantizer = identity_quantizer(num_embeddings=16)
    assert quantizer.search_block_rows == block_rows
    inputs = rng.normal(size=(3, 5, 3, D)).astype("float32")
    quantized, tokens = quantizer(inputs)
    codebook = to_numpy(quantizer.codebook)
    expected = numpy_tokens(inputs, codebook).reshape(3, 5, 3)
    assert len(np.unique(expected)) > 4
    np.testing.assert_array_equal(to_numpy(tokens), expected)
    np.testing.assert_allclose(to_numpy(quantized), codebook[expected], atol=1e-6)


def test_fit_with_search_in_blocks_matches_one_search(monkeypatch, rng):
    """Inside the compiled training step (10 images at batch 8: a full and a
    partial batch), the blocked search gives the same EMA codebook."""
    images = rng.uniform(size=(10, 4, 4, 6)).astype("float32")
    codebooks = []
    for block_elements in (vector_quantizer.SEARCH_BLOCK_ELEMENTS, K * 5):
        monkeypatch.setattr(vector_quantizer, "SEARCH_BLOCK_ELEMENTS", block_elements)
        keras.utils.set_random_seed(1)
        inputs = keras.Input((4, 4, 6))
        quantized, _ = VectorQuantizer(K, D, use_ema=True, name="quantizer")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(6)(quantized))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(images, images, batch_size=8, epochs=2, shuffle=False, verbose=0)
        codebooks.append(to_numpy(model.get_layer("quantizer").codebook))
    assert not np.allclose(codebooks[0], 0.0)
    np.testing.assert_allclose(codebooks[1], codebooks[0], rtol=1e-5, atol=1e-6)


def test_fit_after_set_codebook(rng):
    images = rng.uniform(size=(8, 6)).astype("float32")
    inputs = keras.Input((6,))
    quantizer = VectorQuantizer(K, D, use_ema=True)
    model = keras.Model(inputs, quantizer(inputs)[0])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    # An eager training step first, so that only `set_codebook` is exercised.
    quantizer(images, training=True)
    codes = rng.normal(size=(K, D)).astype("float32")
    quantizer.set_codebook(codes)

    model.fit(images, np.zeros((8, D), "float32"), batch_size=8, verbose=0)
    assert not np.allclose(to_numpy(quantizer.codebook), codes)
    assert not np.array_equal(to_numpy(quantizer.ema_cluster_size), np.ones(K))


def test_cosine_codes_pick_the_most_similar_direction(rng):
    quantizer = identity_quantizer(use_cosine_sim=True)
    codebook = rng.normal(size=(K, D)).astype("float32")
    quantizer.codebook.assign(codebook * rng.uniform(0.1, 10, size=(K, 1)))
    z = rng.normal(size=(50, D)).astype("float32")
    quantized, tokens = quantizer(z)
    unit_codes = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
    unit_z = z / np.linalg.norm(z, axis=1, keepdims=True)
    # Nearest on the sphere is most similar in cosine, whatever the codes'
    # lengths in the codebook variable.
    np.testing.assert_array_equal(
        to_numpy(tokens), (unit_z @ unit_codes.T).argmax(axis=1)
    )
    np.testing.assert_allclose(
        to_numpy(quantized), unit_codes[to_numpy(tokens)], atol=1e-5
    )


def test_cosine_latent_loss_compares_unit_vectors(rng):
    quantizer = identity_quantizer(
        use_cosine_sim=True, commitment_cost=0.5, latent_loss_weight=1.0
    )
    z = rng.normal(size=(20, D)).astype("float32") * 7.0
    _, tokens = quantizer(z, training=True)
    codes = to_numpy(quantizer.codebook)
    unit_codes = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    unit_z = z / np.linalg.norm(z, axis=1, keepdims=True)
    error = np.mean((unit_z - unit_codes[to_numpy(tokens)]) ** 2)
    np.testing.assert_allclose(to_numpy(quantizer.losses[0]), 1.5 * error, rtol=1e-4)


def numpy_rotation_gradient(z, e, upstream):
    """lambda R^T g with R = I - 2 r r^T + 2 e_hat z_hat^T, per row."""
    rows = []
    for zi, ei, gi in zip(z, e, upstream, strict=True):
        u, t = zi / np.linalg.norm(zi), ei / np.linalg.norm(ei)
        r = (u + t) / np.linalg.norm(u + t)
        rotation = np.eye(len(zi)) - 2 * np.outer(r, r) + 2 * np.outer(t, u)
        np.testing.assert_allclose(rotation @ u, t, atol=1e-6)  # it is the map
        rows.append(np.linalg.norm(ei) / np.linalg.norm(zi) * rotation.T @ gi)
    return np.array(rows)


def test_rotation_trick_forward_is_the_code_and_gradient_rotates(rng):
    quantizer = identity_quantizer(rotation_trick=True, latent_loss_weight=0.0)
    z = rng.normal(size=(12, D)).astype("float32")
    upstream = rng.normal(size=(12, D)).astype("float32")
    quantized, tokens = quantizer(z)
    codes = to_numpy(quantizer.codebook)[to_numpy(tokens)]
    np.testing.assert_allclose(to_numpy(quantized), codes, atol=1e-5)
    (kernel_grad,) = gradients(
        lambda: ops.sum(
            quantizer(ops.convert_to_tensor(z))[0] * ops.convert_to_tensor(upstream)
        ),
        [quantizer.projection.kernel],
    )
    # With an identity projection, dL/dkernel = z^T (dL/dz).
    expected = z.T.astype("float64") @ numpy_rotation_gradient(
        z.astype("float64"), codes.astype("float64"), upstream.astype("float64")
    )
    np.testing.assert_allclose(kernel_grad, expected, rtol=1e-4, atol=1e-5)
    # Unlike the straight-through identity.
    assert not np.allclose(kernel_grad, z.T @ upstream, rtol=1e-2)


def test_rotation_of_a_vector_onto_its_opposite_is_defined():
    from keras_dvq.layers.vector_quantizer import rotate_to

    vectors = np.array([[1.0, 2.0, 0.5]], "float32")
    result = to_numpy(rotate_to(ops.convert_to_tensor(vectors), -3.0 * vectors))
    np.testing.assert_allclose(result, -3.0 * vectors, rtol=1e-4)
    assert np.isfinite(result).all()
