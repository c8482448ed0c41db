"""Tiny VQVAE models and images shared by the tests of tests/models/."""

import numpy as np

from keras_dvq.models import VQVAE

K, D, N_HID = 16, 4, 8
SIZE = 16
LOG_KEYS = {"loss", "recon_loss", "latent_loss", "psnr", "perplexity", "cluster_use"}


def make_model(vq_flavor="vq", enc_dec_flavor="deepmind", loss_flavor="l2", **kw):
    return VQVAE.from_flavors(
        vq_flavor=vq_flavor,
        enc_dec_flavor=enc_dec_flavor,
        loss_flavor=loss_flavor,
        num_embeddings=K,
        embedding_dim=D,
        n_hid=N_HID,
        **kw,
    )


def make_images(count=16, size=SIZE, seed=0):
    """Smooth random images, so that the tiny models see some structure."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(count, size // 4, size // 4, 3))
    return coarse.repeat(4, axis=1).repeat(4, axis=2).astype("float32")


def fitted_model(images, **kwargs):
    model = make_model(**kwargs)
    model.compile()
    model.fit(images, batch_size=8, epochs=1, verbose=0)
    return model


def built_model(**kwargs):
    """A built, untrained model whose inference functions are not traced yet."""
    model = make_model(**kwargs)
    model.build((None, SIZE, SIZE, 3))
    return model
