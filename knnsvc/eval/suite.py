"""Run every metric over a set of converted recordings: per-utterance rows plus one summary.

Each metric family is one function ``metric(ctx) -> summary dict`` registered in `METRICS`; it
writes its per-utterance values into ``ctx.rows[item_id]`` and reports items it cannot score
through ``ctx.problems`` (one line each) without stopping the others. Adding a metric = adding one
such function and its name to `METRICS`.

Units in the summary: ``eer``, ``wer``, ``cer``, ``vuv_error`` and ``gross_pitch_error`` in percent; ``sim`` and
``f0_corr`` in [-1, 1]; ``f0_rmse_cents`` in cents; ``dnsmos`` on the 1–5 MOS scale; ``rtf`` in
seconds of processing per second of audio; ``peak_rss_gb`` in GiB.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knnsvc.audio import AudioError, is_silent, load_audio, silent
from knnsvc.config import SAMPLE_RATE
from knnsvc.eval import METRIC_KEYS
from knnsvc.eval.dataset import Problems
from knnsvc.eval.intelligibility import WhisperSettings, WhisperTranscriber, error_rates, find_transcript
from knnsvc.eval.pitch_accuracy import expected_f0, f0_scores
from knnsvc.eval.speaker import (
    EmbeddingCache,
    Trial,
    cosine_similarity,
    make_embedder,
    make_trials,
    per_speaker_eer,
)
from knnsvc.eval.speed import real_time_factor
from knnsvc.pitch import harvest_f0
from knnsvc.runtime import first_line

log = logging.getLogger(__name__)

CONVERSION_STAGES = ("encode", "f0", "knn", "reselect", "optimise", "vocode")
"""Stages of one conversion (`KnnSvc.timings` names) that count towards the real-time factor.
Building the target's reference pool is a one-off per speaker and reported separately."""


@dataclass
class EvalItem:
    """One converted recording to score.

    Attributes:
        item_id: unique name (``<source speaker>/<utterance>/<target speaker>`` in evaluations).
        converted: the converted audio file.
        target_speaker: key into the targets mapping.
        source: the source recording (needed for WER/CER without transcript and for pitch).
        expected_f0_hz: (T,) the F0 the converter was asked to produce; None = derive it from the
            source and target F0 (audio converted by another system).
        stage_seconds: conversion time per stage (empty for external audio: no RTF).
        peak_rss_gb / peak_cuda_gb: memory peaks of the converting process, if known.
    """

    item_id: str
    converted: Path
    target_speaker: str
    source: Path | None = None
    source_speaker: str | None = None
    expected_f0_hz: torch.Tensor | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_gb: float | None = None
    peak_cuda_gb: float | None = None


@dataclass
class SuiteSettings:
    """Which metrics run and how.

    Attributes:
        metrics: names from `METRICS`, in order.
        embedder: ``resemblyzer`` or ``speechbrain:<local model folder>``.
        whisper: ASR model and decoding settings.
        pitch_shift: how the expected F0 of external audio is derived (``auto``, semitones, None).
        device: for the embedder and the ASR.
        max_target_files: real recordings per target speaker used for the centroid and EER anchors
            (None = all).
    """

    metrics: tuple[str, ...] = ("speaker", "intelligibility", "pitch", "quality", "speed")
    embedder: str = "resemblyzer"
    whisper: WhisperSettings = field(default_factory=WhisperSettings)
    pitch_shift: str | float | None = "auto"
    device: str = "cpu"
    max_target_files: int | None = None


@dataclass
class Measurements:
    """What the metric families measured, per item and once per run; every summary value is computed
    from it alone (`summarise`), so the measurements of several shards of a run, joined in item order
    (`join_measurements`), give the summary of the whole run to the last bit.

    Attributes:
        item_ids, target_speakers: (M,) the items in order.
        real_ids: target speaker -> ids (paths) of the real recordings used for it.
        items: family -> item id -> that item's values (only items the family could measure).
        shared: family -> values measured once per run (models' names, real recordings' embeddings).
    """

    item_ids: list[str]
    target_speakers: list[str]
    real_ids: dict[str, list[str]]
    items: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    shared: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, family: str, item_id: str, **values: Any) -> dict[str, Any]:
        """Keep `values` as what `family` measured for item `item_id`; returns the kept dict."""
        self.items.setdefault(family, {})[item_id] = values
        return values

    def of(self, family: str) -> dict[str, dict[str, Any]]:
        """Item id -> values of `family` (empty if it measured nothing)."""
        return self.items.get(family, {})

    def subset(self, item_ids: Sequence[str]) -> Measurements:
        """The measurements of some of the items (a shard's), with the shared values."""
        keep = set(item_ids)
        positions = [n for n, item_id in enumerate(self.item_ids) if item_id in keep]
        return Measurements(
            item_ids=[self.item_ids[n] for n in positions],
            target_speakers=[self.target_speakers[n] for n in positions],
            real_ids=self.real_ids,
            items={family: {k: v for k, v in values.items() if k in keep} for family, values in self.items.items()},
            shared=self.shared,
        )

    def to_plain(self) -> dict[str, Any]:
        """A JSON-safe form that `from_plain` turns back into equal measurements (arrays exactly)."""
        return _encode({"item_ids": self.item_ids, "target_speakers": self.target_speakers,
                        "real_ids": self.real_ids, "items": self.items, "shared": self.shared})

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Measurements:
        """The measurements `to_plain` wrote."""
        decoded = _decode(dict(data))
        return cls(list(decoded["item_ids"]), list(decoded["target_speakers"]), dict(decoded["real_ids"]),
                   dict(decoded["items"]), dict(decoded["shared"]))


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": str(value.dtype), "values": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "values"}:
            return np.asarray(value["values"], dtype=np.dtype(value["__ndarray__"]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def join_measurements(parts: Sequence[Measurements], item_ids: Sequence[str]) -> Measurements:
    """The measurements of a whole run from those of its shards (`parts`), items in the run's order
    `item_ids`; shared values are taken from the first part that has them."""
    speakers: dict[str, str] = {}
    joined = Measurements([], [], {})
    for part in parts:
        speakers.update(zip(part.item_ids, part.target_speakers, strict=True))
        if not joined.real_ids:
            joined.real_ids = part.real_ids
        for family, values in part.shared.items():
            joined.shared.setdefault(family, values)
    for item_id in item_ids:
        joined.item_ids.append(item_id)
        joined.target_speakers.append(speakers[item_id])
        for part in parts:
            for family, values in part.items.items():
                if item_id in values:
                    joined.record(family, item_id, **values[item_id])
    return joined


class EvalContext:
    """Shared state of one suite run: items, targets, caches, rows and problem reports."""

    def __init__(
        self,
        items: Sequence[EvalItem],
        targets: Mapping[str, Sequence[Path]],
        settings: SuiteSettings,
        problems: Problems,
        trials: Sequence[Trial] | None = None,
    ) -> None:
        self.items = list(items)
        self.by_id = {item.item_id: item for item in self.items}
        self.targets = {spk: list(files)[: settings.max_target_files] for spk, files in targets.items()}
        self.settings = settings
        self.problems = problems
        self.trials = list(trials) if trials is not None else None
        self.rows: dict[str, dict[str, Any]] = {item.item_id: _base_row(item) for item in self.items}
        self.measured = Measurements([item.item_id for item in self.items],
                                     [item.target_speaker for item in self.items],
                                     {spk: [str(p) for p in files] for spk, files in self.targets.items()})
        self._f0_cache: dict[Path, torch.Tensor] = {}
        self._failed_audio: set[Path] = set()

    def audio(self, path: Path) -> torch.Tensor:
        """Load a recording at 16 kHz (raises AudioError, reported once per file by callers)."""
        return load_audio(path, SAMPLE_RATE)

    def f0(self, path: Path) -> torch.Tensor:
        """Harvest F0 of a recording, computed once."""
        if path not in self._f0_cache:
            self._f0_cache[path] = harvest_f0(self.audio(path))
        return self._f0_cache[path]

    def fail(self, item: EvalItem | str, metric: str, err: BaseException) -> None:
        """Report that `metric` could not be computed for one item."""
        item_id = item if isinstance(item, str) else item.item_id
        message = first_line(err)
        self.problems.report(item_id, f"{metric}: {message}")
        if item_id in self.rows:
            previous = self.rows[item_id].get("error")
            self.rows[item_id]["error"] = f"{previous}; {metric}: {message}" if previous else f"{metric}: {message}"


def _base_row(item: EvalItem) -> dict[str, Any]:
    return {
        "item": item.item_id,
        "source_speaker": item.source_speaker,
        "source": str(item.source) if item.source else None,
        "target_speaker": item.target_speaker,
        "converted": str(item.converted),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _std(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(kept)) if kept else None


# --------------------------------------------------------------------------------------- metrics
def speaker_metric(ctx: EvalContext) -> dict[str, Any]:
    """Similarity to the target speaker's centroid, and per-target-speaker EER."""
    embedder = make_embedder(ctx.settings.embedder, ctx.settings.device)

    def load(item_id: str) -> torch.Tensor:
        item = ctx.by_id.get(item_id)
        return ctx.audio(item.converted if item else Path(item_id))

    embed = EmbeddingCache(embedder, load)
    unusable: set[str] = set()  # ids already reported, skipped silently afterwards
    real: dict[str, np.ndarray] = {}
    centroids: dict[str, np.ndarray] = {}
    for speaker, files in ctx.targets.items():
        embeddings = []
        for path in files:
            try:
                real[str(path)] = embed(str(path))
                embeddings.append(real[str(path)])
            except (AudioError, ValueError, RuntimeError) as err:
                unusable.add(str(path))
                ctx.problems.report(str(path), f"target recording left out of the speaker metrics: {first_line(err)}")
        if embeddings:
            centroids[speaker] = np.mean(embeddings, axis=0)
    shared: dict[str, Any] = {"embedder": embedder.name, "real": real}
    ctx.measured.shared["speaker"] = shared
    for item in ctx.items:
        if item.target_speaker not in centroids:
            ctx.fail(item, "sim", ValueError(f"no usable recording of target speaker '{item.target_speaker}'"))
            continue
        try:
            converted = embed(item.item_id)
        except (AudioError, ValueError, RuntimeError) as err:
            unusable.add(item.item_id)
            ctx.fail(item, "sim", err)
            continue
        centroid = centroids[item.target_speaker]
        sim = float(np.dot(converted, centroid / np.linalg.norm(centroid)))
        ctx.rows[item.item_id]["sim"] = sim
        ctx.measured.record("speaker", item.item_id, sim=sim, embedding=converted)

    if ctx.trials is not None:  # a pair list: its sides may be any recording, embedded here
        scored = []
        for trial in ctx.trials:
            pair = []
            for side in (trial.x, trial.y):
                if side in unusable:
                    break
                try:
                    pair.append(embed(side))
                except (AudioError, ValueError, RuntimeError) as err:
                    unusable.add(side)
                    ctx.problems.report(side, f"left out of the EER trials: {first_line(err)}")
                    break
            if len(pair) == 2:
                scored.append([trial.target_speaker, trial.x, trial.y, trial.label,
                               cosine_similarity(pair[0], pair[1])])
        shared["trial_scores"] = scored
    return speaker_summary(ctx.measured)


def speaker_summary(measured: Measurements) -> dict[str, Any]:
    """The speaker family's summary from its measurements: mean similarity, and the EER over the
    trials of a pair list, or else over balanced trials per target speaker (`make_trials`) scored
    with the stored embeddings (a trial with a side that could not be embedded is left out)."""
    values = measured.of("speaker")
    shared = measured.shared.get("speaker", {})
    sims = [values[item_id]["sim"] for item_id in measured.item_ids if item_id in values]
    scored_trials, scores = [], []
    if "trial_scores" in shared:
        for speaker, x, y, label, score in shared["trial_scores"]:
            scored_trials.append(Trial(speaker, x, y, label))
            scores.append(score)
    else:
        converted_ids: dict[str, list[str]] = defaultdict(list)
        for item_id, speaker in zip(measured.item_ids, measured.target_speakers, strict=True):
            converted_ids[speaker].append(item_id)
        embeddings = {**shared.get("real", {}), **{k: v["embedding"] for k, v in values.items()}}
        for trial in make_trials(converted_ids, measured.real_ids):
            if trial.x in embeddings and trial.y in embeddings:
                scored_trials.append(trial)
                scores.append(cosine_similarity(embeddings[trial.x], embeddings[trial.y]))
    eer = per_speaker_eer(scored_trials, scores)
    return {
        "sim": _mean(sims),
        "sim_std": _std(sims),
        "eer": None if eer.mean is None else 100.0 * eer.mean,
        "eer_std": None if eer.std is None else 100.0 * eer.std,
        "eer_per_speaker": {spk: 100.0 * v for spk, v in eer.per_speaker.items()},
        "eer_trials": len(scored_trials),
        "speaker_embedder": shared.get("embedder"),
    }


def intelligibility_metric(ctx: EvalContext) -> dict[str, Any]:
    """WER/CER of ASR(converted) against the source's transcript, or ASR(source) without one."""
    transcriber = WhisperTranscriber(ctx.settings.whisper, ctx.settings.device)
    ctx.measured.shared["intelligibility"] = {"asr_model": transcriber.name}
    source_text: dict[Path, tuple[str, str]] = {}
    for item in ctx.items:
        if item.source is None:
            ctx.fail(item, "wer", ValueError("no source recording: the reference text is unknown"))
            continue
        try:
            if item.source not in source_text:
                text = find_transcript(item.source)
                origin = "transcript"
                if text is None:
                    text, origin = transcriber.transcribe(ctx.audio(item.source)), "asr(source)"
                source_text[item.source] = (text, origin)
            reference, origin = source_text[item.source]
            hypothesis = transcriber.transcribe(ctx.audio(item.converted))
        except (AudioError, ValueError, RuntimeError) as err:
            ctx.fail(item, "wer", err)
            continue
        rates = error_rates([reference], [hypothesis])
        row = ctx.rows[item.item_id]
        row.update(
            wer=None if rates.wer is None else 100.0 * rates.wer,
            cer=None if rates.cer is None else 100.0 * rates.cer,
            reference_text=reference,
            reference_origin=origin,
            transcript=hypothesis,
        )
        if rates.words == 0:
            ctx.fail(item, "wer", ValueError(f"empty reference text ({origin})"))
            continue
        ctx.measured.record("intelligibility", item.item_id, reference=reference, hypothesis=hypothesis)
    return intelligibility_summary(ctx.measured)


def intelligibility_summary(measured: Measurements) -> dict[str, Any]:
    """WER and CER pooled over the items with a reference text (total edits / total length)."""
    values = measured.of("intelligibility")
    kept = [values[item_id] for item_id in measured.item_ids if item_id in values]
    pooled = error_rates([v["reference"] for v in kept], [v["hypothesis"] for v in kept])
    return {
        "wer": None if pooled.wer is None else 100.0 * pooled.wer,
        "cer": None if pooled.cer is None else 100.0 * pooled.cer,
        "asr_model": measured.shared.get("intelligibility", {}).get("asr_model"),
        "asr_words": pooled.words,
    }


def pitch_metric(ctx: EvalContext) -> dict[str, Any]:
    """F0 RMSE (cents), gross pitch error and V/UV error pooled over frames; F0 correlation
    averaged over utterances."""
    target_f0: dict[str, list[torch.Tensor]] = {}
    for item in ctx.items:
        try:
            expected = item.expected_f0_hz
            if expected is None:
                if item.source is None:
                    raise ValueError("no source recording: the expected F0 is unknown")
                if item.target_speaker not in target_f0:
                    target_f0[item.target_speaker] = [ctx.f0(p) for p in ctx.targets.get(item.target_speaker, [])]
                expected = expected_f0(ctx.f0(item.source), target_f0[item.target_speaker] or None,
                                       ctx.settings.pitch_shift)
            scores = f0_scores(expected, ctx.f0(item.converted))
        except (AudioError, ValueError, RuntimeError) as err:
            ctx.fail(item, "pitch", err)
            continue
        ctx.rows[item.item_id].update(
            f0_rmse_cents=scores.f0_rmse_cents,
            vuv_error=None if scores.vuv_error is None else 100.0 * scores.vuv_error,
            f0_corr=scores.f0_corr,
            gross_pitch_error=None if scores.gross_pitch_error is None else 100.0 * scores.gross_pitch_error,
        )
        ctx.measured.record("pitch", item.item_id, f0_rmse_cents=scores.f0_rmse_cents,
                            gross_pitch_error=scores.gross_pitch_error, voiced_both=scores.voiced_both,
                            vuv_error=scores.vuv_error, frames=scores.frames, f0_corr=scores.f0_corr)
    return pitch_summary(ctx.measured)


def pitch_summary(measured: Measurements) -> dict[str, Any]:
    """The pitch family's pooled errors and mean correlation from its per-item scores."""
    squared_cents = gross = 0.0
    voiced_both = 0
    vuv_wrong = 0.0
    frames = 0
    corrs = []
    values = measured.of("pitch")
    for item_id in measured.item_ids:
        if item_id not in values:
            continue
        scores = values[item_id]
        if scores["f0_rmse_cents"] is not None and scores["gross_pitch_error"] is not None:  # both need a voiced frame
            squared_cents += scores["f0_rmse_cents"] ** 2 * scores["voiced_both"]
            gross += scores["gross_pitch_error"] * scores["voiced_both"]
            voiced_both += scores["voiced_both"]
        if scores["vuv_error"] is not None:
            vuv_wrong += scores["vuv_error"] * scores["frames"]
            frames += scores["frames"]
        corrs.append(scores["f0_corr"])
    return {
        "f0_rmse_cents": math.sqrt(squared_cents / voiced_both) if voiced_both else None,
        "vuv_error": 100.0 * vuv_wrong / frames if frames else None,
        "f0_corr": _mean(corrs),
        "f0_corr_std": _std(corrs),
        "gross_pitch_error": 100.0 * gross / voiced_both if voiced_both else None,
    }


def quality_metric(ctx: EvalContext) -> dict[str, Any]:
    """DNSMOS (OVRL as ``dnsmos``; SIG, BAK and P.808 alongside)."""
    from knnsvc.eval.quality import dnsmos

    for item in ctx.items:
        try:
            wav = ctx.audio(item.converted)
            if is_silent(wav):
                raise ValueError(f"the converted audio: {silent()}")
            scores = dnsmos(wav)
        except (AudioError, ValueError, RuntimeError) as err:
            ctx.fail(item, "dnsmos", err)
            continue
        row = ctx.rows[item.item_id]
        row.update(dnsmos=scores.ovrl, dnsmos_sig=scores.sig, dnsmos_bak=scores.bak, dnsmos_p808=scores.p808)
        ctx.measured.record("quality", item.item_id, **{name: getattr(scores, name)
                                                         for name in ("ovrl", "sig", "bak", "p808")})
    return quality_summary(ctx.measured)


def quality_summary(measured: Measurements) -> dict[str, Any]:
    """Mean DNSMOS parts over the items that could be scored."""
    values = measured.of("quality")
    parts: dict[str, list[float]] = defaultdict(list)
    for item_id in measured.item_ids:
        if item_id in values:
            for name in ("ovrl", "sig", "bak", "p808"):
                parts[name].append(values[item_id][name])
    return {
        "dnsmos": _mean(parts["ovrl"]),
        "dnsmos_std": _std(parts["ovrl"]),
        "dnsmos_sig": _mean(parts["sig"]),
        "dnsmos_bak": _mean(parts["bak"]),
        "dnsmos_p808": _mean(parts["p808"]),
    }


def speed_metric(ctx: EvalContext) -> dict[str, Any]:
    """Real-time factor and per-stage seconds of the conversions that were timed; memory peaks."""
    for item in ctx.items:
        values = ctx.measured.record("speed", item.item_id, rss=item.peak_rss_gb, cuda=item.peak_cuda_gb)
        if not item.stage_seconds:
            continue
        seconds = sum(item.stage_seconds.get(s, 0.0) for s in CONVERSION_STAGES)
        row = ctx.rows[item.item_id]
        audio_seconds = row.get("audio_seconds")
        if audio_seconds is None:
            try:
                audio_seconds = ctx.audio(item.converted).numel() / SAMPLE_RATE
            except AudioError as err:
                ctx.fail(item, "rtf", err)
                continue
            row["audio_seconds"] = audio_seconds
        row["rtf"] = real_time_factor(seconds, audio_seconds)
        for stage, value in item.stage_seconds.items():
            row[f"seconds_{stage}"] = value
        values.update(seconds=seconds, audio_seconds=audio_seconds, stages=dict(item.stage_seconds))
    return speed_summary(ctx.measured)


def speed_summary(measured: Measurements) -> dict[str, Any]:
    """The real-time factor over all timed conversions, seconds per stage, and the memory peaks."""
    processing = audio = 0.0
    stages: dict[str, float] = defaultdict(float)
    rss, cuda = [], []
    values = measured.of("speed")
    for item_id in measured.item_ids:
        if item_id not in values:
            continue
        item = values[item_id]
        if item["rss"] is not None:
            rss.append(item["rss"])
        if item["cuda"] is not None:
            cuda.append(item["cuda"])
        if "seconds" not in item:
            continue
        for stage, value in item["stages"].items():
            stages[stage] += value
        processing += item["seconds"]
        audio += item["audio_seconds"]
    return {
        "rtf": real_time_factor(processing, audio) if audio else None,
        "stage_seconds": dict(stages) or None,
        "peak_rss_gb": max(rss) if rss else None,
        "peak_cuda_gb": max(cuda) if cuda else None,
    }


MetricFn = Callable[[EvalContext], dict[str, Any]]

METRICS: dict[str, MetricFn] = {
    "speaker": speaker_metric,
    "intelligibility": intelligibility_metric,
    "pitch": pitch_metric,
    "quality": quality_metric,
    "speed": speed_metric,
}
"""Metric families by name; each returns summary entries and fills per-utterance rows."""

SUMMARIES: dict[str, Callable[[Measurements], dict[str, Any]]] = {
    "speaker": speaker_summary,
    "intelligibility": intelligibility_summary,
    "pitch": pitch_summary,
    "quality": quality_summary,
    "speed": speed_summary,
}
"""Each family's summary from its measurements alone (what its metric function returns)."""


@dataclass
class SuiteResult:
    """Per-utterance rows (one per item, in item order), the run summary, what it was computed from
    and the families that could be computed (in order)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    measured: Measurements | None = None
    computed: tuple[str, ...] = ()


def summarise(measured: Measurements, computed: Sequence[str]) -> dict[str, Any]:
    """The summary `run_suite` returns, from measurements (e.g. the shards' joined): the
    `METRIC_KEYS`, then each computed family's entries in order, then ``n_items``."""
    summary: dict[str, Any] = {key: None for key in METRIC_KEYS}
    for name in computed:
        summary.update(SUMMARIES[name](measured))
    summary["n_items"] = len(measured.item_ids)
    return summary


def run_suite(
    items: Sequence[EvalItem],
    targets: Mapping[str, Sequence[Path]],
    settings: SuiteSettings | None = None,
    trials: Sequence[Trial] | None = None,
    problems: Problems | None = None,
) -> SuiteResult:
    """Compute the selected metric families for `items`.

    Args:
        items: converted recordings.
        targets: target speaker -> real recordings (centroids, EER anchors, target F0).
        settings: metric selection and models (None: the `SuiteSettings` defaults).
        trials: EER trials (from a pair list); None = built per target speaker.
        problems: where per-item problems are reported (a new collector if None).

    A metric family that cannot run at all (e.g. its package is missing) is reported once and its
    keys stay None; the others still run.
    """
    settings = settings if settings is not None else SuiteSettings()
    problems = problems if problems is not None else Problems()
    ctx = EvalContext(items, targets, settings, problems, trials)
    summary: dict[str, Any] = {key: None for key in METRIC_KEYS}
    computed = []
    for name in settings.metrics:
        metric = METRICS.get(name)
        if metric is None:
            problems.report(f"metric '{name}'", f"unknown (known: {', '.join(METRICS)})")
            continue
        log.info("computing %s metrics for %d item(s)", name, len(ctx.items))
        try:
            summary.update(metric(ctx))
        except (ImportError, RuntimeError, OSError, ValueError) as err:
            problems.report(f"metric '{name}'", f"not computed: {first_line(err)}")
        else:
            computed.append(name)
    summary["n_items"] = len(ctx.items)
    return SuiteResult(rows=[ctx.rows[item.item_id] for item in ctx.items], summary=summary, measured=ctx.measured,
                       computed=tuple(computed))
