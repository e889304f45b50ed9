"""Evaluate a converter on a source set and a target-speaker set (Hydra app, conf/evaluate.yaml).

    python experiments/evaluate.py sources_dir=DIR targets_dir=DIR out_dir=DIR \
        wavlm=NAME_OR_CKPT vocoder=NAME_OR_CKPT [vocoder_config=JSON] [device=cuda]

    # one Table 1 condition, all four columns, then one table:
    python experiments/evaluate.py -m ablations=knnvc,knnsvc_no_as_opt,knnsvc_no_opt,knnsvc \
        sources_dir=... targets_dir=... out_dir=runs/os2os vocoders.sine=PATH
    python experiments/summarize.py runs/os2os

The config groups in experiments/ablations/ (one `# @package _global_` delta per Table 1 column or
ablation) are put on Hydra's search path here. This file only converts the DictConfig into typed
settings; the work is done by `knnsvc.eval.experiment.run_evaluation`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from knnsvc.eval.experiment import EvaluationSettings, run_evaluation
from knnsvc.eval.intelligibility import WhisperSettings
from knnsvc.eval.suite import SuiteSettings
from knnsvc.pipeline import MatchConfig

EXPERIMENTS_DIR = Path(__file__).resolve().parent

log = logging.getLogger("knnsvc.eval")


def _pitch_shift(value):
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "off")):
        return None
    if isinstance(value, str) and value == "auto":
        return "auto"
    return float(value)


def _optional_path(value) -> Path | None:
    return None if value in (None, "") else Path(str(value))


def settings_from_config(cfg: DictConfig, out_dir: Path) -> EvaluationSettings:
    """Typed settings from the composed config (the only place a DictConfig is read)."""
    if cfg.vocoder is None:
        raise ValueError(f"no vocoder for system '{cfg.system}': pass vocoder=NAME_OR_CKPT (or vocoders.sine=PATH)")
    match = OmegaConf.to_container(cfg.match, resolve=True)
    match["pitch_shift"] = _pitch_shift(match.get("pitch_shift"))
    asr = cfg.asr
    return EvaluationSettings(
        sources_dir=Path(cfg.sources_dir),
        targets_dir=Path(cfg.targets_dir),
        out_dir=out_dir,
        cache_dir=Path(cfg.cache_dir),
        wavlm=str(cfg.wavlm),
        vocoder=str(cfg.vocoder),
        vocoder_config=None if cfg.vocoder_config is None else str(cfg.vocoder_config),
        device=str(cfg.device),
        system=str(cfg.system),
        condition=None if cfg.condition is None else str(cfg.condition),
        expect_vocoder_kind=None if cfg.expect_vocoder_kind is None else str(cfg.expect_vocoder_kind),
        match=MatchConfig(**match),
        reference_seconds=None if cfg.reference_seconds is None else float(cfg.reference_seconds),
        pairs=_optional_path(cfg.pairs),
        max_sources_per_speaker=cfg.max_sources_per_speaker,
        suite=SuiteSettings(
            metrics=tuple(cfg.metrics),
            embedder=str(cfg.speaker.embedder),
            whisper=WhisperSettings(
                model=str(asr.model),
                language=None if asr.language is None else str(asr.language),
                beam_size=int(asr.beam_size),
                best_of=int(asr.beam_size),
                compute_type=str(asr.compute_type),
            ),
            pitch_shift=match["pitch_shift"],
            device=str(cfg.device),
            max_target_files=cfg.speaker.max_target_files,
        ),
        plot_examples=int(cfg.plots.examples),
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


def with_ablations_on_search_path(argv: list[str]) -> list[str]:
    """Add experiments/ to Hydra's search path (group `ablations`) among the other overrides.

    Hydra's parser wants the overrides contiguous, so the extra one goes just before the first
    user override (or first, when there is none).
    """
    extra = f"hydra.searchpath=[file://{EXPERIMENTS_DIR}]"
    position = next((i for i, arg in enumerate(argv[1:], 1) if "=" in arg and not arg.startswith("-")), 1)
    return argv[:position] + [extra] + argv[position:]


if __name__ == "__main__":
    sys.argv = with_ablations_on_search_path(sys.argv)
    main()
