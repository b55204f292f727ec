"""The convolutional VAE and its loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from davae.config import VAEConfig
from davae.errors import DavaeError
from davae.model import ConvVAE, vae_loss

SMALL = VAEConfig(image_size=32, channels=1, latent_dim=8, width=8, depth=2)


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        dataclasses.replace(SMALL, channels=3),
        dataclasses.replace(SMALL, image_size=64, depth=3, latent_dim=16),
        VAEConfig(),
    ],
)
def test_shapes_follow_config(config):
    torch.manual_seed(0)
    model = ConvVAE(config).eval()
    x = torch.rand(3, config.channels, config.image_size, config.image_size)
    reconstruction, mu, logvar = model(x)

    assert reconstruction.shape == x.shape
    assert mu.shape == (3, config.latent_dim)
    assert logvar.shape == (3, config.latent_dim)
    assert reconstruction.min() >= 0.0
    assert reconstruction.max() <= 1.0


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4, -1e4])
def test_logvar_stays_in_bounds(scale):
    torch.manual_seed(1)
    model = ConvVAE(SMALL)
    x = torch.rand(4, 1, 32, 32) * scale
    _, logvar = model.encode(x)

    assert logvar.min() >= SMALL.logvar_min
    assert logvar.max() <= SMALL.logvar_max


def test_loss_finite_for_extreme_input():
    torch.manual_seed(2)
    model = ConvVAE(SMALL).train()
    x = torch.rand(4, 1, 32, 32) * 1e4
    reconstruction, mu, logvar = model(x)
    loss, _, _ = vae_loss(x, reconstruction, mu, logvar, recon_sigma=0.1, beta=1.0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]

    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads)


def test_eval_mode_uses_latent_mean():
    torch.manual_seed(3)
    model = ConvVAE(SMALL).eval()
    x = torch.rand(2, 1, 32, 32)
    first, mu, _ = model(x)
    second, _, _ = model(x)

    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, model.decode(mu))


def test_train_mode_samples():
    torch.manual_seed(4)
    model = ConvVAE(SMALL).train()
    x = torch.rand(2, 1, 32, 32)

    assert not torch.equal(model(x)[0], model(x)[0])


def test_batch_of_one_trains():
    torch.manual_seed(5)
    model = ConvVAE(SMALL).train()
    x = torch.rand(1, 1, 32, 32)
    reconstruction, mu, logvar = model(x)
    loss, _, _ = vae_loss(x, reconstruction, mu, logvar, 0.1, 1.0)
    loss.backward()

    assert torch.isfinite(loss)


def test_batch_result_does_not_depend_on_neighbours():
    torch.manual_seed(6)
    model = ConvVAE(SMALL).eval()
    x = torch.rand(4, 1, 32, 32)
    together = model.encode(x)[0]
    alone = torch.cat([model.encode(x[i : i + 1])[0] for i in range(4)])

    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_loss_matches_formula():
    torch.manual_seed(7)
    x, reconstruction = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5)
    loss, recon, kl = vae_loss(x, reconstruction, mu, logvar, recon_sigma=0.2, beta=0.5)

    expected_recon = ((reconstruction - x) ** 2).sum(dim=(1, 2, 3)) / (2 * 0.2**2)
    variance = logvar.exp()
    expected_kl = 0.5 * (variance + mu**2 - 1 - logvar).sum(dim=1)
    torch.testing.assert_close(recon, expected_recon.mean())
    torch.testing.assert_close(kl, expected_kl.mean())
    torch.testing.assert_close(loss, (expected_recon + 0.5 * expected_kl).mean())


def test_loss_zero_for_perfect_standard_normal():
    x = torch.rand(2, 1, 4, 4)
    loss, recon, kl = vae_loss(x, x.clone(), torch.zeros(2, 3), torch.zeros(2, 3), 0.1, 1.0)

    assert float(recon) == 0.0
    assert float(kl) == 0.0
    assert float(loss) == 0.0


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"channels": 2}, "channels"),
        ({"image_size": 40}, "image_size"),
        ({"image_size": 16, "depth": 4}, "image_size"),
        ({"latent_dim": 1}, "latent_dim"),
        ({"width": 2}, "width"),
        ({"depth": 7}, "depth"),
        ({"logvar_min": 3.0, "logvar_max": 3.0}, "logvar_min"),
    ],
)
def test_invalid_architecture_rejected(changes, setting):
    with pytest.raises(DavaeError) as caught:
        dataclasses.replace(VAEConfig(), **changes).validate()

    assert caught.value.code == "invalid_setting"
    assert caught.value.params["setting"] == setting
