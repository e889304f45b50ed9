"""One evaluation run: convert every (source, target speaker) pair, score it, write the reports.

Conversions are cached under ``cache_dir/conv-<key>/<item id>.wav`` with a sidecar ``.pt`` (the
F0 the converter sang at, the neighbour indices and weights, stage times, memory peaks). The key
covers the checkpoints' contents, the vocoder config, every matching setting and the reference
duration, so re-running with another metric reuses the audio while any change to the conversion
makes new audio. A cached item is redone if its source or its target speaker's files changed.
Reference pools are cached per target speaker under ``cache_dir/pools`` (they do not depend on
the matching settings, so a sweep encodes each target once).

Outputs in `out_dir`: ``metrics.json`` (summary, settings, problems), ``utterances.csv`` (one row
per conversion), ``table.md`` (the paper's Table 1 layout) and ``plots/`` (F0 contours,
spectrograms and provenance strips of the first few conversions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from knnsvc import plots
from knnsvc.audio import AudioError, load_audio
from knnsvc.checkpoints import build_converter
from knnsvc.config import DEFAULT_BLOCK_SECONDS, DEFAULT_F0, MatchConfig
from knnsvc.conversion import Options, convert_file
from knnsvc.eval.dataset import ConversionJob, Problems, plan_all_pairs, read_pair_list, scan_speakers
from knnsvc.eval.report import table1_markdown, write_csv, write_json
from knnsvc.eval.speaker import Trial
from knnsvc.eval.speed import peak_cuda_gb, peak_rss_gb, reset_peak_rss
from knnsvc.eval.suite import EvalItem, SuiteSettings, run_suite
from knnsvc.pipeline import KnnSvc
from knnsvc.pool import ReferencePool
from knnsvc.references import PoolCache, build_reference_pool
from knnsvc.runtime import first_line
from knnsvc.shards import Manifest, check_shard, shard_path, shard_positions

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1


@dataclass
class EvaluationSettings:
    """Everything one evaluation run needs (built from the Hydra config at the boundary).

    Attributes:
        sources_dir / targets_dir: speaker-folder sets (they may be the same folder: then no
            speaker is converted to itself).
        out_dir: where the reports go; cache_dir: conversions and pools (shared across a sweep).
        wavlm / vocoder: release names or checkpoint files; vocoder_config: optional JSON.
        f0: pitch extractor; block_seconds: F0 and vocoder block length (the commands' defaults).
        system / condition: the Table 1 column and row labels of this run.
        expect_vocoder_kind: refuse a vocoder of another architecture (knnvc, sine, harmonic).
        match: matching settings; reference_seconds: reference duration limit (None = all).
        pairs: reference-format pair list; max_sources_per_speaker: cap for quick runs.
        suite: metric settings; plot_examples: conversions to draw figures for.
        num_shards / shard_index: a conversion shard (`knnsvc.shards`): convert only the jobs at positions
            I, I + N, ... of the plan into the shared cache, record them in
            ``out_dir/conversions.shard-I-of-N.json`` and score nothing; a run with ``num_shards=1``
            afterwards finds every conversion in the cache and writes the whole report, the same as
            one process's.
    """

    sources_dir: Path
    targets_dir: Path
    out_dir: Path
    cache_dir: Path
    wavlm: str
    vocoder: str
    vocoder_config: str | None = None
    device: str = "cpu"
    f0: str = DEFAULT_F0
    block_seconds: float = DEFAULT_BLOCK_SECONDS
    system: str = "kNN-SVC"
    condition: str | None = None
    expect_vocoder_kind: str | None = None
    match: MatchConfig = field(default_factory=MatchConfig)
    reference_seconds: float | None = None
    pairs: Path | None = None
    max_sources_per_speaker: int | None = None
    suite: SuiteSettings = field(default_factory=SuiteSettings)
    plot_examples: int = 1
    num_shards: int = 1
    shard_index: int = 0


def _file_stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _files_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for path in paths:
        digest.update(f"{path}|{_file_stamp(path)}|".encode())
    return digest.hexdigest()


def content_fingerprint(path: Path, block_bytes: int = 1 << 22) -> str:
    """sha256 of a file's size, first and last `block_bytes` (cheap for a 1.26 GB checkpoint)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(block_bytes))
        if size > 2 * block_bytes:
            handle.seek(size - block_bytes)
        digest.update(handle.read(block_bytes))
    return digest.hexdigest()


def conversion_key(settings: EvaluationSettings) -> str:
    """Cache key of the conversion settings (checkpoint contents, not their paths)."""
    from knnsvc.checkpoints import resolve_checkpoint

    wavlm_path = resolve_checkpoint(settings.wavlm, "wavlm", progress=False)
    vocoder_path = resolve_checkpoint(settings.vocoder, "vocoder", progress=False)
    config_text = Path(settings.vocoder_config).read_text() if settings.vocoder_config else None
    payload = {
        "format": CACHE_FORMAT_VERSION,
        "wavlm": content_fingerprint(wavlm_path),
        "vocoder": content_fingerprint(vocoder_path),
        "vocoder_config": config_text,
        "match": dataclasses.asdict(settings.match),
        "f0": settings.f0,
        "reference_seconds": settings.reference_seconds,
    }
    return hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


class Converter:
    """Loads the models on first use, builds (cached) pools, converts one job at a time."""

    def __init__(self, settings: EvaluationSettings, problems: Problems) -> None:
        self.settings = settings
        self.problems = problems
        self._model: KnnSvc | None = None
        self._pools: dict[str, ReferencePool | None] = {}
        self.pool_seconds: dict[str, float] = {}

    @property
    def loaded(self) -> bool:
        """Whether the models have been loaded (a failure before that is fatal for the run)."""
        return self._model is not None

    @property
    def model(self) -> KnnSvc:
        """The converter, built on first use by `knnsvc.checkpoints.build_converter` (as the commands
        build theirs: the depth rule and the encoder/vocoder compatibility check included).

        Raises:
            CheckpointError: a checkpoint cannot be used, or the pair does not fit.
            ValueError: the vocoder is not of `expect_vocoder_kind`, or an unknown pitch extractor.
        """
        if self._model is None:
            s = self.settings
            model = build_converter(s.wavlm, s.vocoder, s.vocoder_config, s.match, f0=s.f0, device=s.device,
                                    block_seconds=s.block_seconds, progress=False)
            if s.expect_vocoder_kind and model.kind.value != s.expect_vocoder_kind:
                raise ValueError(
                    f"{s.vocoder}: is a {model.kind.value} vocoder, but system '{s.system}' needs a "
                    f"{s.expect_vocoder_kind} vocoder"
                )
            self._model = model
            log.info("loaded %s + %s (%s vocoder) on %s", s.wavlm, s.vocoder, model.kind.value, s.device)
        return self._model

    def pool(self, speaker: str, files: Sequence[Path]) -> ReferencePool | None:
        """The speaker's reference pool (cut to `reference_seconds`), built or read from the cache."""
        if speaker in self._pools:
            return self._pools[speaker]

        def on_bad_file(err: AudioError) -> None:
            self.problems.report(str(err.path), f"left out of the reference pool of '{speaker}': {err}")

        cache = PoolCache(self.settings.cache_dir / "pools", self.model.pool_settings())
        self.model.timings = {}
        start = time.perf_counter()
        pool, _ = build_reference_pool(self.model, files, cache, on_bad_file)
        if self.model.timings.get("encode"):  # something had to be encoded (not all from the cache)
            self.pool_seconds[speaker] = time.perf_counter() - start
        if pool is not None and self.settings.reference_seconds is not None:
            pool = pool.head(self.settings.reference_seconds)
        self._pools[speaker] = pool
        return pool

    def convert(self, job: ConversionJob, target_files: Sequence[Path], wav_path: Path, sidecar: Path) -> None:
        """Convert one job and write its audio and sidecar (raises on unusable input)."""
        pool = self.pool(job.target_speaker, target_files)
        if pool is None:
            raise ValueError(f"no usable reference recording of target speaker '{job.target_speaker}'")
        model = self.model
        reset_peak_rss()
        if torch.device(self.settings.device).type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model.timings = {}
        converted = convert_file(model, pool, job.source, wav_path, Options())
        result = converted.result
        torch.save(
            {
                "version": CACHE_FORMAT_VERSION,
                "f0_hz": result.f0_hz.float(),
                "source_f0_hz": result.source_f0_hz.float(),
                "indices_wavlm": result.indices_wavlm,
                "weights_wavlm": result.weights_wavlm.float(),
                "shift_ratio": float(result.shift_ratio),
                "semitones": float(result.semitones),
                "stage_seconds": dict(model.timings),
                "audio_seconds": converted.seconds,
                "peak_rss_gb": peak_rss_gb(),
                "peak_cuda_gb": peak_cuda_gb(self.settings.device),
                "pool_starts": torch.tensor(pool.starts, dtype=torch.long),
                "pool_names": list(pool.names),
                "source_stamp": _file_stamp(job.source),
                "targets_digest": _files_digest(target_files),
            },
            sidecar,
        )


def _read_sidecar(sidecar: Path, job: ConversionJob, target_files: Sequence[Path]) -> dict | None:
    """The cached record if it is present, readable and still matches its inputs."""
    if not sidecar.is_file() or not sidecar.with_suffix(".wav").is_file():
        return None
    try:
        record = torch.load(sidecar, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        log.warning("ignoring unreadable cache entry %s (%s)", sidecar, err)
        return None
    if (
        not isinstance(record, dict)
        or record.get("version") != CACHE_FORMAT_VERSION
        or record.get("source_stamp") != _file_stamp(job.source)
        or record.get("targets_digest") != _files_digest(target_files)
    ):
        return None
    return record


def _item(job: ConversionJob, wav_path: Path, record: dict) -> EvalItem:
    return EvalItem(
        item_id=job.item_id,
        converted=wav_path,
        target_speaker=job.target_speaker,
        source=job.source,
        source_speaker=job.source_speaker,
        expected_f0_hz=record["f0_hz"],
        stage_seconds=dict(record.get("stage_seconds", {})),
        peak_rss_gb=record.get("peak_rss_gb"),
        peak_cuda_gb=record.get("peak_cuda_gb"),
    )


def _plot_example(
    out_dir: Path, item: EvalItem, record: dict, target_files: Sequence[Path], problems: Problems
) -> None:
    from knnsvc.pitch import harvest_f0

    stem = item.item_id.replace("/", "__")
    assert item.source is not None  # the items of an evaluation come from conversion jobs, which have one
    try:
        converted = load_audio(item.converted)
        source = load_audio(item.source)
        reference = load_audio(target_files[0])
        plots.plot_f0_contours(
            out_dir / f"{stem}_f0.png",
            {"source": record["source_f0_hz"], "shifted": record["f0_hz"], "converted": harvest_f0(converted)},
            title=item.item_id,
        )
        plots.plot_spectrograms(
            out_dir / f"{stem}_spectrograms.png",
            {"source": source, "reference": reference, "converted": converted},
            title=item.item_id,
        )
        plots.plot_provenance(
            out_dir / f"{stem}_provenance.png",
            record["indices_wavlm"],
            record["weights_wavlm"],
            record["pool_starts"].tolist(),
            record["pool_names"],
            title=f"{item.item_id}: where each output frame came from",
        )
    except (AudioError, ValueError, RuntimeError, OSError) as err:
        problems.report(item.item_id, f"plots not drawn: {err}")


def settings_summary(settings: EvaluationSettings) -> dict[str, Any]:
    """Flat, JSON-safe view of the settings that define a run (for metrics.json and sweeps)."""
    flat: dict[str, Any] = {
        "wavlm": settings.wavlm,
        "vocoder": settings.vocoder,
        "vocoder_config": settings.vocoder_config,
        "device": settings.device,
        "f0": settings.f0,
        "block_seconds": settings.block_seconds,
        "reference_seconds": settings.reference_seconds,
        "pairs": str(settings.pairs) if settings.pairs else None,
        "max_sources_per_speaker": settings.max_sources_per_speaker,
        "embedder": settings.suite.embedder,
        "asr_model": settings.suite.whisper.model,
        "metrics": list(settings.suite.metrics),
    }
    for key, value in dataclasses.asdict(settings.match).items():
        flat[f"match.{key}"] = value
    return flat


def run_evaluation(settings: EvaluationSettings) -> dict[str, Any]:
    """Convert (or reuse), score and report one run; returns the summary written to metrics.json
    (or, for a conversion shard, what the shard converted; nothing is scored)."""
    check_shard(settings.num_shards, settings.shard_index)
    problems = Problems()
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = scan_speakers(settings.sources_dir, problems, role="source speaker")
    targets = scan_speakers(settings.targets_dir, problems, role="target speaker")
    trials: list[Trial] | None = None
    if settings.pairs is not None:
        jobs, trials = read_pair_list(settings.pairs, settings.sources_dir, sources, targets, problems)
    else:
        same_set = Path(settings.sources_dir).resolve() == Path(settings.targets_dir).resolve()
        jobs = plan_all_pairs(settings.sources_dir, sources, targets, same_set, settings.max_sources_per_speaker)
    condition = settings.condition or f"{Path(settings.sources_dir).name} → {Path(settings.targets_dir).name}"

    conv_dir = Path(settings.cache_dir) / f"conv-{conversion_key(settings)}"
    converter = Converter(settings, problems)
    items: list[EvalItem] = []
    records: dict[str, dict] = {}
    converted_now = 0
    manifest = None
    positions = range(len(jobs))
    if settings.num_shards > 1:
        manifest = Manifest(shard_path(out_dir / "conversions.json", settings.num_shards, settings.shard_index),
                            "evaluate-conversions", {"conversions_dir": str(conv_dir), "condition": condition},
                            settings.num_shards, settings.shard_index, total=len(jobs))
        positions = shard_positions(len(jobs), settings.num_shards, settings.shard_index)
        log.info("conversion shard %d of %d: %d of the %d conversions", settings.shard_index, settings.num_shards,
                 len(positions), len(jobs))
        jobs = [jobs[position] for position in positions]
    for n, job in enumerate(jobs):
        made = converted_now
        wav_path = conv_dir / f"{job.item_id}.wav"
        sidecar = conv_dir / f"{job.item_id}.pt"
        target_files = targets[job.target_speaker]
        record = _read_sidecar(sidecar, job, target_files)
        if record is None:
            try:
                converter.convert(job, target_files, wav_path, sidecar)
            except (AudioError, ValueError, RuntimeError, OSError) as err:
                text = first_line(err)
                if not converter.loaded:  # the models themselves cannot be loaded: stop here
                    raise
                problems.report(job.item_id, f"not converted: {text}")
                if manifest is not None:
                    manifest.record(positions[n], input=job.item_id, output=str(wav_path), status="failed",
                                    message=f"{job.item_id}: not converted: {text}")
                continue
            converted_now += 1
            record = _read_sidecar(sidecar, job, target_files)
            if record is None:
                raise RuntimeError(f"{sidecar}: just written, but it does not read back as this job's record")
        items.append(_item(job, wav_path, record))
        records[job.item_id] = record
        if manifest is not None:
            manifest.record(positions[n], input=job.item_id, output=str(wav_path),
                            status="converted" if converted_now > made else "skipped",
                            message="converted" if converted_now > made else "in the cache")
    log.info("%d conversion(s): %d made now, %d from the cache %s", len(items), converted_now,
             len(items) - converted_now, conv_dir)
    if manifest is not None:
        manifest.save()
        log.info("conversion shard %d of %d done; a run with num_shards=1 scores every conversion",
                 settings.shard_index, settings.num_shards)
        return {"system": settings.system, "condition": condition, "n_conversions": len(items),
                "n_converted_now": converted_now, "conversions_dir": str(conv_dir), "manifest": str(manifest.path),
                "problems": list(problems.messages)}

    result = run_suite(items, targets, settings.suite, trials=trials, problems=problems)
    summary: dict[str, Any] = {
        **result.summary,
        "system": settings.system,
        "condition": condition,
        "n_conversions": len(items),
        "n_converted_now": converted_now,
        "pool_seconds": converter.pool_seconds or None,
        "conversions_dir": str(conv_dir),
        "settings": settings_summary(settings),
    }
    for item in items[: settings.plot_examples]:
        _plot_example(out_dir / "plots", item, records[item.item_id], targets[item.target_speaker], problems)
    summary["problems"] = list(problems.messages)
    write_csv(out_dir / "utterances.csv", result.rows)
    (out_dir / "table.md").write_text(table1_markdown([summary]), encoding="utf-8")
    write_json(out_dir / "metrics.json", summary)
    log.info("wrote %s", out_dir / "metrics.json")
    return summary
