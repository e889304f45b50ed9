"""Shared fixtures: the golden reference run and the tiny checkpoints in the official formats."""

from __future__ import annotations

import os
import subprocess
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


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs for full-disk tests (root only, where mounting is allowed; else skipped),
    unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
