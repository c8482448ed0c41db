"""What the benchmark measures and at which sizes (full and `--quick`).

No Keras here: the parent process imports this and must stay free of any
backend.
"""

import argparse

BACKENDS = ("tensorflow", "jax", "torch")
# The DALL-E dVAE as its recipe trains it: Gumbel quantizer, logit-Laplace loss.
MODELS = {
    "deepmind": {
        "vq_flavor": "vq",
        "enc_dec_flavor": "deepmind",
        "loss_flavor": "l2",
    },
    "dalle": {
        "vq_flavor": "gumbel",
        "enc_dec_flavor": "dalle",
        "loss_flavor": "logit_laplace",
    },
    # The network of recipes/vqgan-small.json with taming's quantizer recipe
    # (gradient codebook, 0.25 commitment), against diffusers' `VQModel` of
    # the same configuration (`benchmarks.reference.VQModelLoop`).
    "vqgan": {
        "vq_flavor": "vq",
        "enc_dec_flavor": "vqgan",
        "loss_flavor": "l2",
    },
}
MODELS["vqgan_k16384"] = MODELS["vqgan"]
VQGAN_RECIPE = "recipes/vqgan-small.json"
# The same network and quantizer with a large codebook, 16,384 codes of
# dimension 8 (LlamaGen's size), against a VQModel with as many codes.
VQGAN_CODEBOOKS = {"vqgan": None, "vqgan_k16384": 16384}
VQGAN_IMAGE_SIZE = 128  # without --image_size
VQGAN_SETTINGS = {
    "full": {"batch_size": 8, "warmup_steps": 1, "window_steps": 4},
    "quick": {"batch_size": 2, "warmup_steps": 1, "window_steps": 2},
}
# DALL-E's codebook size on larger images: the DeepMind VQ-VAE (stride 4)
# with 8,192 codes; the distance matrix holds batch * (size / 4)^2 * 8,192
# floats, which the code search computes in blocks (SEARCH_BLOCK_ELEMENTS).
LARGE = {"deepmind_k8192_64": 64, "deepmind_k8192_128": 128}
LARGE_SETTINGS = {
    "full": {"batch_size": 32, "warmup_steps": 2, "window_steps": 6},
    "quick": {"batch_size": 2, "warmup_steps": 1, "window_steps": 2},
}
FULL = {
    "batch_size": 128,
    "n_hid": 64,
    "warmup_steps": 4,
    "window_steps": 12,
    "rounds": 5,
    "encode_batches": 32,
    "pipeline_batches": 150,
    "usage_steps": 300,
    "fit_batch_size": 128,
    "fit_epochs": 2,
    "fit_folder_images": None,  # all of `sample`
}
QUICK = {
    "batch_size": 8,
    "n_hid": 8,
    "warmup_steps": 1,
    "window_steps": 3,
    "rounds": 2,
    "encode_batches": 2,
    "pipeline_batches": 6,
    "usage_steps": 3,
    # The whole path on a folder of 200 of `sample`'s patches (180 train):
    # 11 steps an epoch, instead of passes over all of `sample`.
    "fit_batch_size": 16,
    "fit_epochs": 2,
    "fit_folder_images": 200,
}


def settings(quick=False, batch_size=None, rounds=None, image_size=None):
    """The sizes of one run: `QUICK` or `FULL`, with the flags' overrides
    (`image_size` `None`: each model's own, 32 px, 128 for vqgan)."""
    config = dict(QUICK if quick else FULL, quick=quick, image_size=image_size)
    if batch_size:
        config["batch_size"] = config["fit_batch_size"] = batch_size
    if rounds:
        config["rounds"] = rounds
    return config


def positive_int(text):
    """An argparse type. Local, not keras_dvq.utils.cli's: importing that
    package imports keras."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
