"""Evaluate a converter on a source set and a target-speaker set (Hydra app, conf/evaluate.yaml).

    python experiments/evaluate.py sources_dir=DIR targets_dir=DIR out_dir=DIR \
        wavlm=NAME_OR_CKPT vocoder=NAME_OR_CKPT [vocoder_config=JSON] [device=cuda]

    # the conversions split over 4 workers (joblib here, hydra/launcher=slurm on a cluster), then the
    # report of the whole set from the cache (the same as one process's):
    python experiments/evaluate.py -m hydra/launcher=joblib num_shards=4 shard_index=0,1,2,3 \
        sources_dir=... targets_dir=... out_dir=runs/os2os ...
    python experiments/evaluate.py sources_dir=... targets_dir=... out_dir=runs/os2os ...

    # one Table 1 condition, all four columns, then one table:
    python experiments/evaluate.py -m ablations=knnvc,knnsvc_no_as_opt,knnsvc_no_opt,knnsvc \
        sources_dir=... targets_dir=... out_dir=runs/os2os vocoders.sine=PATH
    python experiments/summarize.py runs/os2os

The schema is `EvaluateConfig` below, registered as `evaluate_schema`; conf/evaluate.yaml is a
delta over it, so an unknown key fails when the config is composed. Each file in
experiments/ablations/ (one delta per Table 1 column or ablation) is registered as the option
`ablations=<file name>`. This file only turns the composed config into typed settings; the work
is done by `knnsvc.eval.experiment.run_evaluation`.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from knnsvc.config import DEFAULT_BLOCK_SECONDS, DEFAULT_F0, DEFAULT_VOCODER, DEFAULT_WAVLM, MatchConfig
from knnsvc.eval.experiment import EvaluationSettings, run_evaluation
from knnsvc.eval.intelligibility import WhisperSettings
from knnsvc.eval.suite import SuiteSettings

ABLATIONS_DIR = Path(__file__).resolve().parent / "ablations"

log = logging.getLogger("knnsvc.eval")


@dataclass
class VocoderChoices:
    """The vocoder each Table 1 column uses: release names or checkpoint files."""

    knnvc: str | None = "knnvc-prematched"
    sine: str | None = None
    """No f0-sine checkpoint is published: pass vocoders.sine=PATH."""
    harmonic: str | None = DEFAULT_VOCODER
    """knnsvc-speech for LibriSpeech conditions."""


@dataclass
class SpeakerConfig:
    """Speaker similarity and EER (`SuiteSettings.embedder`, `SuiteSettings.max_target_files`)."""

    embedder: str = SuiteSettings.embedder
    max_target_files: int | None = SuiteSettings.max_target_files


@dataclass
class AsrConfig:
    """Intelligibility ASR (`WhisperSettings`; ``best_of`` follows ``beam_size``)."""

    model: str = WhisperSettings.model
    language: str | None = WhisperSettings.language
    beam_size: int = WhisperSettings.beam_size
    compute_type: str = WhisperSettings.compute_type


@dataclass
class PlotsConfig:
    """Figures (F0, spectrograms, provenance) of the first `examples` conversions."""

    examples: int = EvaluationSettings.plot_examples


@dataclass
class EvaluateConfig:
    """One evaluation run (the schema of conf/evaluate.yaml); see `EvaluationSettings`.

    Paths are strings here and become `Path`s in `settings_from_config`. `vocoder` defaults to
    the harmonic column's checkpoint; an ablation delta points it at its own column.
    """

    sources_dir: str
    targets_dir: str
    out_dir: str
    cache_dir: str = "${out_dir}/cache"
    vocoders: VocoderChoices = field(default_factory=VocoderChoices)
    wavlm: str = DEFAULT_WAVLM
    vocoder: str | None = "${vocoders.harmonic}"
    vocoder_config: str | None = None
    device: str = EvaluationSettings.device
    f0: str = DEFAULT_F0
    block_seconds: float = DEFAULT_BLOCK_SECONDS
    system: str = EvaluationSettings.system
    condition: str | None = None
    expect_vocoder_kind: str | None = None
    pairs: str | None = None
    max_sources_per_speaker: int | None = None
    reference_seconds: float | None = None
    match: MatchConfig = field(default_factory=MatchConfig)
    metrics: list[str] = field(default_factory=lambda: list(SuiteSettings.metrics))
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    plots: PlotsConfig = field(default_factory=PlotsConfig)
    num_shards: int = 1
    """With num_shards > 1, this job converts shard `shard_index` only (into the shared cache) and scores
    nothing; the run without them then scores the whole set (see `EvaluationSettings`)."""
    shard_index: int = 0


def register_configs() -> None:
    """Put the schema and every experiments/ablations/*.yaml (group `ablations`) into Hydra's store."""
    store = ConfigStore.instance()
    store.store(name="evaluate_schema", node=EvaluateConfig)
    for path in sorted(ABLATIONS_DIR.glob("*.yaml")):
        store.store(group="ablations", name=path.stem, node=OmegaConf.load(path), package="_global_")


register_configs()


def settings_from_config(cfg: DictConfig, out_dir: Path) -> EvaluationSettings:
    """Typed settings from the composed config (the only place a DictConfig is read)."""
    app: EvaluateConfig = OmegaConf.to_object(cfg)
    if app.vocoder is None:
        raise ValueError(f"no vocoder for system '{app.system}': pass vocoder=NAME_OR_CKPT (or vocoders.sine=PATH)")
    return EvaluationSettings(
        sources_dir=Path(app.sources_dir),
        targets_dir=Path(app.targets_dir),
        out_dir=out_dir,
        cache_dir=Path(app.cache_dir),
        wavlm=app.wavlm,
        vocoder=app.vocoder,
        vocoder_config=app.vocoder_config,
        device=app.device,
        f0=app.f0,
        block_seconds=app.block_seconds,
        system=app.system,
        condition=app.condition,
        expect_vocoder_kind=app.expect_vocoder_kind,
        match=app.match,
        reference_seconds=app.reference_seconds,
        pairs=None if app.pairs in (None, "") else Path(app.pairs),
        max_sources_per_speaker=app.max_sources_per_speaker,
        suite=SuiteSettings(
            metrics=tuple(app.metrics),
            embedder=app.speaker.embedder,
            whisper=WhisperSettings(
                model=app.asr.model,
                language=app.asr.language,
                beam_size=app.asr.beam_size,
                best_of=app.asr.beam_size,
                compute_type=app.asr.compute_type,
            ),
            pitch_shift=app.match.pitch_shift,
            device=app.device,
            max_target_files=app.speaker.max_target_files,
        ),
        plot_examples=app.plots.examples,
        num_shards=app.num_shards,
        shard_index=app.shard_index,
    )


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one evaluation; returns the EER (for sweepers that optimise a value)."""
    logging.getLogger("knnsvc").setLevel(logging.INFO)
    summary = run_evaluation(settings_from_config(cfg, Path(HydraConfig.get().runtime.output_dir)))
    keys = ("sim", "eer", "wer", "cer", "f0_rmse_cents", "dnsmos", "rtf")
    log.info("%s | %s: %s", summary["condition"], summary["system"],
             ", ".join(f"{k}={summary[k]:.4g}" for k in keys if summary.get(k) is not None))
    return summary.get("eer")


if __name__ == "__main__":
    main()
