"""Augmentation: each transform switches off, has a strength, and K copies are added."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_images import tiny_config
from torchvision.transforms import v2

from davae.augment import augment_batch, build_augmentation
from davae.config import AugmentConfig
from davae.errors import DavaeError
from davae.training import _epoch_batches

ALL_OFF = AugmentConfig(
    rotate90=False, hflip=False, vflip=False, brightness=False, contrast=False, noise=False
)
TRANSFORM_TYPES = {
    "rotate90": v2.RandomRotation,
    "hflip": v2.RandomHorizontalFlip,
    "vflip": v2.RandomVerticalFlip,
    "brightness": v2.ColorJitter,
    "contrast": v2.ColorJitter,
    "noise": v2.GaussianNoise,
}


def leaf_transforms(transform) -> list:
    """Every transform inside Compose, RandomApply and RandomChoice, flattened."""
    children = getattr(transform, "transforms", None)
    if children is None:
        return [transform]
    return [leaf for child in children for leaf in leaf_transforms(child)]


def only(name: str, **strengths) -> AugmentConfig:
    return dataclasses.replace(ALL_OFF, **{name: True}, **strengths)


def test_everything_off_gives_no_pipeline():
    assert build_augmentation(ALL_OFF) is None


def test_zero_strengths_count_as_off():
    config = AugmentConfig(
        rotate90_p=0.0,
        hflip_p=0.0,
        vflip_p=0.0,
        brightness_strength=0.0,
        contrast_strength=0.0,
        noise_sigma=0.0,
    )

    assert build_augmentation(config) is None


@pytest.mark.parametrize("name", sorted(TRANSFORM_TYPES))
def test_single_transform_is_the_only_one(name):
    leaves = leaf_transforms(build_augmentation(only(name)))
    types = {type(leaf) for leaf in leaves}

    assert types == {TRANSFORM_TYPES[name]}


def test_switched_off_transforms_are_absent():
    config = dataclasses.replace(AugmentConfig(), hflip=False, noise=False, contrast=False)
    leaves = leaf_transforms(build_augmentation(config))
    jitter = next(leaf for leaf in leaves if isinstance(leaf, v2.ColorJitter))

    assert not any(isinstance(leaf, v2.RandomHorizontalFlip) for leaf in leaves)
    assert not any(isinstance(leaf, v2.GaussianNoise) for leaf in leaves)
    assert jitter.contrast is None
    assert jitter.brightness is not None
    assert config.enabled_transforms == ["rotate90", "vflip", "brightness"]


def test_rotations_are_exact_quarter_turns():
    torch.manual_seed(0)
    image = torch.rand(1, 16, 16)
    transform = build_augmentation(only("rotate90", rotate90_p=1.0))
    turns = {k: torch.rot90(image, k, dims=(1, 2)) for k in (1, 2, 3)}
    seen = set()
    for _ in range(30):
        out = transform(image)
        matches = [k for k, turned in turns.items() if torch.equal(out, turned)]
        assert len(matches) == 1
        seen.add(matches[0])

    assert seen == {1, 2, 3}


@pytest.mark.parametrize(("name", "dim"), [("hflip", 2), ("vflip", 1)])
def test_flips_with_probability_one(name, dim):
    image = torch.rand(1, 8, 8)
    transform = build_augmentation(only(name, **{f"{name}_p": 1.0}))

    torch.testing.assert_close(transform(image), torch.flip(image, dims=(dim,)))


def test_brightness_scales_within_strength():
    torch.manual_seed(1)
    image = torch.rand(1, 16, 16) * 0.5 + 0.1  # stays below 1 after scaling by up to 1.3
    transform = build_augmentation(only("brightness", brightness_strength=0.3))
    factors = []
    for _ in range(20):
        ratio = transform(image) / image
        assert ratio.std() < 1e-5
        factors.append(float(ratio.mean()))

    assert min(factors) >= 0.7 - 1e-5
    assert max(factors) <= 1.3 + 1e-5
    assert max(factors) - min(factors) > 0.05


def test_contrast_stays_within_strength():
    torch.manual_seed(2)
    image = torch.rand(1, 16, 16) * 0.6 + 0.2
    transform = build_augmentation(only("contrast", contrast_strength=0.2))
    spreads = [float(transform(image).std() / image.std()) for _ in range(20)]

    assert min(spreads) >= 0.8 - 1e-4
    assert max(spreads) <= 1.2 + 1e-4
    assert max(spreads) - min(spreads) > 0.02


def test_noise_has_configured_sigma():
    torch.manual_seed(3)
    image = torch.full((1, 64, 64), 0.5)
    residual = build_augmentation(only("noise", noise_sigma=0.05))(image) - image

    assert abs(float(residual.mean())) < 0.005
    assert float(residual.std()) == pytest.approx(0.05, rel=0.1)


def test_outputs_stay_in_unit_range():
    torch.manual_seed(4)
    config = dataclasses.replace(
        AugmentConfig(), brightness_strength=0.9, contrast_strength=0.9, noise_sigma=0.5
    )
    out = augment_batch(torch.rand(8, 1, 16, 16), build_augmentation(config))

    assert out.min() >= 0.0
    assert out.max() <= 1.0


def test_batch_images_augmented_independently():
    torch.manual_seed(5)
    batch = torch.rand(1, 1, 16, 16).repeat(16, 1, 1, 1)
    out = augment_batch(batch, build_augmentation(only("rotate90", rotate90_p=1.0)))
    distinct = {tuple(image.flatten().tolist()) for image in out}

    assert out.shape == batch.shape
    assert len(distinct) > 1


def test_augment_batch_without_transform_returns_input():
    batch = torch.rand(2, 1, 8, 8)

    assert augment_batch(batch, None) is batch


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_k_copies_add_k_times_n_samples(iterations):
    torch.manual_seed(6)
    base = torch.rand(10, 1, 8, 8)
    config = tiny_config(augment__iterations=iterations, train__batch_size=4)
    transform = build_augmentation(dataclasses.replace(only("noise"), iterations=iterations))
    batches = list(_epoch_batches(base, config, transform, torch.Generator().manual_seed(0)))
    samples = torch.cat(batches)
    originals = sum(any(torch.equal(sample, original) for original in base) for sample in samples)

    assert samples.shape[0] == 10 * (iterations + 1)
    assert originals == 10
    assert max(batch.shape[0] for batch in batches) <= 4


@pytest.mark.parametrize(
    "changes",
    [
        {"iterations": -1},
        {"iterations": 65},
        {"hflip_p": 1.5},
        {"brightness_strength": 0.95},
        {"noise_sigma": -0.1},
    ],
)
def test_invalid_settings_rejected(changes):
    with pytest.raises(DavaeError) as caught:
        dataclasses.replace(AugmentConfig(), **changes).validate()

    assert caught.value.code == "invalid_setting"
