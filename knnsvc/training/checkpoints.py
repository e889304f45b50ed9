"""Training checkpoints in ``out_dir``: the official file pairs, resume state, RNG state, best generator.

- ``g_XXXXXXXX.pt`` = ``{'generator': state_dict}`` (official keys, legacy weight norm), used by
  ``python -m knnsvc.convert`` as it is; generators at other rates and the Vocos kind add
  ``'config'`` (kind, sample rate, hop, architecture: ``hifigan.generator.generator_file``);
- ``do_XXXXXXXX.pt`` = ``{'mpd', 'msd', 'optim_g', 'optim_d', 'steps', 'epoch'}`` plus what a
  bit-exact resume needs: ``scheduler_g``, ``scheduler_d``, ``scaler``, ``batches_in_epoch``,
  ``world_size``, ``rng``, ``best_valid_mel_l1``, ``train_config``, ``vocoder``, ``format_version``;
- ``best/g_XXXXXXXX.pt`` + ``best/best.json``: the generator with the lowest validation mel L1.

XXXXXXXX is the number of completed updates. Every file is written atomically.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hifigan.config import HiFiGANConfig
from hifigan.vocos import VocosConfig
from knnsvc.files import atomic_path

CHECKPOINT_FORMAT_VERSION = 1
_STATE_RE = re.compile(r"^do_(\d{8,})\.pt$")
RESUME_KEYS = ("generator", "discriminator_width", "sample_rate")
"""Training settings a resumed run must share with the checkpoint (they decide the model shapes)."""


def generator_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"g_{step:08d}.pt"


def state_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"do_{step:08d}.pt"


def checkpoint_steps(out_dir: Path) -> list[int]:
    """Steps with both ``g_`` and ``do_`` files in ``out_dir``, ascending."""
    if not out_dir.is_dir():
        return []
    steps = []
    for path in out_dir.iterdir():
        match = _STATE_RE.match(path.name)
        if match and generator_path(out_dir, int(match.group(1))).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def _generator_file(generator_state: dict[str, Any], generator_config: dict[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {"generator": generator_state}
    if generator_config is not None:
        values["config"] = generator_config
    return values


def save_checkpoint(
    out_dir: Path,
    step: int,
    generator_state: dict[str, Any],
    state: dict[str, Any],
    keep: int,
    generator_config: dict[str, Any] | None = None,
) -> Path:
    """Write the ``g_``/``do_`` pair of ``step`` and delete all but the newest ``keep`` pairs.

    Args:
        generator_config: the self-describing ``'config'`` entry of the generator file
            (``hifigan.generator.generator_metadata``; None = the official ``{'generator': ...}``).

    Returns:
        The generator file.
    """
    g_path = generator_path(out_dir, step)
    atomic_torch_save(_generator_file(generator_state, generator_config), g_path)
    atomic_torch_save({**state, "format_version": CHECKPOINT_FORMAT_VERSION}, state_path(out_dir, step))
    for old in checkpoint_steps(out_dir)[:-keep]:
        generator_path(out_dir, old).unlink(missing_ok=True)
        state_path(out_dir, old).unlink(missing_ok=True)
    return g_path


def load_checkpoint(out_dir: Path, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The generator state dict and the ``do_`` dict of ``step`` (``weights_only`` loading)."""
    generator_state = torch.load(generator_path(out_dir, step), map_location="cpu", weights_only=True)["generator"]
    state = torch.load(state_path(out_dir, step), map_location="cpu", weights_only=True)
    return generator_state, state


def check_resumable(
    state: dict[str, Any], path: Path, train_config: dict[str, Any], vocoder: HiFiGANConfig | VocosConfig
) -> None:
    """Refuse to resume a checkpoint whose models do not fit this run.

    Only what decides the shapes is compared: :data:`RESUME_KEYS` of the saved ``train_config``
    and the architecture of the saved ``vocoder`` dict (its other keys, e.g. the training
    settings older runs kept there, are ignored).

    Raises:
        ValueError: naming the first setting that differs.
    """
    saved = state.get("train_config", {})
    for key in RESUME_KEYS:
        if key in saved and saved[key] != train_config[key]:
            raise ValueError(
                f"cannot resume {path}: it was trained with {key}={saved[key]!r}, this run has "
                f"{key}={train_config[key]!r}"
            )
    if "vocoder" not in state:
        return
    if isinstance(vocoder, VocosConfig):
        saved_vocos, current_vocos = state["vocoder"], vocoder.to_dict()
        changed = [key for key in current_vocos if saved_vocos.get(key) != current_vocos[key]]
        if changed:
            key = changed[0]
            raise ValueError(
                f"cannot resume {path}: it was trained with another vocoder architecture "
                f"({key}={saved_vocos.get(key)!r}, this run has {current_vocos[key]!r}); pass the same vocoder_config"
            )
    else:
        saved_arch = HiFiGANConfig.from_dict(state["vocoder"]).architecture_dict()
        current = vocoder.architecture_dict()
        changed = [key for key in current if saved_arch[key] != current[key]]
        if changed:
            key = changed[0]
            raise ValueError(
                f"cannot resume {path}: it was trained with another vocoder architecture "
                f"({key}={saved_arch[key]!r}, this run has {current[key]!r}); pass the same vocoder_config"
            )


def save_best_generator(
    out_dir: Path,
    step: int,
    generator_state: dict[str, Any],
    valid_mel_l1: float,
    generator_config: dict[str, Any] | None = None,
) -> Path:
    """Keep this generator as ``best/g_XXXXXXXX.pt`` (replacing the previous one) with ``best.json``."""
    best_dir = out_dir / "best"
    best_dir.mkdir(exist_ok=True)
    path = generator_path(best_dir, step)
    atomic_torch_save(_generator_file(generator_state, generator_config), path)
    for old in best_dir.glob("g_*.pt"):
        if old != path:
            old.unlink()
    write_json(best_dir / "best.json", {"steps": step, "valid_mel_l1": valid_mel_l1, "generator": path.name})
    return path


def best_generator(out_dir: Path) -> Path | None:
    """The kept best generator file, if any."""
    best = sorted((out_dir / "best").glob("g_*.pt"))
    return best[-1] if best else None


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, NumPy and Python generator states, as tensors and plain values."""
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # NumPy's global generator is MT19937: the legacy tuple form
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": _python_state_to_plain(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only with the same device count)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state.get("numpy")
    if numpy_state:
        np.random.set_state(
            (
                "MT19937",
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_json(path: Path, values: Any) -> None:
    """Indented JSON, written atomically."""
    text = json.dumps(values, indent=2) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
