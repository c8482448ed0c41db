"""The references: plain PyTorch training loops of the original DeepMind
VQ-VAE and of diffusers' `VQModel` (the taming VQGAN).

Every Keras figure of the benchmark is also a ratio to such a loop, timed on
the same batches in the same rounds and process, since absolute figures on
shared machines move by 2x. PyTorch is imported on first use: the modules
that time Keras models import this one under any backend.
"""

import time


def reference_model(n_hid=64, num_embeddings=512, embedding_dim=64):
    """The original repo's DeepMind VQ-VAE as a plain `torch.nn.Module`.

    Written here from the layer shapes of `keras_dvq.models.deepmind` (NCHW):
    encoder `conv4x4/2, conv4x4/2, conv3x3, 2 residual blocks`, a 1x1
    projection to `embedding_dim`, a codebook of `num_embeddings` codes
    trained by gradient, decoder `conv3x3, 2 residual blocks, convT4x4/2,
    convT4x4/2`. With the defaults it has 695,491 parameters.

    `model(x)` takes images in-mapped to `[-0.5, 0.5]` and returns the
    reconstruction, the latent loss and the token ids.
    """
    import torch
    from torch import nn
    from torch.nn import functional

    class ResidualBlock(nn.Module):
        # relu(x + conv1x1(relu(conv3x3(x)))), as DeepMindResidualBlock.
        def __init__(self, channels, hidden):
            super().__init__()
            self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
            self.conv_out = nn.Conv2d(hidden, channels, 1)

        def forward(self, x):
            return functional.relu(x + self.conv_out(functional.relu(self.conv_in(x))))

    class ReferenceVQVAE(nn.Module):
        def __init__(self):
            super().__init__()
            wide = 2 * n_hid
            self.encoder = nn.Sequential(
                nn.Conv2d(3, n_hid, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(n_hid, wide, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(wide, wide, 3, padding=1),
                nn.ReLU(),
                ResidualBlock(wide, n_hid // 2),
                ResidualBlock(wide, n_hid // 2),
            )
            self.projection = nn.Conv2d(wide, embedding_dim, 1)
            self.codebook = nn.Parameter(
                torch.empty(num_embeddings, embedding_dim).uniform_(
                    -1 / num_embeddings, 1 / num_embeddings
                )
            )
            self.decoder = nn.Sequential(
                nn.Conv2d(embedding_dim, wide, 3, padding=1),
                nn.ReLU(),
                ResidualBlock(wide, n_hid // 2),
                ResidualBlock(wide, n_hid // 2),
                nn.ConvTranspose2d(wide, n_hid, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(n_hid, 3, 4, stride=2, padding=1),
            )

        def forward(self, x):
            z_e = self.projection(self.encoder(x)).permute(0, 2, 3, 1)
            flat = z_e.reshape(-1, z_e.shape[-1])
            # Nearest code: argmin of |e|^2 - 2 z.e (|z|^2 is constant per row).
            distances = self.codebook.square().sum(1) - 2 * flat @ self.codebook.T
            tokens = distances.argmin(1).view(z_e.shape[:-1])
            codes = self.codebook[tokens]
            # VQ-VAE eq. 3: codebook term + beta (0.25) * commitment term,
            # times the original repo's latent loss scale (10).
            latent_loss = 10.0 * (
                functional.mse_loss(codes, z_e.detach())
                + 0.25 * functional.mse_loss(z_e, codes.detach())
            )
            # Straight-through estimator: decoder gradients pass to z_e.
            quantized = z_e + (codes - z_e).detach()
            return self.decoder(quantized.permute(0, 3, 1, 2)), latent_loss, tokens

    return ReferenceVQVAE()


class TorchLoop:
    """Times `step`, one training step of a PyTorch loop on a uint8 NHWC
    numpy batch, over windows of batches."""

    def timed_window(self, images, batch_size):
        """Images/s over `images` in batches, from the first step's end to
        the last's (as `throughput.timed_fit`)."""
        times = []
        for start in range(0, len(images) - batch_size + 1, batch_size):
            self.step(images[start : start + batch_size])
            times.append(time.perf_counter())
        return (len(times) - 1) * batch_size / (times[-1] - times[0])


class ReferenceLoop(TorchLoop):
    """AdamW steps of `reference_model` on uint8 NHWC batches, with the
    original's loss: `mean((x - x_hat)^2) / (2 * CIFAR-10 variance)` on
    in-mapped pixels (`x - 0.5`) plus the latent loss.

    Args:
        n_hid: int. The model's hidden width (64 in the original).
        num_embeddings: int. Codebook size.
        seed: int. PyTorch's seed for the initial weights.

    Example:

    ```python
    loop = ReferenceLoop(n_hid=64)
    images_per_s = loop.timed_window(sample_images(12 * 128), batch_size=128)
    ```
    """

    data_variance = 0.06327039811675479

    def __init__(self, n_hid=64, num_embeddings=512, seed=0):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.threads = torch.get_num_threads()
        self.model = reference_model(n_hid=n_hid, num_embeddings=num_embeddings)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=3e-4, weight_decay=1e-4
        )

    def step(self, batch):
        """One training step on a uint8 NHWC numpy batch; returns the loss."""
        x = self.torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - 0.5
        x_hat, latent_loss, _ = self.model(x)
        nll = (x - x_hat).square().mean() / (2 * self.data_variance)
        loss = nll + latent_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def vq_model_config(network, num_embeddings, embedding_dim, image_size=None):
    """The diffusers `VQModel` configuration of a keras-dvq vqgan network
    (`VQGANEncoder` options): the inverse of what `convert_vqgan.py` reads."""
    ch = network.get("ch", 128)
    multipliers = network.get("ch_mult", (1, 1, 2, 2, 4))
    levels = len(multipliers)
    attention = set(network.get("attn_levels", ()))
    return {
        "block_out_channels": [ch * m for m in multipliers],
        "down_block_types": [
            "AttnDownEncoderBlock2D" if level in attention else "DownEncoderBlock2D"
            for level in range(levels)
        ],
        # The decoder's blocks run from the last level to the first.
        "up_block_types": [
            "AttnUpDecoderBlock2D" if level in attention else "UpDecoderBlock2D"
            for level in reversed(range(levels))
        ],
        "layers_per_block": network.get("num_res_blocks", 2),
        "latent_channels": network.get("z_channels", 256),
        "norm_num_groups": network.get("norm_groups", 32),
        "num_vq_embeddings": num_embeddings,
        "vq_embed_dim": embedding_dim,
        "sample_size": image_size or 32,
    }


class VQModelLoop(TorchLoop):
    """AdamW steps of diffusers' `VQModel` (taming's VQGAN) built from a
    keras-dvq vqgan configuration: mean squared error on `[-1, 1]` pixels
    plus the model's own codebook and commitment loss (`commit_loss`).

    Args:
        network: dict. The vqgan network's options (`ch`, `ch_mult`, ...).
        num_embeddings: int. Codebook size.
        embedding_dim: int. Code dimension.
        seed: int. PyTorch's seed for the initial weights.

    Example:

    ```python
    loop = VQModelLoop({"ch": 32, "ch_mult": (1, 2)}, 1024, 8)
    images_per_s = loop.timed_window(sample_images(64, image_size=64), 8)
    ```
    """

    def __init__(self, network, num_embeddings, embedding_dim, seed=0):
        import diffusers
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.threads = torch.get_num_threads()
        config = vq_model_config(network, num_embeddings, embedding_dim)
        self.model = diffusers.VQModel(**config).train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=3e-4, weight_decay=1e-4
        )

    def step(self, batch):
        """One training step on a uint8 NHWC numpy batch; returns the loss."""
        x = self.torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1
        output = self.model(x)
        loss = (x - output.sample).square().mean() + output.commit_loss.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
