"""Every setting of the method and its default, once: the signal path's constants, the matching
settings (`MatchConfig`), block sizes and the default checkpoints and pitch extractor.

The command-line applications, the Python API, torch.hub and the Hydra configs all take their
defaults from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hifigan.excitation import HOP_LENGTH, SAMPLE_RATE  # noqa: F401  (defined with the lowest layer that needs them)

N_HARMONICS = 49
"""Harmonic amplitudes read per reference frame (harmonics 1..49)."""

WAVLM_LAYER = 6
"""WavLM-Large layer used for matching and synthesis (output of transformer block 6)."""

WAVLM_CHUNK_SECONDS = 30.0
"""WavLM encodes long recordings in chunks of this length (the reference's), each right-padded."""

DEFAULT_WAVLM = "wavlm-large"
"""Encoder checkpoint used when none is named (see `knnsvc.checkpoints.RELEASES`)."""

DEFAULT_VOCODER = "knnsvc-singing"
"""Vocoder checkpoint used when none is named: the kNN-SVC harmonic vocoder trained on OpenSinger."""

DEFAULT_F0 = "harvest"
"""Pitch extractor used when none is named: WORLD Harvest, which the released vocoders were trained on."""

DEFAULT_BLOCK_SECONDS = 30.0
"""Length of the F0 and vocoder blocks (0 = whole recordings)."""

MIN_BLOCK_SECONDS = 1.0
MAX_BLOCK_SECONDS = 3600.0
"""Block lengths accepted besides 0: shorter blocks are mostly margin, longer ones unbound memory."""

PRECISIONS = ("float64", "float32")
"""Arithmetic of the matching stage; float64 is the reference's."""

PROTECT_OFF = 0.5
"""`MatchConfig.protect` at this value (RVC's convention) leaves unvoiced frames alone."""

RMS_WINDOW_FRAMES = 25
"""Window of the loudness envelopes that `MatchConfig.rms_mix` compares (0.5 s, centred)."""

AUTO_SHIFTS = ("auto", "auto-semitone", "auto-octave")
"""Automatic shifts: the paper's continuous one, and the same rounded to semitones or octaves."""

MAX_SHIFT_SEMITONES = 48.0
"""Largest transposition accepted (four octaves); beyond it the vocoders leave their range."""

PitchShift = str | float | None
"""One of `AUTO_SHIFTS`, a number of semitones, or None (keep the source pitch)."""


def parse_pitch_shift(value: object) -> PitchShift:
    """Canonical form of a pitch-shift setting: an `AUTO_SHIFTS` name, finite semitones, or None.

    Accepts the strings "auto", "auto-semitone", "auto-octave", "none" (any case), None, numbers
    and numeric strings ("-3", "+12").

    Raises:
        ValueError: anything else, a non-finite number, or more than `MAX_SHIFT_SEMITONES`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in AUTO_SHIFTS:
            return text
        if text in ("none", "null", "off"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"pitch shift must be {', '.join(AUTO_SHIFTS)}, none or a number of semitones, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"pitch shift must be a name or a number of semitones, got {value!r}")
    semitones = float(value)
    if not math.isfinite(semitones) or abs(semitones) > MAX_SHIFT_SEMITONES:
        raise ValueError(
            f"pitch shift must be a finite number of semitones within ±{MAX_SHIFT_SEMITONES:g}, got {value!r}"
        )
    return semitones


@dataclass
class MatchConfig:
    """How source frames are matched to the pool and blended. Defaults reproduce the reference
    (`post_opt_0.2`); every other value of the controls below is a named option.

    Attributes:
        n_candidates: cosine-nearest pool frames kept per source frame.
        topk: frames averaged per output frame (the reference hard-codes 4).
        concat_weight: m, the concatenation-cost weight of the reselection; None = no
            reselection (the reference's `no_post_opt`).
        optimise_weights: optimise the summing weights for smoothness; False = plain mean.
        pitch_shift: "auto" moves the source's median log-F0 onto the reference's (the paper);
            "auto-semitone" / "auto-octave" round that interval to whole semitones / octaves (an
            octave keeps a song's key); a number transposes by that many semitones; None (or
            "none") keeps the source pitch. Strings and numbers are accepted (Hydra, CLI).
        precision: dtype of the matching arithmetic; "float64" is the reference's.
        sticky_concat_switch: reproduce the reference quirk that switches the harmonic pass's
            concatenation term off for good after the first fast-changing frame (spec §7.3).
        smooth_every_vocoder: also reselect/optimise for the f0-sine and kNN-VC vocoders (the
            reference uses the plain mean of the first K for them).
        respect_file_boundaries: natural successors and the smoothness loss's neighbour frames
            stay inside each reference file (the reference runs across file boundaries, as if
            the files were one recording).
        max_opt_iters: iteration cap of the weight optimisation (the reference's is 100 000).
        index_rate: R in feats = R * matched + (1 - R) * source, RVC's ``index_rate``
            (1 = the matched features only, the reference).
        protect: RVC's ``protect``: on unvoiced source frames (consonants, breaths) the features
            become protect * blended + (1 - protect) * source; 0.5 (the default, as in RVC)
            switches it off, 0 keeps the source features there entirely.
        rms_mix: M, how far the output's loudness envelope (0.5 s windows) follows the source's:
            gain (rms_source / rms_output) ** M; 0 = off (the reference). RVC's
            ``rms_mix_rate`` is 1 - M.
        match_layers: match on the mean of these WavLM layers' hidden states (e.g. 20..24, as
            NeuCoSVC) while the chosen frames' layer-6 features are what the vocoder gets; None
            matches on the synthesis layer itself (the reference). The pool must hold them
            (built with the same setting).
    """

    n_candidates: int = 32
    topk: int = 4
    concat_weight: float | None = 0.2
    optimise_weights: bool = True
    pitch_shift: Any = "auto"
    precision: str = "float64"
    sticky_concat_switch: bool = True
    smooth_every_vocoder: bool = False
    respect_file_boundaries: bool = False
    max_opt_iters: int = 100_000
    index_rate: float = 1.0
    protect: float = PROTECT_OFF
    rms_mix: float = 0.0
    match_layers: list[int] | None = None

    def __post_init__(self) -> None:
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {self.n_candidates}")
        if self.topk < 1 or self.topk > self.n_candidates:
            raise ValueError(f"topk must be in 1..{self.n_candidates}, got {self.topk}")
        if self.concat_weight is not None and not (math.isfinite(self.concat_weight) and self.concat_weight >= 0):
            raise ValueError(f"concat_weight must be a finite number >= 0 (or None), got {self.concat_weight}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.max_opt_iters < 1:
            raise ValueError(f"max_opt_iters must be >= 1, got {self.max_opt_iters}")
        for name, low, high in (("index_rate", 0.0, 1.0), ("protect", 0.0, PROTECT_OFF), ("rms_mix", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
        self.pitch_shift = parse_pitch_shift(self.pitch_shift)
        if self.match_layers is not None:
            layers = [int(layer) for layer in self.match_layers]
            if not layers or any(layer < 0 for layer in layers) or len(set(layers)) != len(layers):
                raise ValueError(f"match_layers must be distinct layer numbers >= 0, got {self.match_layers}")
            self.match_layers = sorted(layers)

    @property
    def blends_source(self) -> bool:
        """Whether the vocoder's features mix in the source's own features."""
        return self.index_rate < 1.0 or self.protect < PROTECT_OFF
