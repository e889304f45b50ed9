"""The Hydra training app as a user runs it: a joblib sweep, and torchrun with two CPU processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.corpus import VOCODER_TINY_CONFIG, prematched_corpus

REPO = Path(__file__).resolve().parents[2]
TINY = [
    f"vocoder_config={VOCODER_TINY_CONFIG}",
    "device=cpu",
    "batch_size=2",
    "data.segment_size=3200",
    "data.num_workers=0",
    "data.valid_fraction=0.25",
    "discriminator_width=0.125",
    "validation_interval=2",
    "num_audio_samples=1",
    "progress=false",
]


def run(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_multirun_sweep_with_the_joblib_launcher(tmp_path_factory):
    corpus, features = prematched_corpus(tmp_path_factory)
    out = tmp_path_factory.mktemp("sweep")
    run(
        [
            sys.executable,
            str(REPO / "experiments" / "train.py"),
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "generator=harmonic,sine",
            f"data.corpus_dir={corpus}",
            f"data.features_dir={features}",
            f"out_dir={out}",
            "max_steps=2",
            *TINY,
        ]
    )
    for generator in ("harmonic", "sine"):
        (job,) = out.glob(
            f"*generator={generator},max_steps=2,*"
        )  # one folder per job, named by its overrides
        assert "corpus_dir" not in job.name and "vocoder_config" not in job.name  # paths stay out of the name
        assert (job / "g_00000002.pt").is_file() and (job / "do_00000002.pt").is_file()
        assert (job / ".hydra" / "config.yaml").is_file() and list(
            (job / "logs").glob("events.out.tfevents.*")
        )
    assert (out / "multirun.yaml").is_file()


@pytest.mark.slow
def test_torchrun_two_cpu_processes_with_gloo(tmp_path_factory):
    corpus, features = prematched_corpus(tmp_path_factory)
    out = tmp_path_factory.mktemp("ddp")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        str(REPO / "experiments" / "train.py"),
        f"data.corpus_dir={corpus}",
        f"data.features_dir={features}",
        f"out_dir={out}",
        "generator=knnvc",
        "max_steps=2",
        *TINY,
    ]
    run(command)
    assert (out / "train_rank0.log").is_file() and (out / "train_rank1.log").is_file()
    assert "validation mel L1" in (out / "train_rank0.log").read_text()
    state = torch.load(out / "do_00000002.pt", weights_only=True)
    assert state["world_size"] == 2 and state["steps"] == 2
    generator = torch.load(out / "g_00000002.pt", weights_only=True)["generator"]
    assert not any(key.startswith("module.") for key in generator)

    run(command[: -len(TINY) - 1] + ["max_steps=3", *TINY])  # resumes from step 2 with two processes
    assert torch.load(out / "do_00000003.pt", weights_only=True)["steps"] == 3
