"""Figures (matplotlib, PNG): F0 contours, spectrograms, provenance strip, metric-vs-setting curves.

Drawn for the evaluation's reports (`knnsvc.eval`) and for the web demo (`knnsvc.apps.demo`), which
therefore does not depend on the evaluation package.

Every function writes one PNG and returns its path; matplotlib's non-interactive Agg backend is
used so plotting works without a display.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from knnsvc.config import HOP_LENGTH, SAMPLE_RATE

FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _voiced_or_nan(f0_hz: torch.Tensor | np.ndarray) -> np.ndarray:
    values = np.asarray(f0_hz, dtype=np.float64).reshape(-1).copy()
    values[values <= 0] = np.nan
    return values


def plot_f0_contours(path: str | Path, contours: Mapping[str, torch.Tensor | np.ndarray], title: str = "") -> Path:
    """Overlay F0 contours, e.g. ``{"source": (T,), "shifted": (T,), "converted": (T,)}`` (Hz, 50 Hz frames).

    Unvoiced frames (0 Hz) are left blank; the frequency axis is logarithmic so that a key shift is
    a constant vertical offset.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    styles = {"source": ":", "shifted": "--", "expected": "--", "converted": "-"}
    for label, f0 in contours.items():
        values = _voiced_or_nan(f0)
        seconds = np.arange(len(values)) * FRAME_SECONDS
        ax.plot(seconds, values, styles.get(label, "-"), label=label, linewidth=1.0)
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("F0 (Hz)")
    ax.set_title(title or "F0 contours")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def log_spectrogram(wav_16k: torch.Tensor, n_fft: int = 1024, hop: int = 160) -> np.ndarray:
    """Log-magnitude STFT in dB, (F, T') with F = n_fft // 2 + 1, for display."""
    wav = torch.as_tensor(wav_16k, dtype=torch.float32).reshape(-1)
    if wav.numel() < n_fft:
        wav = torch.nn.functional.pad(wav, (0, n_fft - wav.numel()))
    spec = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return (20.0 * torch.log10(spec.clamp_min(1e-5))).numpy()


def plot_spectrograms(
    path: str | Path, wavs: Mapping[str, torch.Tensor], max_seconds: float | None = 10.0, title: str = ""
) -> Path:
    """One spectrogram panel per waveform, e.g. ``{"source": ..., "reference": ..., "converted": ...}``.

    Each waveform is cut to its first `max_seconds` (None = whole) so long references stay legible.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(wavs), 1, figsize=(10, 2.4 * len(wavs)), squeeze=False)
    for ax, (label, wav) in zip(axes[:, 0], wavs.items(), strict=True):
        wav = torch.as_tensor(wav).reshape(-1)
        if max_seconds is not None:
            wav = wav[: int(max_seconds * SAMPLE_RATE)]
        spec_db = log_spectrogram(wav)
        top = spec_db.max()
        seconds = wav.numel() / SAMPLE_RATE
        image = ax.imshow(
            spec_db,
            origin="lower",
            aspect="auto",
            extent=(0, seconds, 0, SAMPLE_RATE / 2000),
            vmin=top - 80,
            vmax=top,
            cmap="magma",
        )
        ax.set_ylabel(f"{label}\nkHz")
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def frame_provenance(
    indices: torch.Tensor, weights: torch.Tensor | None, starts: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which reference file and time each output frame mostly came from.

    Args:
        indices: (T, K) pool rows averaged into each output frame (``MatchResult.indices_wavlm``).
        weights: (T, K) their summing weights, or None for a plain mean (the first index is used).
        starts: first pool row of each reference file (``ReferencePool.starts``), ascending.

    Returns:
        file_index (T,) int, seconds_in_file (T,) float, weight (T,) of the dominant neighbour.
    """
    indices = torch.as_tensor(indices).reshape(indices.shape[0], -1)
    if weights is None or torch.as_tensor(weights).numel() == 0:
        pick = torch.zeros(indices.shape[0], dtype=torch.long)
        top_weight = np.full(indices.shape[0], 1.0 / max(indices.shape[1], 1))
    else:
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(indices.shape)
        pick = weights.argmax(dim=1)
        top_weight = weights.gather(1, pick[:, None])[:, 0].numpy()
    rows = indices.gather(1, pick[:, None])[:, 0].tolist()
    file_index = np.array([bisect.bisect_right(starts, row) - 1 for row in rows], dtype=np.int64)
    seconds = np.array([(row - starts[f]) * FRAME_SECONDS for row, f in zip(rows, file_index, strict=True)])
    return file_index, seconds, top_weight


def plot_provenance(
    path: str | Path,
    indices: torch.Tensor,
    weights: torch.Tensor | None,
    starts: Sequence[int],
    names: Sequence[str],
    title: str = "",
) -> Path:
    """Provenance strip: per output frame, the reference file (colour band) and time (dots) it came from.

    Long diagonal runs in the lower panel are stretches copied contiguously from one reference
    recording (what the concatenation-smoothness optimisation encourages); scattered dots are
    frame-by-frame jumps.
    """
    plt = _pyplot()
    file_index, seconds, top_weight = frame_provenance(indices, weights, starts)
    out_seconds = np.arange(len(file_index)) * FRAME_SECONDS
    n_files = max(len(names), 1)
    cmap = plt.get_cmap("tab20", n_files)
    fig, (band_ax, time_ax) = plt.subplots(
        2, 1, figsize=(10, 3.6), sharex=True, gridspec_kw={"height_ratios": [1, 4]}
    )
    band_ax.imshow(
        file_index[None, :],
        aspect="auto",
        cmap=cmap,
        vmin=-0.5,
        vmax=n_files - 0.5,
        extent=(0, len(file_index) * FRAME_SECONDS, 0, 1),
        interpolation="nearest",
    )
    band_ax.set_yticks([])
    band_ax.set_ylabel("file", rotation=0, ha="right", va="center")
    time_ax.scatter(
        out_seconds, seconds, c=file_index, cmap=cmap, vmin=-0.5, vmax=n_files - 0.5,
        s=4, alpha=np.clip(top_weight, 0.15, 1.0),
    )
    time_ax.set_xlabel("output time (s)")
    time_ax.set_ylabel("time in reference file (s)")
    used = sorted(set(file_index.tolist()))
    handles = [
        plt.Line2D([], [], marker="s", linestyle="", color=cmap(i),
                   label=_short(names[i]) if i < len(names) else str(i))
        for i in used[:12]
    ]
    if handles:
        time_ax.legend(handles=handles, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    band_ax.set_title(title or "provenance of each output frame (dominant neighbour)")
    return _save(fig, path)


def _short(name: str, width: int = 28) -> str:
    name = Path(name).name
    return name if len(name) <= width else name[: width - 1] + "…"


def _as_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _tick_label(value: str, width: int = 18) -> str:
    """A short axis label: a path's file name, cut to `width` characters."""
    looks_like_path = (os.sep in value or "/" in value) and " " not in value
    name = Path(value).name if looks_like_path else value
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_metric_curves(
    path: str | Path,
    rows: Sequence[Mapping[str, object]],
    setting: str,
    metrics: Sequence[str],
    group_by: str | None = None,
    title: str = "",
) -> Path:
    """Metric-vs-setting curves for a sweep: one panel per metric, one line per `group_by` value.

    Args:
        rows: one mapping per run holding the setting, the metrics and optionally `group_by`.
        setting: key varied along the x axis (numeric values are placed on a numeric axis;
            otherwise categorically: numbers ascending, then other labels, e.g. "full").
        metrics: keys to plot (missing / None values are skipped).
    """
    plt = _pyplot()
    x_values = [row.get(setting) for row in rows]
    numeric = all(_as_float(v) is not None for v in x_values)
    categories: list[str] = []
    for v in x_values:
        if str(v) not in categories:
            categories.append(str(v))
    categories.sort(key=lambda c: (_as_float(c) is None, _as_float(c) or 0.0))

    def position(value) -> float:
        return float(value) if numeric else float(categories.index(str(value)))

    groups: dict[str, list[Mapping[str, object]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(group_by)) if group_by else "", []).append(row)
    n_cols = min(len(metrics), 3)
    n_rows = math.ceil(len(metrics) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows), squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for index, group_rows in enumerate(groups.values()):
            points = sorted(
                (position(r.get(setting)), _as_float(r.get(metric)))
                for r in group_rows
                if _as_float(r.get(metric)) is not None
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, "o-", color=colours[index % len(colours)])
        ax.set_title(metric)
        ax.set_xlabel(setting)
        if not numeric:
            ax.set_xticks(range(len(categories)), [_tick_label(c) for c in categories], rotation=30, ha="right")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    if group_by and len(groups) > 1:  # one legend for the figure, below the panels
        handles = [plt.Line2D([], [], color=colours[i % len(colours)], marker="o") for i in range(len(groups))]
        fig.legend(handles, [_group_label(g) for g in groups], loc="outside lower center", fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _group_label(label: str) -> str:
    """Shorten "key=/long/path/file.pt, other=value" to "key=file.pt, other=value"."""
    parts = []
    for part in label.split(", "):
        key, sep, value = part.partition("=")
        parts.append(f"{key}{sep}{_tick_label(value, width=40)}" if sep else _tick_label(part, width=40))
    return ", ".join(parts)
