"""Training at 24 and 44.1 kHz: the corpus read at the output rate, the 16 kHz features kept, the mel loss
at the output rate, self-describing checkpoints, and tiny models of each new family that learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from hifigan.config import HiFiGANConfig
from hifigan.generator import VocoderKind, load_generator
from hifigan.presets import UPSAMPLING, hop_for_rate, mel_config
from hifigan.vocos import VocosConfig
from knnsvc.synthetic import sung_vowel
from knnsvc.training.corpus import SplitEntry, write_split_csv
from knnsvc.training.dataset import VocoderDataset
from knnsvc.training.trainer import DataConfig, TrainConfig, Trainer
from tests.training.corpus import VOCODER_TINY_CONFIG, WAVLM_TINY, tiny_encoder

SINGERS = ((0, 220.0), (1, 330.0))
UTTERANCES = 2
ENTRIES = [SplitEntry(f"singer{s}/utt{u}.wav", f"singer{s}/utt{u}.pt") for s, _ in SINGERS for u in range(UTTERANCES)]
_CORPORA: dict[int, tuple[Path, Path]] = {}


def prematched_corpus_at(sample_rate: int, tmp_path_factory) -> tuple[Path, Path]:
    """(corpus_dir, features_dir): 4 seconds of synthetic singing written at `sample_rate` (harmonics
    up to its Nyquist), prematched for that output rate (16 kHz WavLM features, harmonic amplitudes measured
at `sample_rate`, as conversion measures them); once per session and rate."""
    if sample_rate not in _CORPORA:
        from knnsvc.training.prematch import PrematchConfig, Prematcher

        root = tmp_path_factory.mktemp(f"corpus{sample_rate}")
        for singer, f0_hz in SINGERS:
            for utterance in range(UTTERANCES):
                path = root / "corpus" / f"singer{singer}" / f"utt{utterance}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                f0 = f0_hz * (1 + 0.12 * utterance)
                wav = sung_vowel(1.0, f0, sample_rate=sample_rate, seed=10 * singer + utterance)
                sf.write(path, wav.numpy(), sample_rate, subtype="FLOAT")
        config = PrematchConfig(
            corpus_dir=str(root / "corpus"), out_dir=str(root / "features"), wavlm=str(WAVLM_TINY), device="cpu",
            progress=False, sample_rate=sample_rate,
        )
        Prematcher(config, tiny_encoder()).run()
        _CORPORA[sample_rate] = (root / "corpus", root / "features")
    return _CORPORA[sample_rate]


def tiny_vocoder_config(kind: str, sample_rate: int, folder: Path) -> Path:
    """A tiny architecture file at `sample_rate` for `kind` (harmonic: the tiny golden widths)."""
    if kind == "vocos":
        path = folder / "vocos.json"
        VocosConfig(sample_rate, hop_for_rate(sample_rate), input_dim=32, dim=32, intermediate_dim=64,
                    num_layers=2).to_json(path)
        return path
    cfg = HiFiGANConfig.from_json(VOCODER_TINY_CONFIG)
    cfg.upsample_rates, cfg.upsample_kernel_sizes = (list(values) for values in UPSAMPLING[sample_rate])
    path = folder / "hifigan.json"
    cfg.to_json(path)
    return path


def overfit_config(kind: str, sample_rate: int, corpus: Path, features: Path, out: Path, steps: int) -> TrainConfig:
    """Train on all 4 utterances, validate on the first (an overfit check), tiny models, seed fixed."""
    out.mkdir(parents=True, exist_ok=True)
    write_split_csv(out / "train.csv", ENTRIES)
    write_split_csv(out / "valid.csv", ENTRIES[:1])
    hop = hop_for_rate(sample_rate)
    data = DataConfig(
        corpus_dir=str(corpus), features_dir=str(features), train_csv=str(out / "train.csv"),
        valid_csv=str(out / "valid.csv"), num_workers=0, segment_size=8 * hop,
    )
    return TrainConfig(
        out_dir=str(out / "run"), data=data, generator=kind, sample_rate=sample_rate, mel=mel_config(sample_rate),
        vocoder_config=str(tiny_vocoder_config(kind, sample_rate, out)), device="cpu", batch_size=2,
        learning_rate=1e-3, discriminator_width=0.125, log_interval=max(1, steps), validation_interval=0,
        checkpoint_interval=0, num_audio_samples=0, progress=False, max_steps=steps, seed=0,
    )


# The corpus at the output rate ---------------------------------------------------------------------
def test_a_file_below_the_output_rate_is_a_clear_error(tmp_path):
    corpus, features = tmp_path / "corpus", tmp_path / "features"
    (corpus / "singer0").mkdir(parents=True)
    (features / "singer0").mkdir(parents=True)
    sf.write(corpus / "singer0" / "utt0.wav", sung_vowel(0.5, 220.0).numpy(), 16_000)
    (features / "singer0" / "utt0.pt").write_bytes(b"")
    message = r"1 file\(s\) are recorded below the output rate 24000 Hz: .*utt0.wav \(16000 Hz\)"
    with pytest.raises(ValueError, match=message):
        VocoderDataset([ENTRIES[0]], corpus, features, segment_size=8 * 480, mel_config=mel_config(24_000),
                       sample_rate=24_000)


def test_a_mel_loss_at_another_rate_is_refused(tmp_path):
    data = DataConfig(corpus_dir="c", features_dir="f")
    with pytest.raises(ValueError, match="sample_rate=24000 needs mel.sample_rate=24000 and mel.hop_length=480"):
        TrainConfig(out_dir=str(tmp_path), data=data, sample_rate=24_000)


def test_items_at_24khz_pair_16khz_features_with_output_rate_audio(tmp_path_factory):
    corpus, features = prematched_corpus_at(24_000, tmp_path_factory)
    dataset = VocoderDataset(ENTRIES, corpus, features, segment_size=8 * 480, mel_config=mel_config(24_000),
                             sample_rate=24_000)
    item = dataset[(0, 0)]
    assert item["feats"].shape[0] == 8 and item["f0_hz"].shape == (8,)
    assert item["wav"].shape == (8 * 480,)
    assert item["log_mel"].shape == (100, 8)
    whole = VocoderDataset(ENTRIES[:1], corpus, features, segment_size=None, mel_config=mel_config(24_000),
                           sample_rate=24_000)[0]
    assert whole["wav"].numel() == whole["feats"].shape[0] * 480
    # a 24 kHz file is read as it is (no round trip through 16 kHz): the first samples are the file's
    recorded, _ = sf.read(corpus / ENTRIES[0].audio_path, dtype="float32")
    assert torch.equal(whole["wav"], torch.from_numpy(recorded[: whole["wav"].numel()]))


@pytest.mark.parametrize("kind", ["vocos", "harmonic"])
def test_a_24khz_run_writes_self_describing_checkpoints_that_load_strictly_and_resume(kind, tmp_path_factory):
    corpus, features = prematched_corpus_at(24_000, tmp_path_factory)
    out = tmp_path_factory.mktemp(f"run24_{kind}")
    config = overfit_config(kind, 24_000, corpus, features, out, steps=2)
    trainer = Trainer(config)
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    saved = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert saved["config"]["kind"] == kind
    assert (saved["config"]["sample_rate"], saved["config"]["hop_length"]) == (24_000, 480)
    loaded_kind, generator = load_generator(saved)
    assert loaded_kind is VocoderKind(kind) and generator.sample_rate == 24_000
    trainer = Trainer(TrainConfig(**{**config.__dict__, "max_steps": 3}))  # resumes from step 2
    try:
        assert trainer.steps == 2
        assert trainer.fit().steps == 3
    finally:
        trainer.close()


# Tiny models learn at 24 and 44.1 kHz ------------------------------------------------------------------
OVERFIT_STEPS = {"vocos": 100, "harmonic": 150}
"""Updates per family. Measured (seed 0, this file's settings, 1 CPU thread): validation mel L1 over
v0 -> after 50/100/150 steps: vocos 24 kHz 2.09 -> 0.31/0.30 of it, vocos 44.1 kHz 2.11 -> 0.31/0.25,
harmonic 44.1 kHz 3.15 -> 0.32/0.24/0.23. The harmonic HiFi-GAN at 24 kHz is left out: it starts
lower (1.60) and plateaus at 0.43-0.60 of it up to 500 steps (lr 1e-3; 0.55 at lr 2e-4), so it does
not halve reliably at this size."""


@pytest.mark.slow
@pytest.mark.parametrize("kind, sample_rate", [("vocos", 24_000), ("vocos", 44_100), ("harmonic", 44_100)])
def test_validation_mel_l1_halves_within_a_few_hundred_steps(kind, sample_rate, tmp_path_factory):
    corpus, features = prematched_corpus_at(sample_rate, tmp_path_factory)
    out = tmp_path_factory.mktemp(f"overfit{sample_rate}_{kind}")
    trainer = Trainer(overfit_config(kind, sample_rate, corpus, features, out, steps=OVERFIT_STEPS[kind]))
    try:
        before = trainer.validate()
        trainer.fit()
        after = trainer.validate()
    finally:
        trainer.close()
    assert before is not None and after is not None
    assert after <= 0.5 * before, f"validation mel L1 {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("rate, sample_rate", [("16k", 16_000), ("24k", 24_000), ("44k", 44_100)])
@pytest.mark.parametrize("generator", ["vocos", "harmonic"])
def test_the_rate_group_sets_the_output_rate_mel_loss_and_segment(rate, sample_rate, generator):
    from hydra import compose, initialize_config_dir

    from tests.training.test_configs import load_app

    app = load_app("train")
    overrides = ["data.corpus_dir=c", "data.features_dir=f", "out_dir=o", f"rate={rate}", f"generator={generator}"]
    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base="1.3"):
        config = app.to_config(compose("train", overrides=overrides))
    assert config.generator is VocoderKind(generator)
    assert config.sample_rate == sample_rate
    assert config.mel == mel_config(sample_rate)
    assert config.data.segment_size == 22 * hop_for_rate(sample_rate)
