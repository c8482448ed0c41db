"""scripts/convert_vqgan.py: a diffusers `VQModel` becomes a keras-dvq
`VQVAE` with the same token ids and reconstructions, on every backend; bad
directories and checkpoints give one-line errors."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from tests.testing import assert_one_line_error
from tests.testing import run_script

torch = pytest.importorskip("torch", reason="the parity checks run diffusers")
diffusers = pytest.importorskip("diffusers", reason="the parity checks run diffusers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

WEIGHTS = "diffusion_pytorch_model.safetensors"
SIZE = 16
# Two levels (stride 2), attention at the second and in the middles.
CONFIG = {
    "block_out_channels": (16, 32),
    "down_block_types": ("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    "layers_per_block": 1,
    "latent_channels": 4,
    "num_vq_embeddings": 16,
    "vq_embed_dim": 3,
    "norm_num_groups": 8,
    "sample_size": SIZE,
}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((3, SIZE, SIZE, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images):
    """A random diffusers VQModel saved in tmp, and its ids and decoder output
    on `images`."""
    torch.manual_seed(0)
    model = diffusers.VQModel(**CONFIG).eval()
    pixels = torch.from_numpy(((images - 0.5) * 2.0).transpose(0, 3, 1, 2))
    with torch.no_grad():
        latents = model.encode(pixels).latents
        # A codebook of encoder outputs, so that the ids vary (diffusers'
        # initial codebook is near zero: one code would win everywhere).
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        picks = torch.randperm(flat.shape[0])[: CONFIG["num_vq_embeddings"]]
        model.quantize.embedding.weight.copy_(flat[picks])
        _, _, (_, _, ids) = model.quantize(latents)
        decoded = model.decode(latents).sample
    directory = tmp_path_factory.mktemp("diffusers") / "vqgan"
    model.save_pretrained(directory)
    grid = (len(images), SIZE // 2, SIZE // 2)
    return {
        "directory": directory,
        "ids": ids.numpy().reshape(grid),
        "images": (decoded.numpy().transpose(0, 2, 3, 1) + 1.0) / 2.0,
    }


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "vqgan.keras"
    result = run_script("convert_vqgan", reference["directory"], out)
    assert result.code == 0, result.err[-2000:]
    assert "16 codes, stride 2" in result.out
    model = keras.saving.load_model(out)
    # taming's quantizer loss, for fine-tuning: codebook + 0.25 x commitment.
    quantizer = model.quantizer
    assert not quantizer.use_ema and quantizer.latent_loss_weight == 1.0
    assert quantizer.commitment_cost == 0.25
    return model


def test_token_ids_equal_diffusers(converted, reference, images):
    tokens = converted.encode(images)
    assert len(np.unique(reference["ids"])) > 4  # a test that ids can fail
    np.testing.assert_array_equal(tokens, reference["ids"])


def test_reconstructions_match_diffusers_decoder(converted, reference):
    tokens = reference["ids"].astype("int32")
    # The l2 loss's out-map: decoder output + 0.5, clipped to images.
    raw = ops.convert_to_numpy(converted.decoder(converted.quantizer.lookup(tokens)))
    np.testing.assert_allclose(raw + 0.5, reference["images"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        converted.decode(tokens),
        np.clip(reference["images"], 0.0, 1.0),
        atol=1e-4,
        rtol=0,
    )


def copy_checkpoint(reference, tmp_path, edit_config=None, edit_tensors=None):
    directory = tmp_path / "edited"
    directory.mkdir()
    source = reference["directory"]
    config = json.loads((source / "config.json").read_text())
    tensors = safetensors_numpy.load_file(str(source / WEIGHTS))
    if edit_config:
        edit_config(config)
    if edit_tensors:
        edit_tensors(tensors)
    (directory / "config.json").write_text(json.dumps(config))
    safetensors_numpy.save_file(tensors, str(directory / WEIGHTS))
    return directory


def convert(source, out):
    return run_script("convert_vqgan", source, out)


def test_missing_directory(tmp_path):
    result = convert(tmp_path / "nowhere", tmp_path / "out.keras")
    assert_one_line_error(result, "convert_vqgan", "nowhere", "not a directory")
    assert not (tmp_path / "out.keras").exists()


def test_config_of_another_model(reference, tmp_path):
    def autoencoder_kl(config):
        config["_class_name"] = "AutoencoderKL"

    source = copy_checkpoint(reference, tmp_path, edit_config=autoencoder_kl)
    result = convert(source, tmp_path / "out.keras")
    assert_one_line_error(result, "convert_vqgan", "'AutoencoderKL'", "'VQModel'")


def test_unsupported_config_value(reference, tmp_path):
    def spatial(config):
        config["norm_type"] = "spatial"

    source = copy_checkpoint(reference, tmp_path, edit_config=spatial)
    result = convert(source, tmp_path / "out.keras")
    assert_one_line_error(result, "convert_vqgan", "norm_type='spatial'")


def test_tensor_of_the_wrong_shape(reference, tmp_path):
    def shrink(tensors):
        name = "decoder.up_blocks.0.attentions.0.to_k.weight"
        tensors[name] = tensors[name][:-1]

    source = copy_checkpoint(reference, tmp_path, edit_tensors=shrink)
    result = convert(source, tmp_path / "out.keras")
    assert_one_line_error(
        result, "convert_vqgan", "to_k.weight", "wrong shape", "(31, 32)"
    )
    assert not (tmp_path / "out.keras").exists()


def test_missing_and_unused_tensors(reference, tmp_path):
    def drop(tensors):
        del tensors["encoder.conv_out.bias"]

    def add(tensors):
        tensors["encoder.extra.weight"] = np.zeros(3, "float32")

    source = copy_checkpoint(reference, tmp_path, edit_tensors=drop)
    result = convert(source, tmp_path / "out.keras")
    assert_one_line_error(result, "convert_vqgan", "'encoder.conv_out.bias'", "missing")
    (tmp_path / "other").mkdir()
    source = copy_checkpoint(reference, tmp_path / "other", edit_tensors=add)
    result = convert(source, tmp_path / "out.keras")
    assert_one_line_error(result, "convert_vqgan", "encoder.extra.weight", "1 tensor")


def test_legacy_attention_names_convert(reference, tmp_path):
    def rename(tensors):
        for name in list(tensors):
            for new, old in (("to_q", "query"), ("to_out.0", "proj_attn")):
                if f".{new}." in name:
                    tensors[name.replace(f".{new}.", f".{old}.")] = tensors.pop(name)

    source = copy_checkpoint(reference, tmp_path, edit_tensors=rename)
    assert convert(source, tmp_path / "out.keras").code == 0


def test_never_overwrites(reference, tmp_path):
    out = tmp_path / "out.keras"
    out.write_text("keep")
    result = convert(reference["directory"], out)
    assert_one_line_error(result, "convert_vqgan", "exists")
    assert out.read_text() == "keep"
