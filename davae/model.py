"""The convolutional VAE: encode, reparameterize, decode, forward."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from davae.config import VAEConfig


def _stage_widths(config: VAEConfig) -> list[int]:
    # Channel width doubles per stage, capped so deep models stay small.
    return [min(config.width * 2**i, 512) for i in range(config.depth)]


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: statistics per image, so a last batch of one
    # trains fine and eval mode computes exactly what training computed.
    return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)


class ConvVAE(nn.Module):
    """A VAE whose encoder halves the image ``depth`` times down to a latent vector."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        widths = _stage_widths(config)
        self.bottom_size = config.image_size // 2**config.depth
        self.bottom_channels = widths[-1]
        bottom_features = self.bottom_channels * self.bottom_size**2

        encoder: list[nn.Module] = []
        in_channels = config.channels
        for out_channels in widths:
            encoder += [
                nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1),
                _norm(out_channels),
                nn.LeakyReLU(0.2),
            ]
            in_channels = out_channels
        self.encoder = nn.Sequential(*encoder)
        self.to_stats = nn.Linear(bottom_features, 2 * config.latent_dim)

        self.from_latent = nn.Linear(config.latent_dim, bottom_features)
        decoder: list[nn.Module] = []
        reversed_widths = widths[::-1]
        for in_channels, out_channels in itertools.pairwise(reversed_widths):
            decoder += [
                nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
                _norm(out_channels),
                nn.LeakyReLU(0.2),
            ]
        decoder.append(nn.ConvTranspose2d(reversed_widths[-1], config.channels, 4, 2, padding=1))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map (N, C, S, S) images to the latent mean and log-variance, each (N, D)."""
        return self.latent_from_bottom(self.encoder(x))

    def latent_from_bottom(self, bottom: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map the last encoder stage (N, C_last, s, s) to the latent mean and log-variance."""
        mu, raw_logvar = self.to_stats(bottom.flatten(1)).chunk(2, dim=1)
        # A sigmoid keeps the log-variance inside [logvar_min, logvar_max] with
        # a gradient everywhere, unlike a hard clamp.
        low, high = self.config.logvar_min, self.config.logvar_max
        logvar = low + (high - low) * torch.sigmoid(raw_logvar)
        return mu, logvar

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder and return each stage's output: the multi-scale features.

        Stage i has shape (N, width_i, S / 2^(i+1), S / 2^(i+1)); the last one
        is what ``latent_from_bottom`` reads.
        """
        outputs = []
        h = x
        layers = list(self.encoder)
        for start in range(0, len(layers), 3):  # conv, norm, activation per stage
            for layer in layers[start : start + 3]:
                h = layer(h)
            outputs.append(h)
        return outputs

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Draw z = mu + sigma * eps with eps ~ N(0, I) (the reparameterisation trick)."""
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Map (N, D) latents to (N, C, S, S) images in [0, 1]."""
        h = self.from_latent(z).view(-1, self.bottom_channels, self.bottom_size, self.bottom_size)
        return torch.sigmoid(self.decoder(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the reconstruction from a sampled z in training, from mu in eval mode."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar


def vae_loss(
    x: torch.Tensor,
    reconstruction: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    recon_sigma: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (loss, reconstruction term, KL term), each averaged over the batch.

    The reconstruction term is the Gaussian negative log-likelihood up to a
    constant, sum((x - x_hat)^2) / (2 sigma^2), so with beta = 1 the loss is
    the negative ELBO.
    """
    squared_error = (reconstruction - x).pow(2).flatten(1).sum(dim=1)
    recon = squared_error / (2.0 * recon_sigma**2)
    # KL(N(mu, sigma^2) || N(0, I)) in closed form: Kingma and Welling,
    # "Auto-Encoding Variational Bayes" (2014), appendix B.
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    loss = recon + beta * kl
    return loss.mean(), recon.mean(), kl.mean()
