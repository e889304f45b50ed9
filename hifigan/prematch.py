"""Prematching: the vocoder's training inputs, computed once per utterance (spec §10.1).

For every utterance of a corpus laid out as ``<corpus>/<speaker>/.../*.{wav,flac,...}`` the
speaker's *other* utterances form the reference pool (option ``pool_unit="chapter"``: the other
utterances of the same folder, the reference's behaviour, which the kNN-VC authors called a bug).
The utterance is then matched against that pool with the inference code (``KnnSvc.match``, no key
shift), and one feature file is written per utterance:

===================  ==============  ==========================================================
key                  shape / dtype   content
===================  ==============  ==========================================================
``feats``            (T, D) float16  mean of the 4 cosine-nearest pool frames (layer 6), the
                                     prematched features of kNN-VC / kNN-SVC training
                                     (``feature_mode="matched"``: the inference features, with
                                     reselection and optimised weights)
``f0_hz``            (T,) float32    the utterance's own Harvest F0 (the pitch the target sings)
``amps``             (T, H) float32  harmonic amplitudes exactly as inference computes them for
                                     this utterance: pitch-priority candidates, reselection and
                                     optimised weights per the matching settings
``candidate_amps``   (T, K, H) f16   amplitudes of the K pitch-priority candidates (no
                                     reselection), for the reference's random-candidate input
``amp_ratio``        (T, K) float32  ||S_utt[t]||_1 / (||S_pool[c]||_1 + 1e-5) of those candidates
``num_samples``      int             length of the 16 kHz audio the frames came from
===================  ==============  ==========================================================

Own-utterance exclusion: the pool simply does not contain the utterance's frames, which is the
same as giving them distance +inf (they can never be chosen, nor reached as a reselection
successor). The reference instead set their cosine distance to 1, so an own frame could still be
picked whenever all other frames were at least orthogonal.

Files are written atomically (temporary file + rename), so an interrupted run leaves only complete
files; a new run skips every utterance whose feature file exists. A manifest JSON in ``out_dir``
records the settings and the status of every file.

Shape letters: T frames, D feature dim, H harmonics, K candidates, N pool frames.
"""

from __future__ import annotations

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
from knnsvc import __version__
from knnsvc.audio import AudioError, find_audio, load_audio
from knnsvc.config import SAMPLE_RATE, WAVLM_LAYER
from knnsvc.encoder import WavLMEncoder
from knnsvc.files import atomic_path
from knnsvc.harmonics import magnitude_spectrogram
from knnsvc.matching import pitch_priority
from knnsvc.pipeline import KnnSvc, MatchConfig, SourceFeatures
from knnsvc.pool import ReferencePool

log = logging.getLogger(__name__)

FEATURE_FORMAT = "knnsvc-prematch"
FEATURE_FORMAT_VERSION = 1
FEATURE_SUFFIX = ".pt"
MANIFEST_NAME = "prematch_manifest.json"
AMP_RATIO_EPS = 1e-5


class PoolUnit(str, enum.Enum):
    """Which utterances form an utterance's reference pool."""

    SPEAKER = "speaker"
    """All other utterances of the speaker (first folder level below the corpus root)."""
    CHAPTER = "chapter"
    """All other utterances in the same folder (the reference's ``per_spk_extract`` behaviour)."""


class FeatureMode(str, enum.Enum):
    """Which WavLM features are written as the vocoder input."""

    MEAN = "mean"
    """Mean of the ``topk`` cosine-nearest pool frames (the reference's prematched features)."""
    MATCHED = "matched"
    """The features inference feeds the vocoder (reselection and optimised weights, pass A)."""


@dataclass
class PrematchConfig:
    """Settings of a prematching run.

    Attributes:
        corpus_dir: corpus root, ``<corpus>/<speaker>/.../*.{wav,flac,mp3,ogg}``.
        out_dir: feature root; ``<out>/<path relative to corpus>.pt`` per utterance.
        wavlm: WavLM checkpoint: a release name or a local file.
        device: "cpu", "cuda", "cuda:1", ... or "auto".
        pool_unit: speaker (default) or chapter (reference behaviour).
        layer: WavLM layer.
        n_candidates: cosine-nearest pool frames per frame (32).
        topk: frames averaged per output frame (4).
        concat_weight: reselection weight m for the harmonic amplitudes (None = no reselection).
        optimise_weights: optimise the harmonic summing weights (True) or take the plain mean.
        sticky_concat_switch: the reference quirk of the pitched reselection (spec §7.3).
        precision: matching arithmetic; float32 is faster, the reference runs float64.
        feature_mode: which WavLM features to write (``mean`` = the reference's prematching).
        feats_dtype: storage dtype of ``feats`` (float16 as kNN-VC stores prematched features).
        overwrite: recompute files that exist (otherwise they are skipped).
        num_shards, shard_index: process only the pool groups with index % num_shards ==
            shard_index (for parallel runs; each shard writes its own manifest).
        chunk_seconds: WavLM chunk length (spec §3.4).
        progress: show a progress bar.
    """

    corpus_dir: str
    out_dir: str
    wavlm: str
    device: str = "auto"
    pool_unit: PoolUnit = PoolUnit.SPEAKER
    layer: int = WAVLM_LAYER
    n_candidates: int = 32
    topk: int = 4
    concat_weight: float | None = 0.2
    optimise_weights: bool = True
    sticky_concat_switch: bool = True
    precision: str = "float32"
    feature_mode: FeatureMode = FeatureMode.MEAN
    feats_dtype: str = "float16"
    overwrite: bool = False
    num_shards: int = 1
    shard_index: int = 0
    chunk_seconds: float = 30.0
    progress: bool = True

    def __post_init__(self) -> None:
        self.pool_unit = PoolUnit(self.pool_unit)
        self.feature_mode = FeatureMode(self.feature_mode)
        for name in ("optimise_weights", "sticky_concat_switch", "overwrite", "progress"):
            _check_bool(name, getattr(self, name))
        if self.feats_dtype not in ("float16", "float32"):
            raise ValueError(f"feats_dtype must be float16 or float32, got {self.feats_dtype!r}")
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision must be float32 or float64, got {self.precision!r}")
        if not 1 <= self.topk <= self.n_candidates:
            raise ValueError(f"topk must be in 1..n_candidates={self.n_candidates}, got {self.topk}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index must be in 0..{self.num_shards - 1}, got {self.shard_index}")

    def settings(self) -> dict[str, Any]:
        """The settings that determine the written features (recorded in the manifest)."""
        keep = (
            "wavlm pool_unit layer n_candidates topk concat_weight optimise_weights "
            "sticky_concat_switch precision feature_mode feats_dtype chunk_seconds"
        ).split()
        values = {key: _plain(getattr(self, key)) for key in keep}
        values["own_utterance"] = "excluded from the pool (distance +inf)"
        values["feature_format_version"] = FEATURE_FORMAT_VERSION
        return values

    def match_config(self) -> MatchConfig:
        """The inference matching settings used for the harmonic amplitudes (no key shift)."""
        return MatchConfig(
            n_candidates=self.n_candidates,
            topk=self.topk,
            concat_weight=self.concat_weight,
            optimise_weights=self.optimise_weights,
            pitch_shift=None,
            precision=self.precision,
            sticky_concat_switch=self.sticky_concat_switch,
        )


@dataclass
class PrematchedFeatures:
    """The contents of one feature file (see the module docstring for the keys)."""

    feats: torch.Tensor
    f0_hz: torch.Tensor
    amps: torch.Tensor
    candidate_amps: torch.Tensor
    amp_ratio: torch.Tensor
    num_samples: int

    @property
    def num_frames(self) -> int:
        return self.feats.shape[0]

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file in the same folder, then rename)."""
        payload = {
            "format": FEATURE_FORMAT,
            "version": FEATURE_FORMAT_VERSION,
            "feats": self.feats.cpu(),
            "f0_hz": self.f0_hz.float().cpu(),
            "amps": self.amps.float().cpu(),
            "candidate_amps": self.candidate_amps.cpu(),
            "amp_ratio": self.amp_ratio.float().cpu(),
            "num_samples": int(self.num_samples),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | Path) -> PrematchedFeatures:
        """Read a feature file written by :meth:`save` (``weights_only`` loading).

        Raises:
            ValueError: the file is unreadable or not a prematched feature file of this version.
        """
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several unrelated types for corrupt files
            raise ValueError(f"{path}: not a readable feature file ({_first_line(err)})") from None
        if not isinstance(payload, dict) or payload.get("format") != FEATURE_FORMAT:
            raise ValueError(f"{path}: not a prematched feature file (run experiments/prematch.py)")
        if payload.get("version") != FEATURE_FORMAT_VERSION:
            raise ValueError(
                f"{path}: feature format version {payload.get('version')}, expected {FEATURE_FORMAT_VERSION}; "
                "prematch the corpus again"
            )
        return cls(
            feats=payload["feats"],
            f0_hz=payload["f0_hz"],
            amps=payload["amps"],
            candidate_amps=payload["candidate_amps"],
            amp_ratio=payload["amp_ratio"],
            num_samples=int(payload["num_samples"]),
        )


def feature_relpath(audio_relpath: str | Path) -> Path:
    """Feature file of an audio file, relative to the feature root: same path, suffix ``.pt``."""
    return Path(audio_relpath).with_suffix(FEATURE_SUFFIX)


@dataclass
class CorpusFile:
    """One utterance of the corpus: its path relative to the corpus root and its pool group."""

    relpath: Path
    group: str


def scan_corpus(corpus_dir: str | Path, pool_unit: PoolUnit | str = PoolUnit.SPEAKER) -> list[CorpusFile]:
    """All audio files of a corpus with their pool group, sorted by path.

    Files directly in the corpus root belong to no speaker; they are skipped with a warning.

    Raises:
        ValueError: the folder does not exist, holds no audio, or two audio files would share one
            feature file (``a.wav`` and ``a.flac`` in one folder).
    """
    corpus_dir = Path(corpus_dir)
    pool_unit = PoolUnit(pool_unit)
    if not corpus_dir.is_dir():
        raise ValueError(f"corpus_dir {corpus_dir}: not a folder")
    paths = find_audio(corpus_dir)
    if not paths:
        raise ValueError(
            f"corpus_dir {corpus_dir}: no audio files (.wav, .flac, .mp3, .ogg) found; "
            "expected <corpus>/<speaker>/.../<utterance>.flac"
        )
    files, loose, targets = [], [], defaultdict(list)
    for path in paths:
        rel = path.relative_to(corpus_dir)
        if len(rel.parts) < 2:
            loose.append(str(rel))
            continue
        group = rel.parts[0] if pool_unit is PoolUnit.SPEAKER else rel.parent.as_posix()
        files.append(CorpusFile(rel, group))
        targets[feature_relpath(rel)].append(str(rel))
    if loose:
        log.warning(
            "%d audio file(s) directly in %s belong to no speaker folder and are skipped: %s",
            len(loose),
            corpus_dir,
            ", ".join(loose[:5]) + (" ..." if len(loose) > 5 else ""),
        )
    clashes = [names for names in targets.values() if len(names) > 1]
    if clashes:
        raise ValueError(
            f"audio files would share a feature file (same name, different suffix): {clashes[0]}; "
            "rename or remove one of them"
        )
    if not files:
        raise ValueError(f"corpus_dir {corpus_dir}: no audio file inside a speaker folder")
    return files


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
        self.svc = KnnSvc(encoder, None, VocoderKind.HARMONIC, config.match_config())
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
        files = scan_corpus(self.corpus_dir, cfg.pool_unit)
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
            cfg.pool_unit.value,
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
                    log.warning("%s; left out of the pool of the other %s files", err, cfg.pool_unit.value)
        for item in todo:
            if item.relpath not in analyses:
                continue
            own = analyses[item.relpath]
            others = [a.pool for rel, a in analyses.items() if rel != item.relpath]
            if not others:
                self._skip(
                    item,
                    f"no other utterance in its {cfg.pool_unit.value} group to match against",
                    manifest,
                    summary,
                    bar,
                )
                continue
            pool = ReferencePool.concat(others)
            if pool.num_frames < cfg.n_candidates:
                self._skip(
                    item,
                    f"its {cfg.pool_unit.value} pool has {pool.num_frames} frames, "
                    f"fewer than n_candidates={cfg.n_candidates}",
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
        wav = load_audio(path)
        if self.encoder.num_frames(wav.numel()) == 0:
            raise AudioError(
                path, f"too short for a single WavLM frame ({wav.numel()} samples, needs more than 320)"
            )
        pool = self.svc.reference_pool(wav, name=str(path))
        spec = magnitude_spectrogram(wav)[: pool.num_frames]
        return _Analysis(pool=pool, spec_l1=spec.sum(dim=1), num_samples=wav.numel())

    def _match(self, own: _Analysis, pool: ReferencePool, others: list[_Analysis]) -> PrematchedFeatures:
        cfg = self.config
        source = SourceFeatures(feats=own.pool.feats, f0_hz=own.pool.f0_hz)
        result = self.svc.match(source, pool)
        if cfg.feature_mode is FeatureMode.MEAN:
            feats = pool.feats[result.candidates[:, : cfg.topk]].mean(dim=1)  # (T, K, D) -> (T, D)
        else:
            feats = result.feats
        priority = pitch_priority(result.candidates, own.pool.f0_hz, pool.f0_hz)[:, : cfg.topk]  # (T, K)
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
            old = manifest.get("settings", {})
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


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda if available, else cpu; a bare ``cuda`` means cuda:``local_rank``.

    Raises:
        ValueError: a CUDA device was asked for but CUDA is not available.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device} requested but CUDA is not available (use device=cpu)")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
    return resolved


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
