"""A diffusers `VQModel` (taming's VQGAN) as a keras-dvq `VQVAE`.

`load_vq_model(directory)` reads a `save_pretrained` directory
(`config.json` + `diffusion_pytorch_model.safetensors`) with json and
safetensors' numpy loader (no torch, no diffusers), builds the matching
`VQVAE` (`"vq"` quantizer with a gradient codebook, `"vqgan"`
encoder/decoder, l2 loss) and assigns every tensor: the quantizer's
`projection` plays `quant_conv` and the decoder's first 1x1 conv
`post_quant_conv`. Every tensor must be used and every shape must match;
otherwise `BadInput` names the tensor.
"""

import json
from pathlib import Path

import numpy as np
from keras import layers

from keras_dvq.models.vqgan import VQGANAttentionBlock
from keras_dvq.models.vqgan import VQGANDownsample
from keras_dvq.models.vqgan import VQGANResidualBlock
from keras_dvq.models.vqvae import VQVAE
from keras_dvq.utils.errors import BadInput

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
DOWN_BLOCKS = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
UP_BLOCKS = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
# Attention weights of older diffusers checkpoints (`AttentionBlock`), by
# the names diffusers uses today.
LEGACY_ATTENTION_NAMES = {
    "query": "to_q",
    "key": "to_k",
    "value": "to_v",
    "proj_attn": "to_out.0",
}


def load_vq_model(directory):
    """The `VQVAE` holding the weights of a diffusers `VQModel` directory.

    Its `encode` takes [0, 1] images and gives the token ids of diffusers'
    `quantize(encode(2 x - 1).latents)`; its `decode` gives diffusers'
    decoder output mapped by `(y + 1) / 2`.

    Args:
        directory: path of a `VQModel.save_pretrained` directory.

    Returns:
        A built, uncompiled `VQVAE`.

    Raises:
        BadInput: when the directory, its config or its tensors cannot be
            used, naming what was expected and what was received.

    Example:

    ```python
    model = load_vq_model("vqgan_imagenet_f16")
    tokens = model.encode(images)  # images in [0, 1]
    ```
    """
    directory = Path(directory)
    config = read_config(directory)
    tensors = read_tensors(directory / WEIGHTS_FILE)
    model = VQVAE.from_flavors(**model_arguments(config, directory))
    model.build((None, None, None, config.get("in_channels", 3)))
    assign_weights(model, tensors)
    return model


def read_config(directory):
    """The parsed `config.json` of a `VQModel` directory."""
    if not directory.is_dir():
        raise BadInput(f"{directory}: not a directory (expected a diffusers VQModel)")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise BadInput(f"{path}: missing (expected a diffusers VQModel's config)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: not valid JSON ({error})") from error
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name != "VQModel":
        raise BadInput(
            f"{path}: the config of a {name!r}, expected a diffusers 'VQModel'"
        )
    return config


def read_tensors(path):
    """The tensors of a safetensors file as numpy arrays, by name."""
    if not path.is_file():
        raise BadInput(f"{path}: missing (expected the VQModel's weights)")
    try:
        from safetensors.numpy import load_file
    except ImportError as error:
        raise BadInput(
            "reading diffusers weights needs safetensors: pip install "
            "'keras-dvq[convert]'"
        ) from error
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise BadInput(f"{path}: not a readable safetensors file ({error})") from error
    return {_current_name(name): value for name, value in tensors.items()}


def _current_name(name):
    parts = name.split(".")
    if "attentions" in parts[:-2] and parts[-2] in LEGACY_ATTENTION_NAMES:
        return ".".join([*parts[:-2], LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
    return name


def model_arguments(config, directory):
    """`VQVAE.from_flavors` arguments of a `VQModel` config."""

    def refuse(key, expected):
        raise BadInput(
            f"{directory / CONFIG_FILE}: {key}={config.get(key)!r} is not "
            f"supported (expected {expected})"
        )

    for key, expected in (("norm_type", "group"), ("act_fn", "silu")):
        if config.get(key, expected) != expected:
            refuse(key, repr(expected))
    if config.get("in_channels", 3) != config.get("out_channels", 3):
        refuse("out_channels", "as many as in_channels")
    widths = list(config.get("block_out_channels", (64,)))
    if not widths or any(width % widths[0] for width in widths):
        refuse("block_out_channels", "multiples of the first width")
    down = config.get("down_block_types", ("DownEncoderBlock2D",))
    up = config.get("up_block_types", ("UpDecoderBlock2D",))
    if len(down) != len(widths) or any(kind not in DOWN_BLOCKS for kind in down):
        refuse("down_block_types", f"one of {sorted(DOWN_BLOCKS)} per width")
    if len(up) != len(widths) or any(kind not in UP_BLOCKS for kind in up):
        refuse("up_block_types", f"one of {sorted(UP_BLOCKS)} per width")
    attn_levels = tuple(level for level, kind in enumerate(down) if DOWN_BLOCKS[kind])
    # The decoder's up blocks run from the last level to the first.
    up_levels = tuple(
        level for level, kind in enumerate(reversed(up)) if UP_BLOCKS[kind]
    )
    if up_levels != attn_levels:
        refuse("up_block_types", "attention at the levels of down_block_types")
    latent_channels = config.get("latent_channels", 3)
    return {
        "vq_flavor": "vq",
        "enc_dec_flavor": "vqgan",
        "num_embeddings": config.get("num_vq_embeddings", 256),
        "embedding_dim": config.get("vq_embed_dim") or latent_channels,
        # Training goes on from the released codebook by gradients, with
        # taming's quantizer loss: codebook term + 0.25 x commitment term.
        "use_ema": False,
        "commitment_cost": 0.25,
        "latent_loss_weight": 1.0,
        "image_channels": config.get("in_channels", 3),
        "enc_dec_kwargs": {
            "ch": widths[0],
            "ch_mult": tuple(width // widths[0] for width in widths),
            "num_res_blocks": config.get("layers_per_block", 1),
            "attn_levels": attn_levels,
            "z_channels": latent_channels,
            "norm_groups": config.get("norm_num_groups", 32),
            "mid_attention": config.get("mid_block_add_attention", True),
        },
    }


def weight_names(model):
    """`(keras layer, diffusers prefix)` for every layer holding weights, in
    the order of the model's chains."""
    encoder, decoder = model.encoder, model.decoder
    levels = len(encoder.ch_mult)
    yield model.quantizer.projection, "quant_conv"
    yield from zip(
        _weighted(encoder.chain), _encoder_prefixes(encoder, levels), strict=True
    )
    yield from zip(
        _weighted(decoder.chain), _decoder_prefixes(decoder, levels), strict=True
    )


def _weighted(chain):
    return [layer for layer in chain if layer.weights]


def _encoder_prefixes(encoder, levels):
    yield "encoder.conv_in"
    for level in range(levels):
        for index in range(encoder.num_res_blocks):
            yield f"encoder.down_blocks.{level}.resnets.{index}"
            if level in encoder.attn_levels:
                yield f"encoder.down_blocks.{level}.attentions.{index}"
        if level < levels - 1:
            yield f"encoder.down_blocks.{level}.downsamplers.0"
    yield from _middle_prefixes("encoder", encoder)
    yield "encoder.conv_norm_out"
    yield "encoder.conv_out"


def _decoder_prefixes(decoder, levels):
    yield "post_quant_conv"
    yield "decoder.conv_in"
    yield from _middle_prefixes("decoder", decoder)
    for block, level in enumerate(reversed(range(levels))):
        for index in range(decoder.num_res_blocks + 1):
            yield f"decoder.up_blocks.{block}.resnets.{index}"
            if level in decoder.attn_levels:
                yield f"decoder.up_blocks.{block}.attentions.{index}"
        if level > 0:
            yield f"decoder.up_blocks.{block}.upsamplers.0.conv"
    yield "decoder.conv_norm_out"
    yield "decoder.conv_out"


def _middle_prefixes(part, chain):
    yield f"{part}.mid_block.resnets.0"
    if chain.mid_attention:
        yield f"{part}.mid_block.attentions.0"
    yield f"{part}.mid_block.resnets.1"


def assign_weights(model, tensors):
    """Assigns `tensors` (diffusers names -> numpy arrays) to a model built by
    `model_arguments`; every tensor must be used exactly once."""
    remaining = dict(tensors)

    def take(name, variable, transform):
        if name not in remaining:
            raise BadInput(f"tensor {name!r} is missing from the checkpoint")
        value = transform(np.asarray(remaining.pop(name), dtype="float32"))
        if tuple(value.shape) != tuple(variable.shape):
            raise BadInput(
                f"tensor {name!r} has the wrong shape: expected "
                f"{tuple(variable.shape)} in keras-dvq's layout, received "
                f"{tuple(tensors[name].shape)} ({tuple(value.shape)} transposed)"
            )
        variable.assign(value)

    def assign(layer, prefix):
        if isinstance(layer, VQGANResidualBlock):
            sublayers = [
                (layer.norm1, "norm1"),
                (layer.conv1, "conv1"),
                (layer.norm2, "norm2"),
                (layer.conv2, "conv2"),
            ]
            if layer.shortcut is not None:
                sublayers.append((layer.shortcut, "conv_shortcut"))
        elif isinstance(layer, VQGANAttentionBlock):
            sublayers = [
                (layer.norm, "group_norm"),
                (layer.query, "to_q"),
                (layer.key, "to_k"),
                (layer.value, "to_v"),
                (layer.out, "to_out.0"),
            ]
        elif isinstance(layer, VQGANDownsample):
            sublayers = [(layer.conv, "conv")]
        else:
            _assign_leaf(layer, prefix, take)
            return
        for sublayer, name in sublayers:
            _assign_leaf(sublayer, f"{prefix}.{name}", take)

    for layer, prefix in weight_names(model):
        assign(layer, prefix)
    take("quantize.embedding.weight", model.quantizer.codebook, lambda value: value)
    if remaining:
        names = sorted(remaining)
        raise BadInput(
            f"{len(names)} tensor(s) of the checkpoint fit no keras-dvq weight: "
            + ", ".join(names[:5])
            + (", ..." if len(names) > 5 else "")
        )


def _assign_leaf(layer, prefix, take):
    if isinstance(layer, layers.GroupNormalization):
        take(f"{prefix}.weight", layer.gamma, _same)
        take(f"{prefix}.bias", layer.beta, _same)
    elif isinstance(layer, layers.Conv2D):
        take(f"{prefix}.weight", layer.kernel, _conv_kernel)
        take(f"{prefix}.bias", layer.bias, _same)
    elif isinstance(layer, layers.Dense):
        take(f"{prefix}.weight", layer.kernel, _dense_kernel)
        take(f"{prefix}.bias", layer.bias, _same)
    else:
        raise TypeError(f"no diffusers weights map to {type(layer).__name__}")


def _same(value):
    return value


def _conv_kernel(value):
    # torch's (out, in, h, w) -> Keras' (h, w, in, out).
    return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value


def _dense_kernel(value):
    # torch Linear (out, in), or a 1x1 conv (out, in, 1, 1) as in taming and
    # `quant_conv` -> Dense (in, out).
    if value.ndim == 4 and value.shape[2:] == (1, 1):
        value = value[:, :, 0, 0]
    return np.transpose(value) if value.ndim == 2 else value
