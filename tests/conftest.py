"""Shared fixtures: the golden reference run and the tiny checkpoints in the official formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from knnsvc.synthetic import sung_vowel  # noqa: F401  (re-exported for the tests)

GOLDEN = Path(__file__).parent / "golden"

# The tests run tiny models: one intra-op thread avoids thread contention on shared 2-core machines.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def golden() -> dict:
    """Inputs, intermediates and outputs of one reference conversion (see golden/README.md)."""
    return torch.load(GOLDEN / "golden_pipeline.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN
