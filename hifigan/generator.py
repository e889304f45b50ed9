"""The three HiFi-GAN generators of kNN-VC / kNN-SVC, architecture detection and strict loading.

- :class:`KnnVcGenerator`: the kNN-VC vocoder, WavLM features only (spec §9.2).
- :class:`HarmonicGenerator`: kNN-SVC with the additive-synthesis waveform U(t) injected through a
  downsampling branch at every resolution (spec §9.3).
- :class:`SineGenerator`: the same skeleton driven by a unit sinusoid at f0 (spec §9.4).
- :class:`hifigan.vocos.VocosGenerator`: the fast harmonic vocoder with an inverse-STFT head.

Output rate: a HiFi-GAN config's ``sampling_rate`` (16 kHz when absent) and the product of its
upsample rates (the hop; ``hifigan.presets`` has the 24 and 44.1 kHz stacks); the excitation is
synthesised at that rate. Generator files: the released 16 kHz HiFi-GAN kinds keep the official
``{'generator': state_dict}`` layout; other rates and the Vocos kind are saved self-describing,
``{'generator': state_dict, 'config': {'kind', 'sample_rate', 'hop_length', 'architecture'}}``
(:func:`generator_file`), and :func:`load_generator` builds them from that entry and loads strictly.

State dicts use the official keys, legacy weight norm included (``weight_g``/``weight_v``), so
released checkpoints load strictly and files saved from here load into the official code.

Initialisation is PyTorch's default. For the weight-normed layers this is what the official
generators get as well: their ``init_weights`` (normal, std 0.01) writes into the derived
``weight`` of a weight-normed layer and so never reaches ``weight_g``/``weight_v``.

Interface difference from the official code: f0 is passed as (B, T); the official generators
take (B, T, 1). A trailing singleton dim is accepted and squeezed for convenience.

Shape letters: B batch, T frames, D feature dim, H harmonics, L = hop T samples (320 T at 16 kHz).
"""

import enum
import logging
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from hifigan.config import DEFAULT_SAMPLE_RATE, HiFiGANConfig
from hifigan.excitation import HOP_LENGTH, SAMPLE_RATE, additive_synth, sine_excitation
from hifigan.modules import (
    LRELU_SLOPE,
    DownResBlock,
    ResBlock1,
    WNConv1d,
    WNConvTranspose1d,
    fold_weight_norm,
    in_time_tiles,
    multi_receptive_field,
)

logger = logging.getLogger(__name__)

__all__ = [
    "VocoderKind",
    "Vocoder",
    "KnnVcGenerator",
    "HarmonicGenerator",
    "SineGenerator",
    "build_generator",
    "detect_kind",
    "config_from_state_dict",
    "load_generator",
    "receptive_field_frames",
    "generator_file",
    "generator_metadata",
]

SINE_EXTRA_CHANNELS = 2
"""The f0-sine branch is ``n_harmonic + 2`` channels wide at every level (34 for the release)."""


class VocoderKind(str, enum.Enum):
    """Which generator architecture a checkpoint holds."""

    HARMONIC = "harmonic"
    SINE = "sine"
    KNNVC = "knnvc"
    VOCOS = "vocos"

    @property
    def uses_pitch(self) -> bool:
        """The generator sings at a given f0 (f0-sine and harmonic)."""
        return self is not VocoderKind.KNNVC

    @property
    def uses_harmonics(self) -> bool:
        """The generator takes harmonic amplitudes (harmonic and vocos)."""
        return self in (VocoderKind.HARMONIC, VocoderKind.VOCOS)


def _check_config(cfg: HiFiGANConfig) -> None:
    if cfg.resblock != "1":
        raise ValueError(
            f"resblock {cfg.resblock!r} is not supported: every kNN-VC / kNN-SVC vocoder uses resblock '1'"
        )


def check_feats(feats: torch.Tensor, dim: int) -> None:
    """Refuse features that are not (B, T, dim): the generators' shared input check."""
    if feats.dim() != 3 or feats.shape[-1] != dim:
        raise ValueError(f"feats must be (B, T, {dim}), got {tuple(feats.shape)}")


def as_frames(f0_hz: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Accept f0 as (B, T) or the official (B, T, 1); check it matches feats (B, T, D)."""
    if f0_hz.dim() == 3 and f0_hz.shape[-1] == 1:
        f0_hz = f0_hz[..., 0]
    if f0_hz.shape != feats.shape[:2]:
        raise ValueError(f"f0_hz must be (B, T) = {tuple(feats.shape[:2])}, got {tuple(f0_hz.shape)}")
    return f0_hz


class Vocoder(nn.Module):
    """What every generator shares: one call signature and the inputs it declares.

    Every generator is called as ``generator(feats, f0_hz, amps, start_cycles)`` and ignores the
    inputs it does not use; `uses_pitch` / `uses_harmonics` (from its `kind`) say which it needs,
    so callers (the converter, the trainer) never switch on the architecture.
    """

    kind: VocoderKind

    accepts_keep = True
    """``forward(..., keep=(lo, hi))`` computes only what output frames lo..hi-1 need (see `keep_margins`)."""

    def __init__(self, cfg: HiFiGANConfig) -> None:
        super().__init__()
        _check_config(cfg)
        self.config = cfg

    def remove_weight_norm(self) -> None:
        """Fold every weight norm into a plain weight for faster inference (keys become ``weight``)."""
        fold_weight_norm(self)

    @property
    def uses_pitch(self) -> bool:
        """Needs ``f0_hz`` (the f0-sine and harmonic generators)."""
        return self.kind.uses_pitch

    @property
    def uses_harmonics(self) -> bool:
        """Needs ``amps`` (the harmonic generator)."""
        return self.kind.uses_harmonics

    @property
    def samples_per_frame(self) -> int:
        """Output samples per input frame (product of the upsample rates, 320 at 16 kHz)."""
        return math.prod(self.config.upsample_rates)

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz (the config's ``sampling_rate``; 16000 for the released vocoders)."""
        return self.config.sample_rate

    @property
    def context_frames(self) -> int:
        """Frames on each side that an output frame depends on (the receptive field, rounded up).

        Vocoding overlapping blocks with at least this many extra frames on each side and keeping
        the middle gives the output of the whole sequence (up to float rounding).
        """
        return receptive_field_frames(self.config, excitation=self.uses_pitch)

    def _check_inputs(self, feats: torch.Tensor, f0_hz: torch.Tensor | None,
                      amps: torch.Tensor | None) -> torch.Tensor | None:
        check_feats(feats, self.config.hubert_dim)
        if self.uses_pitch:
            if f0_hz is None:
                raise ValueError(f"the {self.kind.value} vocoder needs f0_hz")
            f0_hz = as_frames(f0_hz, feats).to(feats.device)
        if self.uses_harmonics and amps is None:
            raise ValueError(f"the {self.kind.value} vocoder needs amps")
        return f0_hz


def mrf_reach(cfg: HiFiGANConfig) -> int:
    """Samples on each side that an output sample of a multi-receptive-field block reads, at the
    rate of its stage: the widest residual block's (per dilation d, a kernel-k conv dilated by d
    and one undilated)."""
    return max(
        sum(d * (k - 1) // 2 + (k - 1) // 2 for d in dilations)
        for k, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)
    )


def receptive_field_frames(cfg: HiFiGANConfig, excitation: bool) -> int:
    """One-sided receptive field, in frames, of a generator with architecture `cfg`.

    Summed over the layers an output sample passes through, each converted to frames at the rate
    it runs at: ``conv_pre`` (kernel 7) and, with an excitation branch, ``concat_pre`` (kernel 3)
    at the frame rate; per upsample stage the transposed conv, ``concat_conv`` (kernel 3) and the
    widest multi-receptive-field block; ``conv_post`` (kernel 7); and the excitation branch's
    strided convs and blocks, plus the two frames bicubic interpolation of the amplitudes reads.
    """
    frames = 3.0 + (1.0 if excitation else 0.0)
    rate = 1
    block_radius = mrf_reach(cfg)
    for up_rate, kernel in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True):
        frames += math.ceil(kernel / up_rate) / rate  # transposed conv: inputs per output
        rate *= up_rate
        frames += (block_radius + (1 if excitation else 0)) / rate
    frames += 3 / rate
    if excitation:
        level_rate = rate
        frames += 1 / level_rate  # sin_prenet
        for down_rate, kernel in zip(reversed(cfg.upsample_rates), reversed(cfg.upsample_kernel_sizes), strict=True):
            frames += (kernel // 2) / level_rate
            level_rate //= down_rate
            frames += 1 / level_rate  # DownResBlock
        frames += 2  # bicubic amplitudes
    return math.ceil(frames)


def keep_margins(cfg: HiFiGANConfig, excitation: bool) -> list[int]:
    """Samples kept beyond an output range after each upsample stage's transposed conv.

    Entry i, in samples at the rate of stage i (``prod(upsample_rates[:i + 1])`` per frame), is
    the reach of everything after ``ups[i]``, rounded up, plus two: the stage's ``concat_conv``
    (with an excitation branch) and multi-receptive-field block, the later stages and ``conv_post``
    (the same per-layer terms as `receptive_field_frames`). Cropping the activations there to the
    output range widened by that many samples on each side leaves every output sample of the
    range as the whole window computes it: the samples next to a cut, which the later layers read
    with zero padding, lie farther from the range than those layers reach.
    """
    block_radius = mrf_reach(cfg)
    rates = [math.prod(cfg.upsample_rates[: i + 1]) for i in range(len(cfg.upsample_rates))]
    reach = 3 / rates[-1]  # conv_post, in frames
    margins = []
    for i in reversed(range(len(rates))):
        reach += (block_radius + (1 if excitation else 0)) / rates[i]
        margins.append(math.ceil(reach * rates[i]) + 2)
        reach += math.ceil(cfg.upsample_kernel_sizes[i] / cfg.upsample_rates[i]) / (rates[i - 1] if i else 1)
    return margins[::-1]


def check_keep(keep: tuple[int, int] | None, num_frames: int) -> tuple[int, int] | None:
    """`keep` as a checked (lo, hi) with 0 <= lo < hi <= T, or None (the whole window)."""
    if keep is None:
        return None
    lo, hi = int(keep[0]), int(keep[1])
    if not 0 <= lo < hi <= num_frames:
        raise ValueError(f"keep must be a frame range within 0..{num_frames} with lo < hi, got {tuple(keep)}")
    return lo, hi


class _Cropper:
    """The samples [first, stop) (at the current stage's rate) that the activations of a `keep`
    forward pass cover, and the crops."""

    def __init__(self, keep: tuple[int, int] | None, num_frames: int, margins: list[int],
                 upsample_rates: list[int]) -> None:
        self.keep = keep
        self.first, self.stop, self.rate = 0, num_frames, 1
        self.margins = margins
        self.upsample_rates = upsample_rates

    def after_up(self, stage: int, x: torch.Tensor,
                 level: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Crop stage `stage`'s upsampled x (B, C, L_i), the upsampled [first, stop), to the kept
        frames and the stage's margin; `level` (B, C', T * rate), the whole window's, to the same samples."""
        if self.keep is None:
            return x, level
        up = self.upsample_rates[stage]
        self.first, self.stop, self.rate = self.first * up, self.stop * up, self.rate * up
        first = max(self.first, self.keep[0] * self.rate - self.margins[stage])
        stop = min(self.stop, self.keep[1] * self.rate + self.margins[stage])
        x = x[..., first - self.first : stop - self.first]
        self.first, self.stop = first, stop
        return x, None if level is None else level[..., first:stop]

    def output(self, wav: torch.Tensor) -> torch.Tensor:
        """The kept frames of the final waveform (B, 1, L) -> (B, 1, (hi - lo) * hop)."""
        if self.keep is None:
            return wav
        return wav[..., self.keep[0] * self.rate - self.first : self.keep[1] * self.rate - self.first]


def _upsample_stages(cfg: HiFiGANConfig) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Transposed convs ``ups`` and MRF blocks ``resblocks`` (HiFi-GAN upsampling path)."""
    ups = nn.ModuleList()
    resblocks = nn.ModuleList()
    for i, (rate, kernel) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
        in_channels = cfg.upsample_initial_channel // 2**i
        out_channels = cfg.upsample_initial_channel // 2 ** (i + 1)
        ups.append(WNConvTranspose1d(in_channels, out_channels, kernel, rate, padding=(kernel - rate) // 2))
        for block_kernel, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
            resblocks.append(ResBlock1(out_channels, block_kernel, dilations))
    return ups, resblocks


class KnnVcGenerator(Vocoder):
    """kNN-VC HiFi-GAN: WavLM features -> waveform (spec §9.2). Keys have no ``dec.`` prefix."""

    kind = VocoderKind.KNNVC

    def __init__(self, cfg: HiFiGANConfig | None = None) -> None:
        cfg = cfg if cfg is not None else HiFiGANConfig()
        super().__init__(cfg)
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.lin_pre = nn.Linear(cfg.hubert_dim, cfg.hifi_dim)
        self.conv_pre = WNConv1d(cfg.hifi_dim, cfg.upsample_initial_channel, 7, padding=3)
        self.ups, self.resblocks = _upsample_stages(cfg)
        final_channels = cfg.upsample_initial_channel // 2 ** len(cfg.upsample_rates)
        self.conv_post = WNConv1d(final_channels, 1, 7, padding=3)
        self.margins = keep_margins(cfg, excitation=False)
        self.mrf_reach = mrf_reach(cfg)
        self.upsample_rates = list(cfg.upsample_rates)

    def forward(
        self,
        feats: torch.Tensor,
        f0_hz: torch.Tensor | None = None,
        amps: torch.Tensor | None = None,
        start_cycles: torch.Tensor | None = None,
        keep: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Vocode features (pitch, amplitudes and phase are not used by this generator).

        Args:
            feats: (B, T, D) WavLM features.
            keep: (lo, hi): compute only output frames lo..hi-1 (the layers run on them and their
                margins, `keep_margins`; the samples are those of the whole window up to float
                rounding). None: all T.

        Returns:
            (B, 1, T * hop) waveform in [-1, 1] (hop = 320 at 16 kHz); (B, 1, (hi - lo) * hop) with `keep`.
        """
        self._check_inputs(feats, f0_hz, amps)
        crop = _Cropper(check_keep(keep, feats.shape[1]), feats.shape[1], self.margins, self.upsample_rates)
        x = self.conv_pre(self.lin_pre(feats).transpose(1, 2))
        for i, up in enumerate(self.ups):
            x, _ = crop.after_up(i, up(F.leaky_relu(x, LRELU_SLOPE)), None)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = in_time_tiles(partial(multi_receptive_field, blocks), self.mrf_reach, x)
        return crop.output(torch.tanh(self.conv_post(F.leaky_relu(x))))


class ExcitationDecoder(nn.Module):
    """HiFi-GAN decoder with an excitation signal injected at every resolution (the ``dec`` module).

    The excitation (B, C_0, L) is downsampled by weight-normed strided convs mirroring the upsample
    path (``downs``, ``resblocks_downs``; kernel/stride from the upsample lists in reverse, padding
    k // 2, output truncated to len // stride), giving s_1..s_n. The top level s_n joins the
    features in ``concat_pre``; after upsample stage i the level s_{n-1-i} is concatenated and
    mixed back by the bias-free ``concat_conv[i]``.

    Args:
        cfg: architecture config.
        branch_channels: widths C_0..C_n of the excitation branch (n = number of upsample stages).
    """

    def __init__(self, cfg: HiFiGANConfig, branch_channels: list[int]) -> None:
        super().__init__()
        n_stages = len(cfg.upsample_rates)
        if len(branch_channels) != n_stages + 1:
            raise ValueError(f"need {n_stages + 1} branch widths, got {branch_channels}")
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.down_rates = list(reversed(cfg.upsample_rates))
        init_channels = cfg.upsample_initial_channel

        self.lin_pre = nn.Linear(cfg.hubert_dim, cfg.hifi_dim)
        self.conv_pre = nn.Conv1d(cfg.hifi_dim, init_channels, 7, padding=3)
        self.downs = nn.ModuleList()
        self.resblocks_downs = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(self.down_rates, reversed(cfg.upsample_kernel_sizes), strict=True)):
            self.downs.append(
                WNConv1d(branch_channels[i], branch_channels[i + 1], kernel, rate, padding=kernel // 2)
            )
            self.resblocks_downs.append(DownResBlock(branch_channels[i + 1]))
        self.concat_pre = nn.Conv1d(init_channels + branch_channels[n_stages], init_channels, 3, padding=1)
        self.concat_conv = nn.ModuleList()
        for i in range(n_stages):
            channels = init_channels // 2 ** (i + 1)
            self.concat_conv.append(
                nn.Conv1d(channels + branch_channels[n_stages - 1 - i], channels, 3, padding=1, bias=False)
            )
        self.ups, self.resblocks = _upsample_stages(cfg)
        self.conv_post = nn.Conv1d(init_channels // 2**n_stages, 1, 7, padding=3, bias=False)
        self.margins = keep_margins(cfg, excitation=True)
        self.mrf_reach = mrf_reach(cfg)
        self.upsample_rates = list(cfg.upsample_rates)

    def forward(self, feats: torch.Tensor, excitation: torch.Tensor,
                keep: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, T, D) features and (B, C_0, T * hop) excitation -> (B, 1, T * hop) waveform.

        With ``keep = (lo, hi)`` only output frames lo..hi-1 are computed: (B, 1, (hi - lo) * hop).
        The excitation branch and everything before the first upsampling run on the whole window;
        each stage from its transposed conv on runs on the kept frames and their margin
        (`keep_margins`).
        """
        levels = [excitation]
        for down, block, rate in zip(self.downs, self.resblocks_downs, self.down_rates, strict=True):
            length = levels[-1].shape[-1] // rate
            levels.append(in_time_tiles(block, 1, down(levels[-1]))[..., :length])

        crop = _Cropper(check_keep(keep, feats.shape[1]), feats.shape[1], self.margins, self.upsample_rates)
        x = self.conv_pre(self.lin_pre(feats).transpose(1, 2))  # (B, C, T)
        x = self.concat_pre(torch.cat([x, levels[-1]], dim=1))
        for i, up in enumerate(self.ups):
            x, level = crop.after_up(i, up(F.leaky_relu(x, LRELU_SLOPE)), levels[-2 - i])
            assert level is not None  # a level in, a level out
            x = in_time_tiles(partial(self._mix_stage, i), self.mrf_reach + 1, x, level)  # +1: concat_conv
        return crop.output(torch.tanh(self.conv_post(F.leaky_relu(x))))

    def _mix_stage(self, stage: int, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Stage `stage` after its upsampling: the excitation level joined by ``concat_conv``, then
        the multi-receptive-field blocks (B, C, L), (B, C', L) -> (B, C, L)."""
        x = self.concat_conv[stage](torch.cat([x, level], dim=1))
        return multi_receptive_field(self.resblocks[stage * self.num_kernels : (stage + 1) * self.num_kernels], x)


def _check_hop(cfg: HiFiGANConfig) -> None:
    """The upsampling must turn 50 frames per second into ``sampling_rate`` samples per second."""
    if cfg.sample_rate * HOP_LENGTH != cfg.hop_length * SAMPLE_RATE:
        raise ValueError(
            f"the product of upsample_rates {cfg.upsample_rates} must be "
            f"{cfg.sample_rate * HOP_LENGTH / SAMPLE_RATE:g} (samples per frame of the excitation signal "
            f"at sampling_rate {cfg.sample_rate})"
        )


class HarmonicGenerator(Vocoder):
    """kNN-SVC vocoder conditioned on the additive-synthesis waveform U(t) (spec §9.3).

    Excitation branch widths ``n_harmonic * 2**i`` (32, 64, ..., 512 for the release).
    """

    kind = VocoderKind.HARMONIC

    def __init__(self, cfg: HiFiGANConfig | None = None) -> None:
        cfg = cfg if cfg is not None else HiFiGANConfig()
        super().__init__(cfg)
        _check_hop(cfg)
        widths = [cfg.n_harmonic * 2**i for i in range(len(cfg.upsample_rates) + 1)]
        self.dec = ExcitationDecoder(cfg, widths)
        self.sin_prenet = nn.Conv1d(1, widths[0], 3, padding=1)

    def forward(
        self,
        feats: torch.Tensor,
        f0_hz: torch.Tensor | None = None,
        amps: torch.Tensor | None = None,
        start_cycles: torch.Tensor | None = None,
        keep: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Vocode features with harmonic guidance.

        Args:
            feats: (B, T, D) WavLM features.
            f0_hz: (B, T) target f0 (0 = unvoiced); (B, T, 1) is accepted too.
            amps: (B, T, H) harmonic amplitudes (H = 49 for the release).
            start_cycles: (B,) phase of U(t) in cycles before the first sample, for a block of a
                longer signal (None = 0).
            keep: (lo, hi): compute only output frames lo..hi-1 (see `ExcitationDecoder.forward`);
                None: all T.

        Returns:
            (B, 1, T * hop) waveform in [-1, 1] (hop = 320 at 16 kHz); (B, 1, (hi - lo) * hop) with `keep`.
        """
        f0_hz = self._check_inputs(feats, f0_hz, amps)
        assert f0_hz is not None and amps is not None  # _check_inputs refuses a call without them
        excitation = additive_synth(
            f0_hz, amps.to(feats.device), start_cycles, self.config.sample_rate, self.config.hop_length
        )  # (B, L)
        excitation = excitation[:, None, :].to(feats.dtype)
        return self.dec(feats, self.sin_prenet(excitation), keep)


class SineGenerator(Vocoder):
    """kNN-SVC "w/o AS" vocoder conditioned on a unit sinusoid at f0 (spec §9.4).

    Excitation branch ``n_harmonic + 2`` channels wide at every level (34 for the release).
    """

    kind = VocoderKind.SINE

    def __init__(self, cfg: HiFiGANConfig | None = None) -> None:
        cfg = cfg if cfg is not None else HiFiGANConfig()
        super().__init__(cfg)
        _check_hop(cfg)
        width = cfg.n_harmonic + SINE_EXTRA_CHANNELS
        self.dec = ExcitationDecoder(cfg, [width] * (len(cfg.upsample_rates) + 1))
        self.sin_prenet = nn.Conv1d(1, width, 3, padding=1)

    def forward(
        self,
        feats: torch.Tensor,
        f0_hz: torch.Tensor | None = None,
        amps: torch.Tensor | None = None,
        start_cycles: torch.Tensor | None = None,
        keep: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Vocode features with sinusoidal pitch guidance (amplitudes are not used).

        Args:
            feats: (B, T, D) WavLM features.
            f0_hz: (B, T) target f0 (0 = unvoiced); (B, T, 1) is accepted too.
            start_cycles: (B,) phase of the sinusoid in cycles before the first sample (None = 0).
            keep: (lo, hi): compute only output frames lo..hi-1 (see `ExcitationDecoder.forward`);
                None: all T.

        Returns:
            (B, 1, T * hop) waveform in [-1, 1] (hop = 320 at 16 kHz); (B, 1, (hi - lo) * hop) with `keep`.
        """
        f0_hz = self._check_inputs(feats, f0_hz, amps)
        assert f0_hz is not None  # _check_inputs refuses a call without it
        excitation = sine_excitation(f0_hz, start_cycles, self.config.sample_rate, self.config.hop_length)
        excitation = excitation[:, None, :].to(feats.dtype)  # (B, 1, L)
        return self.dec(feats, self.sin_prenet(excitation), keep)


_GENERATORS: dict[VocoderKind, type[Vocoder]] = {
    VocoderKind.HARMONIC: HarmonicGenerator,
    VocoderKind.SINE: SineGenerator,
    VocoderKind.KNNVC: KnnVcGenerator,
}


def build_generator(kind: VocoderKind | str, cfg: Any = None) -> Any:
    """A freshly initialised generator of ``kind``.

    Args:
        kind: a :class:`VocoderKind` or its value.
        cfg: a :class:`HiFiGANConfig` for the HiFi-GAN kinds, a :class:`hifigan.vocos.VocosConfig`
            for ``vocos``; None = official defaults (HiFi-GAN) or the 24 kHz full size (Vocos).

    Returns:
        A :class:`Vocoder` or a :class:`hifigan.vocos.VocosGenerator` (same call and attributes).
    """
    kind = VocoderKind(kind)
    if kind is VocoderKind.VOCOS:
        from hifigan.vocos import VocosConfig, VocosGenerator

        if cfg is not None and not isinstance(cfg, VocosConfig):
            raise TypeError(f"the vocos generator takes a VocosConfig, got {type(cfg).__name__}")
        return VocosGenerator(cfg)
    if cfg is not None and not isinstance(cfg, HiFiGANConfig):
        raise TypeError(f"the {kind.value} generator takes a HiFiGANConfig, got {type(cfg).__name__}")
    return _GENERATORS[kind](cfg if cfg is not None else HiFiGANConfig())


def generator_metadata(generator: Any) -> dict[str, Any] | None:
    """The ``config`` entry of ``generator``'s file: None for a 16 kHz HiFi-GAN kind (official layout).

    Returns:
        ``{'kind', 'sample_rate', 'hop_length', 'architecture'}`` (architecture: the HiFi-GAN
        architecture fields plus ``sampling_rate``, or the Vocos config dict), or None.
    """
    kind = VocoderKind(generator.kind)
    config = generator.config
    if kind is not VocoderKind.VOCOS and config.sample_rate == DEFAULT_SAMPLE_RATE:
        return None
    if kind is VocoderKind.VOCOS:
        architecture = config.to_dict()
    else:
        architecture = {**config.architecture_dict(), "sampling_rate": config.sample_rate}
    return {
        "kind": kind.value,
        "sample_rate": int(generator.sample_rate),
        "hop_length": int(generator.samples_per_frame),
        "architecture": architecture,
    }


def generator_file(generator: Any, state_dict: Mapping | None = None) -> dict[str, Any]:
    """What a generator file holds: ``{'generator': state_dict}`` plus ``'config'`` where needed.

    The released 16 kHz HiFi-GAN kinds keep the official layout; other rates and the Vocos kind
    carry :func:`generator_metadata`, from which :func:`load_generator` rebuilds them.

    Args:
        generator: the model (its kind and config describe the file).
        state_dict: the tensors to save (default: ``generator.state_dict()``).
    """
    values: dict[str, Any] = {"generator": generator.state_dict() if state_dict is None else state_dict}
    metadata = generator_metadata(generator)
    if metadata is not None:
        values["config"] = metadata
    return values


def _config_from_metadata(metadata: Any) -> tuple[VocoderKind, Any]:
    """(kind, architecture config) of a self-describing generator file's ``config`` entry."""
    if not isinstance(metadata, Mapping) or not {"kind", "sample_rate", "hop_length", "architecture"} <= set(metadata):
        raise ValueError(
            "the generator file's 'config' entry must hold kind, sample_rate, hop_length and architecture, "
            f"got {sorted(metadata) if isinstance(metadata, Mapping) else type(metadata).__name__}"
        )
    try:
        kind = VocoderKind(metadata["kind"])
    except ValueError:
        raise ValueError(
            f"unknown vocoder kind {metadata['kind']!r} in the generator file (known: {[k.value for k in VocoderKind]})"
        ) from None
    architecture = dict(metadata["architecture"])
    cfg: Any
    if kind is VocoderKind.VOCOS:
        from hifigan.vocos import VocosConfig

        cfg = VocosConfig.from_dict(architecture)
        rate, hop = cfg.sample_rate, cfg.hop_length
    else:
        cfg = HiFiGANConfig.from_dict(architecture)
        rate, hop = cfg.sample_rate, cfg.hop_length
    if (rate, hop) != (metadata["sample_rate"], metadata["hop_length"]):
        raise ValueError(
            f"the generator file says {metadata['sample_rate']} Hz, hop {metadata['hop_length']}, but its "
            f"architecture gives {rate} Hz, hop {hop}"
        )
    return kind, cfg


def _unwrap(state_dict: Mapping) -> Mapping:
    """Accept a generator file's ``{'generator': state_dict}`` as well as the state dict itself."""
    inner = state_dict.get("generator") if isinstance(state_dict, Mapping) else None
    return inner if isinstance(inner, Mapping) else state_dict


def _weight(state_dict: Mapping, name: str) -> torch.Tensor | None:
    """The kernel of conv ``name``: ``weight_v`` (weight-normed file) or ``weight`` (folded)."""
    for key in (f"{name}.weight_v", f"{name}.weight"):
        if key in state_dict:
            return state_dict[key]
    return None


def _kernel_shape(state_dict: Mapping, name: str) -> torch.Size:
    """The shape of conv ``name``'s kernel; ValueError when the state dict has none."""
    weight = _weight(state_dict, name)
    if weight is None:
        raise ValueError(f"cannot infer the vocoder layout: no kernel {name}.weight_v or {name}.weight")
    return weight.shape


def _describe(state_dict: Mapping) -> str:
    keys = [str(key) for key in state_dict.keys()]
    if {"cfg", "model"} <= set(keys):
        return "keys ['cfg', 'model'] (a WavLM checkpoint, not a vocoder)"
    if {"mpd", "msd"} <= set(keys):
        return "keys including 'mpd'/'msd' (a discriminator/optimiser file do_*.pt, not a generator g_*.pt)"
    shown = ", ".join(repr(key) for key in keys[:6])
    more = f", ... ({len(keys)} keys)" if len(keys) > 6 else ""
    return f"keys [{shown}{more}]"


def detect_kind(state_dict: Mapping) -> VocoderKind:
    """Architecture of a generator state dict, from its keys and shapes (spec §9.6).

    ``dec.*`` + ``sin_prenet.weight``: excitation-branch generator; harmonic when the branch doubles
    its width at each downsampling conv (32 -> 64 for the release), f0-sine when it keeps it
    (34 -> 34). Top-level ``lin_pre``/``conv_pre``/``ups``: kNN-VC. Weight-normed and folded
    state dicts are both recognised; ``{'generator': state_dict}`` is unwrapped.

    Raises:
        ValueError: not a generator state dict; the message names what was found.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"expected a vocoder state dict, got {type(state_dict).__name__}")
    if isinstance(state_dict.get("config"), Mapping) and "kind" in state_dict["config"]:
        return _config_from_metadata(state_dict["config"])[0]
    state_dict = _unwrap(state_dict)
    if "excitation_proj.weight" in state_dict and "head.weight" in state_dict:
        return VocoderKind.VOCOS
    prenet = state_dict.get("sin_prenet.weight")
    down = _weight(state_dict, "dec.downs.0")
    if isinstance(prenet, torch.Tensor) and isinstance(down, torch.Tensor):
        width_in, width_out = down.shape[1], down.shape[0]
        if width_out == width_in:
            return VocoderKind.SINE
        if width_out == 2 * width_in:
            return VocoderKind.HARMONIC
        raise ValueError(
            f"unknown excitation-branch vocoder: dec.downs.0 maps {width_in} -> {width_out} channels "
            "(harmonic doubles the width, f0-sine keeps it)"
        )
    if "lin_pre.weight" in state_dict and _weight(state_dict, "conv_pre") is not None and "ups.0.bias" in state_dict:
        return VocoderKind.KNNVC
    raise ValueError(f"not a HiFi-GAN generator state dict: found {_describe(state_dict)}")


def _count_indexed(state_dict: Mapping, prefix: str) -> int:
    """Number of consecutive ``{prefix}{i}.`` entries (i = 0, 1, ...)."""
    count = 0
    while any(key.startswith(f"{prefix}{count}.") for key in state_dict):
        count += 1
    return count


def config_from_state_dict(state_dict: Mapping, kind: VocoderKind | str | None = None) -> HiFiGANConfig:
    """Official default config with the widths and kernel sizes read from ``state_dict``'s shapes.

    Infers ``hubert_dim``, ``hifi_dim``, ``upsample_initial_channel``, ``n_harmonic``,
    ``upsample_kernel_sizes`` (rates: the defaults when the kernels are the defaults, else
    kernel // 2, the HiFi-GAN convention) and ``resblock_kernel_sizes``. Dilations cannot be read
    from shapes; the defaults are kept when the block structure matches them.
    """
    state_dict = _unwrap(state_dict)
    kind = VocoderKind(kind) if kind is not None else detect_kind(state_dict)
    prefix = "" if kind == VocoderKind.KNNVC else "dec."
    cfg = HiFiGANConfig()
    values = cfg.to_dict()
    hifi_dim, hubert_dim = state_dict[f"{prefix}lin_pre.weight"].shape
    values["hubert_dim"], values["hifi_dim"] = int(hubert_dim), int(hifi_dim)
    values["upsample_initial_channel"] = int(_kernel_shape(state_dict, f"{prefix}conv_pre")[0])

    n_stages = _count_indexed(state_dict, f"{prefix}ups.")
    kernels = [int(_kernel_shape(state_dict, f"{prefix}ups.{i}")[2]) for i in range(n_stages)]
    values["upsample_kernel_sizes"] = kernels
    if kernels != cfg.upsample_kernel_sizes:
        values["upsample_rates"] = [kernel // 2 for kernel in kernels]
        logger.warning("non-default upsample kernels %s: assuming upsample rates %s", kernels, values["upsample_rates"])

    n_blocks = _count_indexed(state_dict, f"{prefix}resblocks.")
    if n_stages == 0 or n_blocks % n_stages:
        raise ValueError(f"cannot infer the vocoder layout: {n_stages} upsample stages, {n_blocks} resblocks")
    n_kernels = n_blocks // n_stages
    block_kernels = [int(_kernel_shape(state_dict, f"{prefix}resblocks.{j}.convs1.0")[2]) for j in range(n_kernels)]
    n_dilations = [_count_indexed(state_dict, f"{prefix}resblocks.{j}.convs1.") for j in range(n_kernels)]
    if n_dilations != [len(d) for d in cfg.resblock_dilation_sizes]:
        raise ValueError(
            f"cannot infer resblock dilations for {n_dilations} convs per block; pass a HiFiGANConfig"
        )
    values["resblock_kernel_sizes"] = block_kernels

    if kind != VocoderKind.KNNVC:
        prenet_channels = int(state_dict["sin_prenet.weight"].shape[0])
        values["n_harmonic"] = prenet_channels - (SINE_EXTRA_CHANNELS if kind == VocoderKind.SINE else 0)
        values["with_harm"] = kind == VocoderKind.HARMONIC
    return HiFiGANConfig.from_dict(values)


def _is_folded(state_dict: Mapping, kind: VocoderKind) -> bool:
    prefix = "" if kind == VocoderKind.KNNVC else "dec."
    return f"{prefix}ups.0.weight" in state_dict and f"{prefix}ups.0.weight_v" not in state_dict


def _check_state_dict(model: nn.Module, state_dict: Mapping, cfg: HiFiGANConfig, kind: VocoderKind) -> None:
    """Raise a one-line ValueError naming the first key or shape that does not fit ``model``."""
    summary = (
        f"{kind.value} vocoder with hubert_dim={cfg.hubert_dim}, hifi_dim={cfg.hifi_dim}, "
        f"upsample_initial_channel={cfg.upsample_initial_channel}, n_harmonic={cfg.n_harmonic}"
    )
    check_keys(model.state_dict(), state_dict, summary)


def check_keys(expected: Mapping, state_dict: Mapping, summary: str) -> None:
    """Raise a one-line ValueError naming the first missing, unexpected or misshapen key of
    `state_dict` against the model's own `expected` state dict (`summary` describes the model)."""
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise ValueError(
            f"state dict does not fit the {summary}: missing keys {missing[:4]}"
            f"{'...' if len(missing) > 4 else ''}, unexpected keys {unexpected[:4]}"
            f"{'...' if len(unexpected) > 4 else ''}"
        )
    for key, tensor in expected.items():
        found = state_dict[key]
        if not isinstance(found, torch.Tensor) or found.shape != tensor.shape:
            found_shape = tuple(found.shape) if isinstance(found, torch.Tensor) else type(found).__name__
            raise ValueError(
                f"state dict does not fit the {summary}: key {key!r} has shape {found_shape} "
                f"in the checkpoint but {tuple(tensor.shape)} in the model"
            )


def load_generator(state_dict: Mapping, config: Any = None) -> tuple[VocoderKind, Any]:
    """Detect the architecture, build it and load ``state_dict`` strictly; returns it in eval mode.

    Args:
        state_dict: a generator state dict (official legacy weight-norm keys, or folded ``weight``
            keys from a model whose weight norm was removed), or a generator file dict:
            ``{'generator': ...}`` (official) or ``{'generator': ..., 'config': ...}``
            (self-describing, :func:`generator_file`; its config is used).
        config: architecture config; None infers the widths from the shapes over the official
            defaults (:func:`config_from_state_dict`) or takes a self-describing file's config.

    Returns:
        (kind, generator) holding the checkpoint's tensors (float32; built on the meta device,
        so without a wasted random initialisation), with weight norm still in place for
        weight-normed inputs; call ``generator.remove_weight_norm()`` for faster inference.

    Raises:
        ValueError: not a vocoder state dict, or shapes that do not fit ``config`` (one line naming
            the key and both shapes).
    """
    metadata = state_dict.get("config") if isinstance(state_dict, Mapping) else None
    if isinstance(metadata, Mapping) and "kind" in metadata:
        kind, described = _config_from_metadata(metadata)
        state_dict = _unwrap(state_dict)
        cfg = config if config is not None else described
    else:
        state_dict = _unwrap(state_dict)
        kind = detect_kind(state_dict)
        if kind is VocoderKind.VOCOS and config is None:
            raise ValueError(
                "a vocos state dict without its file's 'config' entry: load the whole generator file "
                "({'generator': ..., 'config': ...}) or pass a VocosConfig"
            )
        cfg = config if config is not None else config_from_state_dict(state_dict, kind)
    if kind is VocoderKind.VOCOS:
        return kind, _load_vocos(state_dict, cfg)
    with torch.device("meta"):  # no random initialisation: the checkpoint's tensors are taken as they are
        model = build_generator(kind, cfg)
    if _is_folded(state_dict, kind):
        model.remove_weight_norm()
    _check_state_dict(model, state_dict, cfg, kind)
    state_dict = {
        key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()
    }
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.eval()
    return kind, model


def _load_vocos(state_dict: Mapping, cfg: Any) -> nn.Module:
    """Build a Vocos generator of ``cfg`` on the meta device and load ``state_dict`` strictly (eval mode)."""
    from hifigan.vocos import VocosGenerator

    with torch.device("meta"):
        model = VocosGenerator(cfg)
    summary = (
        f"vocos vocoder at {cfg.sample_rate} Hz with input_dim={cfg.input_dim}, dim={cfg.dim}, "
        f"num_layers={cfg.num_layers}, n_fft={cfg.fft_length}"
    )
    check_keys(model.state_dict(), state_dict, summary)
    model.load_state_dict({key: value.float() for key, value in state_dict.items()}, strict=True, assign=True)
    model.window = torch.hann_window(cfg.fft_length, periodic=True)  # a buffer, not in the state dict
    model.eval()
    return model
