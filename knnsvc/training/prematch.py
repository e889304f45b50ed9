"""Prematching: the vocoder's training inputs, computed once per utterance (spec §10.1).

For every utterance of a corpus laid out as ``<corpus>/<speaker>/.../*.{wav,flac,...}`` the
speaker's *other* utterances form the reference pool (option ``pool_unit="chapter"``: the other
utterances of the same folder, the reference's behaviour, which the kNN-VC authors called a bug).
The utterance is then matched against that pool with the inference code (``KnnSvc.match``, no key
shift), and one feature file is written per utterance (format: ``training/features.py``).

Own-utterance exclusion: the pool simply does not contain the utterance's frames, which is the
same as giving them distance +inf (they can never be chosen, nor reached as a reselection
successor). The reference instead set their cosine distance to 1, so an own frame could still be
picked whenever all other frames were at least orthogonal.

Output rate (``sample_rate``): the harmonic amplitudes are computed for the vocoder trained at that
rate exactly as inference computes them for a converter with that vocoder: ``harmonics_for_rate``
columns (49 at 16 kHz, 74 at 24 kHz, 137 at 44.1 kHz), measured from each recording read at
``amplitude_rate(file rate, sample_rate)`` (``knnsvc.references.measuring_recording``); features,
F0 and the amplitude ratio's spectra stay the 16 kHz ones. At 16 kHz nothing changes.

Files are written atomically (temporary file + rename), so an interrupted run leaves only complete
files; a new run skips every utterance whose feature file exists. A manifest JSON in ``out_dir``
records the settings and the status of every file.

Shape letters: T frames, D feature dim, H harmonics, K candidates, N pool frames.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hifigan.generator import VocoderKind
from hifigan.presets import hop_for_rate
from knnsvc import __version__
from knnsvc.audio import AudioError
from knnsvc.config import N_HARMONICS, SAMPLE_RATE, WAVLM_LAYER
from knnsvc.encoder import WavLMEncoder
from knnsvc.files import atomic_path
from knnsvc.harmonics import harmonics_for_rate, magnitude_spectrogram
from knnsvc.matching import pitch_priority
from knnsvc.pipeline import KnnSvc, MatchConfig, SourceFeatures
from knnsvc.pool import ReferencePool
from knnsvc.references import measuring_recording, usable_recording
from knnsvc.runtime import resolve_device
from knnsvc.training.corpus import CorpusFile, PoolUnit, scan_corpus
from knnsvc.training.features import FEATURE_FORMAT, FEATURE_FORMAT_VERSION, PrematchedFeatures, feature_relpath

log = logging.getLogger(__name__)

MANIFEST_NAME = "prematch_manifest.json"
AMP_RATIO_EPS = 1e-5


class FeatureMode(str, enum.Enum):
    """Which WavLM features are written as the vocoder input."""

    MEAN = "mean"
    """Mean of the ``topk`` cosine-nearest pool frames (the reference's prematched features)."""
    MATCHED = "matched"
    """The features inference feeds the vocoder (reselection and optimised weights, pass A)."""


def prematch_match_config(**changes: Any) -> MatchConfig:
    """The matching settings of prematching: inference's, without a key shift, in float32.

    The utterance is matched at its own pitch (``pitch_shift=None``: the target sings what it
    sang); float32 is faster than the reference's float64, and only near-ties differ. ``changes``
    override any field (e.g. ``n_candidates=16``).
    """
    return MatchConfig(**{"pitch_shift": None, "precision": "float32", **changes})


@dataclass
class PrematchConfig:
    """Settings of a prematching run (also the schema of ``conf/prematch.yaml``).

    Choice fields are typed ``str`` for Hydra (which would read an enum field by member *name*)
    and hold the enum member after construction.

    Attributes:
        corpus_dir: corpus root, ``<corpus>/<speaker>/.../*.{wav,flac,mp3,ogg}``.
        out_dir: feature root; ``<out>/<path relative to corpus>.pt`` per utterance.
        wavlm: WavLM checkpoint: a release name or a local file.
        device: "cpu", "cuda", "cuda:1", ... or "auto".
        pool_unit: ``speaker`` (default) or ``chapter`` (reference behaviour); see :class:`PoolUnit`.
        layer: WavLM layer.
        match: the inference matching settings used for ``amps`` (and for ``feats`` with
            ``feature_mode="matched"``); ``n_candidates`` cosine-nearest frames per frame, of which
            ``topk`` are averaged. Defaults: :func:`prematch_match_config`. A key shift is refused.
        feature_mode: which WavLM features to write, ``mean`` (the reference's prematching) or
            ``matched``; see :class:`FeatureMode`.
        feats_dtype: storage dtype of ``feats`` (float16 as kNN-VC stores prematched features).
        overwrite: recompute files that exist (otherwise they are skipped).
        num_shards, shard_index: process only the pool groups with index % num_shards ==
            shard_index (for parallel runs; each shard writes its own manifest).
        chunk_seconds: WavLM chunk length (spec §3.4).
        progress: show a progress bar.
        sample_rate: output rate of the vocoder the features are for (16000, 24000, 44100, ...:
            ``rate=`` of the training run); sets the harmonic columns and the measuring rate of
            the amplitudes (see the module docstring).
    """

    corpus_dir: str
    out_dir: str
    wavlm: str = "wavlm-large"
    device: str = "auto"
    pool_unit: str = PoolUnit.SPEAKER.value
    layer: int = WAVLM_LAYER
    match: MatchConfig = field(default_factory=prematch_match_config)
    feature_mode: str = FeatureMode.MEAN.value
    feats_dtype: str = "float16"
    overwrite: bool = False
    num_shards: int = 1
    shard_index: int = 0
    chunk_seconds: float = 30.0
    progress: bool = True
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        self.pool_unit = PoolUnit(self.pool_unit)
        self.feature_mode = FeatureMode(self.feature_mode)
        for name in ("overwrite", "progress"):
            _check_bool(name, getattr(self, name))
        for name in ("optimise_weights", "sticky_concat_switch", "smooth_every_vocoder", "respect_file_boundaries"):
            _check_bool(f"match.{name}", getattr(self.match, name))
        if self.match.pitch_shift is not None:
            raise ValueError(
                f"match.pitch_shift must be none for prematching (utterances are matched at their own pitch), "
                f"got {self.match.pitch_shift!r}"
            )
        if self.feats_dtype not in ("float16", "float32"):
            raise ValueError(f"feats_dtype must be float16 or float32, got {self.feats_dtype!r}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index must be in 0..{self.num_shards - 1}, got {self.shard_index}")
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < SAMPLE_RATE:
            raise ValueError(f"sample_rate must be a whole number of Hz, at least {SAMPLE_RATE}, got {rate!r}")
        hop_for_rate(self.sample_rate)  # a whole number of samples per 20 ms frame

    def settings(self) -> dict[str, Any]:
        """The settings that determine the written features (recorded in the manifest)."""
        values = {key: _plain(getattr(self, key)) for key in ("wavlm", "pool_unit", "layer")}
        values.update(dataclasses.asdict(self.match))
        values.update({key: _plain(getattr(self, key)) for key in ("feature_mode", "feats_dtype", "chunk_seconds")})
        values["own_utterance"] = "excluded from the pool (distance +inf)"
        values["feature_format_version"] = FEATURE_FORMAT_VERSION
        values["sample_rate"] = self.sample_rate
        values["harmonics"] = harmonics_for_rate(self.sample_rate)
        return values


@dataclass
class _Analysis:
    """A utterance's own tables: one-file ReferencePool plus the per-frame spectrum L1 norm (T,)."""

    pool: ReferencePool
    spec_l1: torch.Tensor
    num_samples: int


@dataclass
class PrematchSummary:
    """What a run did: counts per status and the manifest path."""

    written: int = 0
    existing: int = 0
    skipped: int = 0
    seconds_of_audio: float = 0.0
    wall_seconds: float = 0.0
    manifest: str = ""
    skipped_files: dict[str, str] = field(default_factory=dict)


class Prematcher:
    """Runs prematching for a corpus with a given encoder (use :func:`prematch` for the CLI path)."""

    def __init__(self, config: PrematchConfig, encoder: WavLMEncoder) -> None:
        self.config = config
        self.encoder = encoder
        self.svc = KnnSvc(encoder, None, VocoderKind.HARMONIC, config.match)
        self.corpus_dir = Path(config.corpus_dir)
        self.out_dir = Path(config.out_dir)

    @property
    def manifest_path(self) -> Path:
        cfg = self.config
        if cfg.num_shards == 1:
            return self.out_dir / MANIFEST_NAME
        stem = Path(MANIFEST_NAME).stem
        return self.out_dir / f"{stem}.shard-{cfg.shard_index}-of-{cfg.num_shards}.json"

    def run(self) -> PrematchSummary:
        """Prematch every utterance of this shard; returns what was done.

        Raises:
            ValueError: no audio in the corpus, or ``out_dir`` holds a manifest written with
                different settings.
        """
        cfg = self.config
        start_time = time.perf_counter()
        pool_unit = PoolUnit(cfg.pool_unit)
        files = scan_corpus(self.corpus_dir, pool_unit)
        groups: dict[str, list[CorpusFile]] = defaultdict(list)
        for item in files:
            groups[item.group].append(item)
        group_names = sorted(groups)[cfg.shard_index :: cfg.num_shards]
        manifest = self._open_manifest()
        summary = PrematchSummary(manifest=str(self.manifest_path))
        total = sum(len(groups[name]) for name in group_names)
        log.info(
            "prematching %d files in %d %s groups (shard %d of %d) into %s",
            total,
            len(group_names),
            pool_unit.value,
            cfg.shard_index,
            cfg.num_shards,
            self.out_dir,
        )
        with tqdm(total=total, unit="file", disable=not cfg.progress, desc="prematch") as bar:
            for name in group_names:
                bar.set_postfix_str(name[-30:])
                self._run_group(groups[name], manifest, summary, bar)
                self._write_manifest(manifest)
        summary.wall_seconds = time.perf_counter() - start_time
        manifest["summary"] = {
            "written": summary.written,
            "existing": summary.existing,
            "skipped": summary.skipped,
        }
        self._write_manifest(manifest)
        if summary.skipped:
            log.warning(
                "%d file(s) skipped (reasons in %s): %s",
                summary.skipped,
                self.manifest_path,
                "; ".join(f"{k}: {v}" for k, v in list(summary.skipped_files.items())[:5]),
            )
        log.info(
            "prematch done: %d written, %d already there, %d skipped, %.1f s of audio in %.1f s",
            summary.written,
            summary.existing,
            summary.skipped,
            summary.seconds_of_audio,
            summary.wall_seconds,
        )
        return summary

    # ------------------------------------------------------------------------------ one group
    def _run_group(
        self, items: list[CorpusFile], manifest: dict, summary: PrematchSummary, bar: tqdm
    ) -> None:
        cfg = self.config
        pool_unit = PoolUnit(cfg.pool_unit)
        todo = [
            item
            for item in items
            if cfg.overwrite or not (self.out_dir / feature_relpath(item.relpath)).is_file()
        ]
        pending = {item.relpath for item in todo}
        for item in items:
            if item.relpath not in pending:
                summary.existing += 1
                entry = manifest["files"].setdefault(item.relpath.as_posix(), {})
                entry.update({"feat_path": feature_relpath(item.relpath).as_posix(), "status": "written"})
        bar.update(len(items) - len(todo))
        if not todo:
            return

        analyses: dict[Path, _Analysis] = {}
        for item in items:
            try:
                analyses[item.relpath] = self._analyse(self.corpus_dir / item.relpath)
            except AudioError as err:
                if item.relpath in pending:
                    self._skip(item, str(err), manifest, summary, bar)
                else:  # its features exist from an earlier run; it only drops out of the pool
                    log.warning("%s; left out of the pool of the other %s files", err, pool_unit.value)
        for item in todo:
            if item.relpath not in analyses:
                continue
            own = analyses[item.relpath]
            others = [a.pool for rel, a in analyses.items() if rel != item.relpath]
            if not others:
                self._skip(
                    item,
                    f"no other utterance in its {pool_unit.value} group to match against",
                    manifest,
                    summary,
                    bar,
                )
                continue
            pool = ReferencePool.concat(others)
            if pool.num_frames < cfg.match.n_candidates:
                self._skip(
                    item,
                    f"its {pool_unit.value} pool has {pool.num_frames} frames, "
                    f"fewer than match.n_candidates={cfg.match.n_candidates}",
                    manifest,
                    summary,
                    bar,
                )
                continue
            features = self._match(own, pool, [a for rel, a in analyses.items() if rel != item.relpath])
            feat_rel = feature_relpath(item.relpath)
            features.save(self.out_dir / feat_rel)
            summary.written += 1
            summary.seconds_of_audio += own.num_samples / SAMPLE_RATE
            manifest["files"][item.relpath.as_posix()] = {
                "feat_path": feat_rel.as_posix(),
                "status": "written",
                "frames": features.num_frames,
                "pool_frames": pool.num_frames,
            }
            bar.update(1)

    def _skip(
        self,
        item: CorpusFile,
        reason: str,
        manifest: dict,
        summary: PrematchSummary,
        bar: tqdm,
    ) -> None:
        log.warning("skipping %s: %s", item.relpath, reason)
        manifest["files"][item.relpath.as_posix()] = {"status": "skipped", "reason": reason}
        summary.skipped_files[item.relpath.as_posix()] = reason
        summary.skipped += 1
        bar.update(1)

    def _analyse(self, path: Path) -> _Analysis:
        wav = usable_recording(path, self.svc)  # the checks every reference recording passes
        rate = self.config.sample_rate
        original, original_rate = measuring_recording(path, rate)
        if rate == SAMPLE_RATE:
            pool = self.svc.reference_pool(wav, name=str(path))
        else:
            pool = self.svc.reference_pool(wav, name=str(path), wav=original, wav_rate=original_rate, output_rate=rate)
        spec = magnitude_spectrogram(wav)[: pool.num_frames]  # the amplitude ratio compares 16 kHz spectra
        return _Analysis(pool=pool, spec_l1=spec.sum(dim=1), num_samples=wav.numel())

    def _match(self, own: _Analysis, pool: ReferencePool, others: list[_Analysis]) -> PrematchedFeatures:
        cfg = self.config
        topk = cfg.match.topk
        source = SourceFeatures(feats=own.pool.feats, f0_hz=own.pool.f0_hz)
        result = self.svc.match(source, pool)
        assert result.amps is not None  # the converter is built for the harmonic vocoder: both passes run
        if cfg.feature_mode is FeatureMode.MEAN:
            feats = pool.feats[result.candidates[:, :topk]].mean(dim=1)  # (T, K, D) -> (T, D)
        else:
            feats = result.feats
        priority = pitch_priority(result.candidates, own.pool.f0_hz, pool.f0_hz)[:, :topk]  # (T, K)
        pool_spec_l1 = torch.cat([a.spec_l1 for a in others])  # (N,)
        amp_ratio = own.spec_l1[:, None] / (pool_spec_l1[priority] + AMP_RATIO_EPS)
        return PrematchedFeatures(
            feats=feats.to(getattr(torch, cfg.feats_dtype)),
            f0_hz=own.pool.f0_hz,
            amps=result.amps,
            candidate_amps=pool.amps[priority].half(),  # (T, K, H)
            amp_ratio=amp_ratio,
            num_samples=own.num_samples,
        )

    # ------------------------------------------------------------------------------ manifest
    def _settings(self) -> dict[str, Any]:
        """Config settings plus the encoder's weight fingerprint (``wavlm`` itself is only a label)."""
        settings = self.config.settings()
        settings["encoder_fingerprint"] = self.svc.encoder_id
        return settings

    def _open_manifest(self) -> dict:
        settings = self._settings()
        path = self.manifest_path
        if path.is_file() and not self.config.overwrite:
            with open(path, encoding="utf-8") as handle:
                manifest = json.load(handle)
            # a setting an older manifest does not record was at its default then
            defaults = {**dataclasses.asdict(prematch_match_config()), "sample_rate": SAMPLE_RATE,
                        "harmonics": N_HARMONICS}
            old = {**defaults, **manifest.get("settings", {})}
            changed = {k: (old.get(k), v) for k, v in settings.items() if k != "wavlm" and old.get(k) != v}
            if changed:
                details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
                raise ValueError(
                    f"{self.out_dir} holds features prematched with other settings ({details}); "
                    "use a new out_dir, or overwrite=true to recompute everything"
                )
            return manifest
        return {
            "format": FEATURE_FORMAT,
            "version": FEATURE_FORMAT_VERSION,
            "knnsvc_version": __version__,
            "corpus_dir": str(self.corpus_dir),
            "settings": settings,
            "shard": {"index": self.config.shard_index, "count": self.config.num_shards},
            "files": {},
        }

    def _write_manifest(self, manifest: dict) -> None:
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        text = json.dumps(manifest, indent=1, sort_keys=False)
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")


def prematch(config: PrematchConfig) -> PrematchSummary:
    """Load the WavLM checkpoint named in ``config`` and prematch the corpus."""
    from knnsvc.checkpoints import load_wavlm

    device = resolve_device(config.device)
    wavlm = load_wavlm(config.wavlm, device=device)
    encoder = WavLMEncoder(wavlm, layer=config.layer, chunk_seconds=config.chunk_seconds)
    return Prematcher(config, encoder).run()


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
