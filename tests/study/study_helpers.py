"""Helpers of the study tests: tiny settings, one torch thread, counted study runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import davae.study
from davae.study import run_study
from davae.study_plan import StudySettings
from davae.study_report import StudyResult

# A DA-VAE small enough to train 13 times in under a minute on 2 CPU cores.
TINY_OVERRIDES = {
    "vae__image_size": 32,
    "vae__width": 8,
    "vae__latent_dim": 8,
    "train__epochs": 10,
    "train__batch_size": 16,
}
LABELLED_PER_CLASS = 3
SEEDS = 3


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train on one thread: tiny models gain nothing from more, and a busy machine loses."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class CountedRun:
    """A finished study with the training calls and progress reports it made."""

    result: StudyResult
    cache: Path
    train_calls: int
    progress: list[tuple[int, int, str]] = field(default_factory=list)


def run_counted(
    dataset: Path, out: Path, settings: StudySettings, cache: Path, **kwargs
) -> CountedRun:
    """Run a study on one torch thread and count how many DA-VAE models it trained."""
    calls: list[int] = []
    progress: list[tuple[int, int, str]] = []
    real_train = davae.study.train_detector

    def counting_train(*args, **train_kwargs):
        calls.append(1)
        return real_train(*args, **train_kwargs)

    with pytest.MonkeyPatch.context() as patch, one_torch_thread():
        patch.setattr(davae.study, "train_detector", counting_train)
        result = run_study(
            dataset,
            out,
            settings,
            cache_dir=cache,
            progress=lambda step, total, message: progress.append((step, total, message)),
            **kwargs,
        )
    return CountedRun(result, cache, len(calls), progress)
