"""Training data of the vocoder: the prematched dataset and a resumable sampler.

The dataset reads exactly the rows of the split list it is given (``training/corpus.py``; the
reference read the lists but then paired every file under the folders by sorted order). It needs
neither WavLM nor the converter: only the feature files prematching wrote.

Harmonic input of the harmonic generator (spec §10.2 notes a train/inference mismatch):

- ``HarmonicInput.MATCHED`` (default): the amplitudes prematching computed with the inference
  matching code (pitch-priority candidates, reselection, optimised weights, no amplitude ratio),
  i.e. what the generator receives at conversion time.
- ``HarmonicInput.RANDOM_CANDIDATE``: the reference's training input: per frame one of the K
  pitch-priority candidates, uniformly at random, times its amplitude ratio.

Every item carries features, F0 and amplitudes, whatever the generator: every generator takes
``(feats, f0_hz, amps)`` and ignores what it does not use.

Other differences from the reference dataset (spec §10.2, §15 D19): F0 is the utterance's Harvest
F0 stored by prematching (the reference ran Harvest on every 0.44 s crop, on the CPU, per item),
so the generator sees the pitch track inference computes on whole recordings; f0 is (T,) per item
and (B, T) per batch; a crop may start at any of the T - 22 + 1 frame positions (the reference
never picked the last one); items shorter than a segment are left out when the dataset is built
(the reference's padding branch was broken).

Output rate (``sample_rate``): the audio is read at the vocoder's output rate (``hop`` =
sample_rate / 50 samples per frame: 320 at 16 kHz, 480 at 24 kHz, 882 at 44.1 kHz), while the
features stay the 16 kHz prematched ones (50 frames per second at every rate). A listed file
whose own rate is below the output rate is an error: a vocoder trained on upsampled audio learns
an empty top band. The amplitudes should have been prematched for the same rate
(``prematch ... sample_rate=``: ``harmonics_for_rate(sample_rate)`` columns, what inference feeds a
vocoder at that rate); features of another number of columns are used, with one WARNING.

Randomness (crop positions, random candidates, the epoch's order) is a pure function of
``(seed, epoch, index)``, so a run resumed from a checkpoint sees exactly the batches it would
have seen, with any number of data-loader workers.

Shape letters: B batch, T frames, D feature dim, H harmonics, K candidates, L samples, M mels.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, TypedDict

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

from hifigan.mel import LogMelSpectrogram, MelConfig
from hifigan.presets import hop_for_rate
from knnsvc.audio import AudioError, load_audio
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.harmonics import harmonics_for_rate
from knnsvc.runtime import first_line
from knnsvc.training.corpus import SplitEntry
from knnsvc.training.features import PrematchedFeatures

log = logging.getLogger(__name__)

SEGMENT_SIZE = 7040
"""Training segment in samples (22 frames, 0.44 s), from the official config."""


class HarmonicInput(str, enum.Enum):
    """Which harmonic amplitudes the harmonic generator is trained on (see the module docstring)."""

    MATCHED = "matched"
    RANDOM_CANDIDATE = "random_candidate"


class BadFilePolicy(str, enum.Enum):
    """What to do with a list entry whose audio/features are missing, unreadable or too short."""

    SKIP = "skip"
    """Leave it out with a WARNING naming the file (the run stops if nothing usable remains)."""
    ERROR = "error"
    """Stop with a ValueError naming the first bad file."""


@dataclass
class _Item:
    entry: SplitEntry
    audio: Path
    features: Path


class VocoderItem(TypedDict):
    """One item of :class:`VocoderDataset` (shapes there)."""

    feats: torch.Tensor
    wav: torch.Tensor
    f0_hz: torch.Tensor
    amps: torch.Tensor
    log_mel: torch.Tensor
    index: int


class VocoderDataset(Dataset):
    """Prematched features paired with their audio, per a split list.

    Items are `VocoderItem` dicts of tensors:

    - ``feats`` (T, D) float32 prematched WavLM features
    - ``wav`` (L,) float32 target audio at ``sample_rate``, L = T * hop
    - ``f0_hz`` (T,) float32 the utterance's Harvest F0 (the generators take (B, T))
    - ``amps`` (T, H) float32 harmonic amplitudes (see ``harmonic_input``)
    - ``log_mel`` (M, T) float32 mel-loss target
    - ``index`` int, the row of the split list

    With ``segment_size`` set (training) a random aligned crop of segment_size samples at the
    output rate (= segment_size / hop frames) is returned; with None (validation) the whole utterance.

    Entries whose files are missing or unreadable, or (when cropping) shorter than one segment,
    are handled per ``on_bad_file`` when the dataset is built: the list stays fixed afterwards,
    so the epoch order does not depend on what is found later. A file recorded below
    ``sample_rate`` is a ValueError whatever the policy (it names the files).
    """

    def __init__(
        self,
        entries: Sequence[SplitEntry],
        corpus_dir: str | Path,
        features_dir: str | Path,
        segment_size: int | None = SEGMENT_SIZE,
        harmonic_input: HarmonicInput | str = HarmonicInput.MATCHED,
        seed: int = 1234,
        on_bad_file: BadFilePolicy | str = BadFilePolicy.SKIP,
        mel_config: MelConfig = MelConfig(),
        name: str = "dataset",
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        self.sample_rate = sample_rate
        self.hop_length = HOP_LENGTH if sample_rate == SAMPLE_RATE else hop_for_rate(sample_rate)
        if segment_size is not None and segment_size % self.hop_length:
            raise ValueError(
                f"segment_size must be a multiple of {self.hop_length} (samples per frame at {sample_rate} Hz), "
                f"got {segment_size}"
            )
        if (mel_config.sample_rate, mel_config.hop_length) != (sample_rate, self.hop_length):
            raise ValueError(
                f"the mel loss runs at {mel_config.sample_rate} Hz with hop {mel_config.hop_length}, but the "
                f"audio is read at {sample_rate} Hz with hop {self.hop_length}; set mel.sample_rate and "
                "mel.hop_length to match (hifigan.presets.mel_config gives them)"
            )
        self.corpus_dir = Path(corpus_dir)
        self.features_dir = Path(features_dir)
        self.segment_size = segment_size
        self.harmonic_input = HarmonicInput(harmonic_input)
        self.seed = seed
        self.on_bad_file = BadFilePolicy(on_bad_file)
        self.name = name
        self.log_mel = LogMelSpectrogram(mel_config)
        self.items = self._check_entries(entries)
        self._warned_columns = False
        if not self.items:
            raise ValueError(
                f"{name}: none of the {len(entries)} listed files is usable "
                f"(corpus_dir={self.corpus_dir}, features_dir={self.features_dir}); see the warnings above"
            )

    @property
    def segment_frames(self) -> int | None:
        return None if self.segment_size is None else self.segment_size // self.hop_length

    def __len__(self) -> int:
        return len(self.items)

    def _check_entries(self, entries: Sequence[SplitEntry]) -> list[_Item]:
        items, problems, low_rate = [], [], []
        min_samples = self.segment_size or self.hop_length
        rate = self.sample_rate
        for entry in entries:
            audio = self.corpus_dir / entry.audio_path
            features = self.features_dir / entry.feat_path
            problem = None
            if not audio.is_file():
                problem = f"{audio}: audio file not found"
            elif not features.is_file():
                problem = f"{features}: feature file not found (prematch the corpus first)"
            else:
                try:
                    info = sf.info(str(audio))
                    if info.samplerate < rate:
                        low_rate.append(f"{audio} ({info.samplerate} Hz)")
                        continue
                    samples = int(info.frames * rate / info.samplerate)
                    if samples < min_samples:
                        problem = (
                            f"{audio}: {samples / rate:.3f} s is shorter than one training segment "
                            f"({min_samples / rate:.2f} s)"
                        )
                except (sf.LibsndfileError, RuntimeError, TypeError) as err:
                    problem = f"{audio}: not a readable audio file ({first_line(err)})"
            if problem is None:
                items.append(_Item(entry, audio, features))
                continue
            if self.on_bad_file is BadFilePolicy.ERROR:
                raise ValueError(f"{self.name}: {problem}")
            problems.append(problem)
        if low_rate:
            raise ValueError(
                f"{self.name}: {len(low_rate)} file(s) are recorded below the output rate {rate} Hz: "
                + ", ".join(low_rate[:5])
                + (" ..." if len(low_rate) > 5 else "")
                + "; remove them from the list or train at a lower sample_rate"
            )
        for problem in problems:
            log.warning("%s: skipping %s", self.name, problem)
        if problems:
            log.warning("%s: %d of %d listed files skipped", self.name, len(problems), len(entries))
        return items

    def load(self, index: int) -> tuple[torch.Tensor, PrematchedFeatures]:
        """The audio (L,) at ``sample_rate`` and the feature file of row ``index``, checked for consistency."""
        item = self.items[index]
        try:
            wav = load_audio(item.audio, sample_rate=self.sample_rate)
        except AudioError as err:
            raise ValueError(f"{self.name}: {err}") from None
        features = PrematchedFeatures.load(item.features)
        if self.sample_rate != SAMPLE_RATE:
            expected = features.num_samples * self.sample_rate / SAMPLE_RATE  # resampled lengths round
            if abs(wav.numel() - expected) > self.sample_rate / SAMPLE_RATE + 1:
                raise ValueError(
                    f"{self.name}: {item.features} was computed from {features.num_samples} samples at 16 kHz "
                    f"but {item.audio} has {wav.numel()} at {self.sample_rate} Hz; the feature file belongs "
                    "to another recording (prematch again)"
                )
        elif features.num_samples != wav.numel():
            raise ValueError(
                f"{self.name}: {item.features} was computed from {features.num_samples} samples but "
                f"{item.audio} has {wav.numel()} at 16 kHz; the feature file belongs to another recording "
                "(prematch again)"
            )
        columns = harmonics_for_rate(self.sample_rate)
        if features.amps.shape[-1] != columns and not self._warned_columns:
            self._warned_columns = True
            log.warning("%s: %s holds %d harmonic amplitude columns, but a %d Hz vocoder gets %d at conversion; "
                        "prematch the corpus with sample_rate=%d", self.name, item.features,
                        features.amps.shape[-1], self.sample_rate, columns, self.sample_rate)
        return wav, features

    def __getitem__(self, key: int | tuple[int, int]) -> VocoderItem:
        """Item ``index``; the sampler passes ``(index, epoch)`` so crops differ per epoch."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        wav, features = self.load(index)
        hop = self.hop_length
        n_frames = min(features.num_frames, wav.numel() // hop)
        rng = np.random.default_rng([self.seed, epoch, index])
        if self.segment_frames is None:
            start, length = 0, n_frames
        else:
            length = self.segment_frames
            if n_frames < length:
                raise ValueError(
                    f"{self.name}: {self.items[index].features} has {n_frames} frames, fewer than one segment"
                )
            start = int(rng.integers(0, n_frames - length + 1))
        frames = slice(start, start + length)
        segment = wav[start * hop : (start + length) * hop]
        return {
            "feats": features.feats[frames].float(),
            "wav": segment,
            "f0_hz": features.f0_hz[frames].float(),
            "amps": self._amps(features, frames, rng),
            "log_mel": self.log_mel(segment),
            "index": index,
        }

    def _amps(self, features: PrematchedFeatures, frames: slice, rng: np.random.Generator) -> torch.Tensor:
        if self.harmonic_input is HarmonicInput.MATCHED:
            return features.amps[frames].float()
        candidates = features.candidate_amps[frames].float()  # (T, K, H)
        ratio = features.amp_ratio[frames].float()  # (T, K)
        choice = torch.from_numpy(rng.integers(0, candidates.shape[1], size=candidates.shape[0]))
        rows = torch.arange(candidates.shape[0])
        return candidates[rows, choice] * ratio[rows, choice, None]


class EpochSampler(Sampler):
    """Seeded per-epoch shuffle, sharded over distributed ranks, resumable mid-epoch.

    Epoch e's order is ``randperm(n)`` from a generator seeded with ``seed + e``; rank r of W takes
    every W-th position starting at r (the list is cut to a multiple of W so ranks stay in step).
    Yields ``(index, epoch)`` pairs for :class:`VocoderDataset`.
    """

    def __init__(
        self, num_items: int, seed: int = 1234, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_items < world_size:
            raise ValueError(f"{num_items} items cannot be shared by {world_size} ranks")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; skip its first ``start`` items of this rank (for resuming)."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return self.num_items // self.world_size - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        per_rank = self.num_items // self.world_size
        mine = order[self.rank : per_rank * self.world_size : self.world_size]
        for index in mine[self.start :]:
            yield index, self.epoch
