"""Train a tiny harmonic vocoder on a prematched synthetic corpus: it learns, logs, saves, converts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from hifigan.generator import HarmonicGenerator, VocoderKind, load_generator
from knnsvc.training.trainer import DataConfig, TrainConfig, Trainer, train
from tests.training.corpus import VOCODER_TINY_CONFIG, WAVLM_TINY, prematched_corpus

STEPS = 30


def tiny_config(out_dir: Path, corpus: Path, features: Path, **overrides) -> TrainConfig:
    data = dict(
        corpus_dir=str(corpus),
        features_dir=str(features),
        num_workers=0,
        segment_size=3200,
        valid_fraction=0.25,
        split_seed=0,
    )
    data.update(overrides.pop("data", {}))
    values = dict(
        out_dir=str(out_dir),
        data=DataConfig(**data),
        vocoder_config=str(VOCODER_TINY_CONFIG),
        device="cpu",
        batch_size=2,
        learning_rate=1e-3,
        discriminator_width=0.125,
        log_interval=1,
        validation_interval=10,
        checkpoint_interval=10,
        num_audio_samples=1,
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    corpus, features = prematched_corpus(tmp_path_factory)
    out = tmp_path_factory.mktemp("run")
    result = train(tiny_config(out, corpus, features, max_steps=STEPS))
    return out, result, corpus


@pytest.mark.slow
def test_loss_goes_down(run):
    _, result, _ = run
    mel = [entry["train/mel_l1"] for entry in result.history]
    assert len(mel) == STEPS
    first, last = sum(mel[:5]) / 5, sum(mel[-5:]) / 5
    assert last < 0.85 * first, f"mel L1 did not drop: first steps {first:.3f}, last steps {last:.3f}"
    assert result.best_valid_mel_l1 is not None


@pytest.mark.slow
def test_checkpoints_in_official_formats(run):
    out, result, _ = run
    assert result.steps == STEPS and not result.interrupted
    assert sorted(p.name for p in out.glob("g_*.pt")) == [
        "g_00000020.pt",
        "g_00000030.pt",
    ]  # keep_checkpoints=2
    assert sorted(p.name for p in out.glob("do_*.pt")) == ["do_00000020.pt", "do_00000030.pt"]
    generator_file = torch.load(out / "g_00000030.pt", weights_only=True)
    assert set(generator_file) == {"generator"}
    assert (
        "sin_prenet.weight" in generator_file["generator"]
        and "dec.ups.0.weight_g" in generator_file["generator"]
    )
    state = torch.load(out / "do_00000030.pt", weights_only=True)
    assert {"mpd", "msd", "optim_g", "optim_d", "steps", "epoch"} <= set(state)
    assert {"scheduler_g", "scheduler_d", "batches_in_epoch", "rng"} <= set(state)
    assert state["steps"] == STEPS

    kind, generator = load_generator(generator_file)  # widths inferred from the shapes
    assert kind is VocoderKind.HARMONIC and isinstance(generator, HarmonicGenerator)
    assert generator.config.hubert_dim == 32

    best = json.loads((out / "best" / "best.json").read_text())
    assert best["valid_mel_l1"] == pytest.approx(result.best_valid_mel_l1)
    assert (out / "best" / best["generator"]).is_file() and len(list((out / "best").glob("g_*.pt"))) == 1
    assert json.loads((out / "config.json").read_text())["hubert_dim"] == 32
    assert (out / "splits" / "train.csv").read_text().startswith("audio_path,feat_path\n")


@pytest.mark.slow
def test_tensorboard_event_file(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _ = run
    events = EventAccumulator(str(out / "logs"), size_guidance={"scalars": 0, "audio": 0})
    events.Reload()
    tags = events.Tags()
    assert {
        "train/loss_g",
        "train/loss_d",
        "train/mel_l1",
        "train/learning_rate",
        "validation/mel_l1",
    } <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/mel_l1")] == list(range(1, STEPS + 1))
    assert [e.step for e in events.Scalars("validation/mel_l1")] == [10, 20, 30]
    assert {"generated/0", "ground_truth/0"} <= set(tags["audio"])
    clip = events.Audio("generated/0")[-1]
    assert clip.sample_rate == 16000 and clip.encoded_audio_string[:4] == b"RIFF"


@pytest.mark.slow
def test_trained_generator_converts_with_the_cli(run, tmp_path):
    from knnsvc.apps import convert

    out, _, corpus = run
    output = tmp_path / "converted.wav"
    status = convert.main(
        [
            str(corpus / "singer0" / "take0" / "utt0.wav"),
            str(corpus / "singer1"),
            "-o",
            str(output),
            "--wavlm",
            str(WAVLM_TINY),
            "--vocoder",
            str(out / "g_00000030.pt"),
            "--vocoder-config",
            str(out / "config.json"),
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert status == 0
    wav, rate = sf.read(output)
    source, _ = sf.read(corpus / "singer0" / "take0" / "utt0.wav")
    assert rate == 16000 and len(wav) == len(source) // 320 * 320


@pytest.mark.slow
def test_existing_checkpoints_are_not_overwritten_without_resume(run, tmp_path):
    out, _, _ = run
    config = tiny_config(out, "unused", "unused", max_steps=STEPS + 1, resume=False)
    with pytest.raises(ValueError, match="already holds checkpoints.*resume=true"):
        Trainer(config)


def test_boolean_flags_mean_what_they_say(tmp_path):
    with pytest.raises(TypeError, match="autocast must be true or false"):
        tiny_config(tmp_path, "c", "f", autocast="False")
    with pytest.raises(ValueError, match="both train_csv and valid_csv"):
        DataConfig(corpus_dir="c", features_dir="f", train_csv="t.csv")
