"""A fast harmonic vocoder: ConvNeXt backbone on frame features, inverse-STFT head (Vocos-style).

Everything runs at the feature frame rate (50 Hz) until the head: per frame the backbone sees
the WavLM features, F0 (log-scale and a voicing flag) and the log-magnitude spectrum of the
additive-synthesis excitation U(t) (``hifigan.excitation.additive_synth`` at the output rate,
framed with the head's window); the head predicts per frame and frequency bin a log magnitude, a
phase and a real gain on the excitation's spectrum, so the output spectrum is

    S[f, t] = exp(m[f, t]) * exp(i p[f, t]) + g[f, t] * E[f, t]

(E: the excitation's STFT). The second term is the harmonic guidance of the kNN-SVC paper in
source-filter form: the excitation brings harmonics with a continuous phase, the backbone shapes
them; the first term models the rest (breath, consonants). The waveform is the overlap-add
inverse STFT of S with hop = samples per frame and an FFT of 4 hops.

Architecture after Vocos (Siuzdak, 2023; ConvNeXt blocks after Liu et al., 2022), written here
from the papers. Differences: harmonic conditioning as above, frame t's window is centred on the
middle of frame t's samples, and the normalisation by the summed squared windows is computed from
the frames present (so the output of a block does not depend on frames outside it).

Offline it is block-exact: an output sample depends on at most :attr:`VocosGenerator.context_frames`
frames on each side (convolutions, the head's window, the excitation's window and its bicubic
amplitudes), so vocoding a block with that many extra frames on each side and keeping the middle
gives the whole signal's samples.

Shape letters: B batch, T frames, D feature dim, H harmonics, C channels, F frequency bins,
N FFT length, L = T * hop samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hifigan.excitation import additive_synth

F0_REFERENCE_HZ = 100.0
"""F0 is given to the backbone as log2(f0 / F0_REFERENCE_HZ) on voiced frames, 0 elsewhere."""

LOG_MAG_MAX = math.log(100.0)
"""Log magnitudes of the head are clipped here (magnitude 100, as Vocos clips)."""

EXCITATION_LOG_FLOOR = 1e-5
"""Excitation magnitudes are floored here before the log."""


@dataclass
class VocosConfig:
    """Architecture of :class:`VocosGenerator`.

    Attributes:
        sample_rate: output rate in Hz.
        hop_length: output samples per feature frame (= the iSTFT hop; sample_rate / 50).
        n_fft: FFT and window length of the head (a multiple of 2 with ``n_fft - hop`` even);
            None = 4 hops.
        input_dim: feature dim D (1024 for WavLM-Large).
        dim: backbone channels C.
        intermediate_dim: hidden width of each ConvNeXt block's MLP.
        num_layers: ConvNeXt blocks.
        kernel_size: depthwise conv kernel (odd) of the embedding and of each block.
    """

    sample_rate: int = 24_000
    hop_length: int = 480
    n_fft: int | None = None
    input_dim: int = 1024
    dim: int = 512
    intermediate_dim: int = 1536
    num_layers: int = 8
    kernel_size: int = 7

    def __post_init__(self) -> None:
        if self.n_fft is None:
            self.n_fft = 4 * self.hop_length
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.n_fft < self.hop_length or (self.n_fft - self.hop_length) % 2:
            raise ValueError(
                f"n_fft {self.n_fft} must be at least the hop {self.hop_length} and differ from it by an even number"
            )
        for name in ("sample_rate", "hop_length", "input_dim", "dim", "intermediate_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def fft_length(self) -> int:
        """``n_fft`` after defaulting (always an int)."""
        assert self.n_fft is not None  # set in __post_init__
        return self.n_fft

    @property
    def n_bins(self) -> int:
        """Frequency bins F of the head (n_fft // 2 + 1)."""
        return self.fft_length // 2 + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``n_fft`` resolved)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "VocosConfig":
        """Build from :meth:`to_dict`'s layout; an unknown key is a ValueError naming it."""
        if not isinstance(values, dict):
            raise TypeError(f"expected a dict of Vocos settings, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Vocos config keys {unknown} (known: {sorted(known)})")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "VocosConfig":
        """Read a JSON file written by :meth:`to_json`."""
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as indented JSON."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2)
            file.write("\n")


def vocos_config(sample_rate: int = 24_000, **overrides: Any) -> VocosConfig:
    """The full-size configuration at ``sample_rate`` (hop = sample_rate / 50, FFT 4 hops)."""
    from hifigan.presets import hop_for_rate

    return VocosConfig(sample_rate=sample_rate, hop_length=hop_for_rate(sample_rate), **overrides)


def _full_precision(device: torch.device) -> Any:
    """Turn autocast off for the DSP (excitation, FFTs) when it is on; otherwise do nothing."""
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm (over channels) -> Linear -> GELU -> Linear -> layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T)."""
        y = self.norm(self.dwconv(x).transpose(1, 2))  # (B, T, C)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class VocosGenerator(nn.Module):
    """Fast harmonic vocoder with an inverse-STFT head (see the module docstring).

    Called like every generator of this package: ``generator(feats, f0_hz, amps, start_cycles)``
    -> (B, 1, T * hop). The output is not squashed by a tanh (an iSTFT head's output is the
    spectrum's waveform); callers clip when they write integer audio.
    """

    window: torch.Tensor  # (N,) periodic Hann window

    def __init__(self, cfg: VocosConfig | None = None) -> None:
        super().__init__()
        from hifigan.generator import VocoderKind

        self.kind = VocoderKind.VOCOS
        cfg = cfg if cfg is not None else VocosConfig()
        self.config = cfg
        n_bins = cfg.n_bins
        self.feats_proj = nn.Linear(cfg.input_dim, cfg.dim)
        self.excitation_proj = nn.Linear(n_bins, cfg.dim)
        self.f0_proj = nn.Linear(2, cfg.dim)
        self.embed = nn.Conv1d(cfg.dim, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel_size, 1.0 / cfg.num_layers)
            for _ in range(cfg.num_layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, 3 * n_bins)
        self.register_buffer("window", torch.hann_window(cfg.fft_length, periodic=True), persistent=False)

    # The attributes every generator declares (hifigan.generator.Vocoder) ---------------------------
    @property
    def uses_pitch(self) -> bool:
        """Needs ``f0_hz``."""
        return True

    @property
    def uses_harmonics(self) -> bool:
        """Needs ``amps``."""
        return True

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz."""
        return self.config.sample_rate

    @property
    def samples_per_frame(self) -> int:
        """Output samples per input frame (the iSTFT hop)."""
        return self.config.hop_length

    @property
    def window_frames(self) -> int:
        """Frames on each side whose window reaches into a frame's samples: ceil(N / (2 hop) - 1/2)."""
        cfg = self.config
        return math.ceil((cfg.fft_length - cfg.hop_length) / (2 * cfg.hop_length))

    @property
    def context_frames(self) -> int:
        """Frames on each side that an output frame depends on.

        The head's overlap-add window and the excitation's analysis window (``window_frames``
        each), the embedding conv and every ConvNeXt block (``kernel_size // 2`` each), and the
        two frames the bicubic amplitudes of U(t) read.
        """
        cfg = self.config
        return 2 * self.window_frames + (cfg.num_layers + 1) * (cfg.kernel_size // 2) + 2

    def remove_weight_norm(self) -> None:
        """No weight norm in this generator: nothing to fold (present for the common interface)."""

    # Framing ----------------------------------------------------------------------------------------
    def _frame_padding(self) -> int:
        """Samples before the first frame's window starts: (N - hop) / 2."""
        return (self.config.fft_length - self.config.hop_length) // 2

    def excitation_spectrum(self, excitation: torch.Tensor) -> torch.Tensor:
        """STFT of the excitation with the head's window, frame t centred on frame t's samples.

        Args:
            excitation: (B, L) waveform, L = T * hop (zeros are assumed beyond both ends).

        Returns:
            (B, F, T) complex64.
        """
        cfg = self.config
        pad = self._frame_padding()
        padded = F.pad(excitation, (pad, pad))  # (B, L + N - hop)
        frames = padded.unfold(1, cfg.fft_length, cfg.hop_length)  # (B, T, N)
        return torch.fft.rfft(frames * self.window, dim=-1).transpose(1, 2)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """Overlap-add inverse of :meth:`excitation_spectrum`'s framing.

        Each frame is inverse-FFT'd, windowed and added at its place; the sum is divided by the
        summed squared windows of the frames present.

        Args:
            spec: (B, F, T) complex.

        Returns:
            (B, T * hop) float32.
        """
        cfg = self.config
        n_frames = spec.shape[-1]
        frames = torch.fft.irfft(spec, n=cfg.fft_length, dim=1) * self.window[:, None]  # (B, N, T)
        full_length = (n_frames - 1) * cfg.hop_length + cfg.fft_length
        fold = dict(output_size=(1, full_length), kernel_size=(1, cfg.fft_length), stride=(1, cfg.hop_length))
        wav = F.fold(frames, **fold)[:, 0, 0]  # (B, full_length)
        squares = (self.window**2)[None, :, None].expand(1, -1, n_frames)
        envelope = F.fold(squares, **fold)[:, 0, 0]  # (1, full_length)
        pad = self._frame_padding()
        keep = slice(pad, pad + n_frames * cfg.hop_length)
        return wav[:, keep] / envelope[:, keep]

    # Forward -----------------------------------------------------------------------------------------
    def forward(
        self,
        feats: torch.Tensor,
        f0_hz: torch.Tensor | None = None,
        amps: torch.Tensor | None = None,
        start_cycles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vocode features with harmonic guidance.

        Args:
            feats: (B, T, D) WavLM features.
            f0_hz: (B, T) target f0 (0 = unvoiced); (B, T, 1) is accepted too.
            amps: (B, T, H) harmonic amplitudes; harmonics at or above the output Nyquist are masked.
            start_cycles: (B,) phase of U(t) in cycles before the first sample (None = 0), counted
                in samples of the output rate.

        Returns:
            (B, 1, T * hop) waveform.
        """
        from hifigan.generator import as_frames, check_feats

        cfg = self.config
        check_feats(feats, cfg.input_dim)
        if f0_hz is None or amps is None:
            raise ValueError("the vocos vocoder needs f0_hz and amps")
        f0_hz = as_frames(f0_hz, feats).to(feats.device)
        if amps.dim() != 3 or amps.shape[:2] != feats.shape[:2]:
            raise ValueError(f"amps must be (B, T, H) = {tuple(feats.shape[:2])} + (H,), got {tuple(amps.shape)}")
        exc_spec, exc_log_mag, pitch = self.conditioning(f0_hz, amps.to(feats.device), start_cycles, feats.dtype)
        return self.synthesis(self.backbone(feats, exc_log_mag, pitch), exc_spec)

    def conditioning(
        self,
        f0_hz: torch.Tensor,
        amps: torch.Tensor,
        start_cycles: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The harmonic guidance of `forward`, computed in full precision: the additive synthesis
        U(t) at the output rate and what the backbone reads of it.

        Args:
            f0_hz: (B, T) f0, 0 = unvoiced; amps: (B, T, H); start_cycles: (B,) or None.
            dtype: the dtype of the backbone's inputs (the features').

        Returns:
            exc_spec (B, F, T) complex STFT of U(t) (for `synthesis`), exc_log_mag (B, T, F) its
            log magnitude, pitch (B, T, 2) log2(f0 / 440 Hz) and voicing.
        """
        cfg = self.config
        with _full_precision(f0_hz.device):
            excitation = additive_synth(f0_hz.float(), amps.float(), start_cycles, cfg.sample_rate,
                                        cfg.hop_length)  # (B, L)
            exc_spec = self.excitation_spectrum(excitation)  # (B, F, T)
        exc_log_mag = torch.log(torch.clamp(exc_spec.abs(), min=EXCITATION_LOG_FLOOR)).transpose(1, 2).to(dtype)
        voiced = (f0_hz > 0).to(dtype)
        log_f0 = torch.log2(torch.clamp(f0_hz, min=1.0) / F0_REFERENCE_HZ) * voiced
        return exc_spec, exc_log_mag, torch.stack([log_f0, voiced], dim=-1).to(dtype)

    def backbone(self, feats: torch.Tensor, exc_log_mag: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """The network: (B, T, D) features, (B, T, F) excitation log magnitude and (B, T, 2) pitch ->
        (B, 3F, T) head output (log magnitude, phase and excitation gain per bin)."""
        x = self.feats_proj(feats) + self.excitation_proj(exc_log_mag) + self.f0_proj(pitch)  # (B, T, C)
        x = self.embed(x.transpose(1, 2))  # (B, C, T)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)

    def synthesis(self, head: torch.Tensor, exc_spec: torch.Tensor) -> torch.Tensor:
        """(B, 3F, T) head output and the excitation's (B, F, T) spectrum -> (B, 1, T * hop) waveform:
        ``exp(m)·e^{ip} + g·E`` through the inverse STFT, in full precision."""
        with _full_precision(head.device):
            log_mag, phase, gain = head.float().chunk(3, dim=1)  # each (B, F, T)
            magnitude = torch.exp(torch.clamp(log_mag, max=LOG_MAG_MAX))
            spec = torch.polar(magnitude, phase) + gain * exc_spec
            wav = self.istft(spec)
        return wav[:, None, :]
