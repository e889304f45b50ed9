"""Prematching for a vocoder above 16 kHz: the harmonic amplitudes measured at the training output
rate, as inference measures them for a converter with that vocoder; 16 kHz settings unchanged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hifigan.generator import VocoderKind, build_generator
from hifigan.presets import hifigan_config, mel_config
from knnsvc.checkpoints import build_converter
from knnsvc.pipeline import SourceFeatures
from knnsvc.pool import ReferencePool
from knnsvc.references import file_pool
from knnsvc.training.corpus import SplitEntry
from knnsvc.training.dataset import VocoderDataset
from knnsvc.training.features import PrematchedFeatures
from knnsvc.training.prematch import PrematchConfig, Prematcher, prematch_match_config
from tests.training.corpus import WAVLM_TINY, tiny_encoder

RATE = 44_100
OUTPUT = 24_000
F0S = (220.0, 247.0, 262.0)


def bright_vowel(f0_hz: float, seconds: float, seed: int) -> np.ndarray:
    """A sung tone with vibrato and every harmonic up to 12 kHz at 1/k, at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    f0 = f0_hz * 2.0 ** (30 / 1200 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    wav = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, int(12_000 // (f0_hz * 1.03))))
    return (0.4 * wav / np.abs(wav).max()).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One singer, three utterances of 0.8 s recorded at 44.1 kHz."""
    root = tmp_path_factory.mktemp("bright") / "corpus"
    (root / "singer0").mkdir(parents=True)
    for i, f0_hz in enumerate(F0S):
        sf.write(root / "singer0" / f"utt{i}.wav", bright_vowel(f0_hz, 0.8, seed=i), RATE, subtype="FLOAT")
    return root


def config(corpus: Path, out: Path, **overrides) -> PrematchConfig:
    return PrematchConfig(corpus_dir=str(corpus), out_dir=str(out), wavlm=str(WAVLM_TINY), device="cpu",
                          progress=False, **overrides)


def test_amplitudes_for_a_24khz_vocoder_are_what_inference_feeds_it(corpus, tmp_path, encoder):
    out = tmp_path / "features"
    summary = Prematcher(config(corpus, out, sample_rate=OUTPUT), encoder).run()
    assert (summary.written, summary.skipped) == (3, 0)
    features = PrematchedFeatures.load(out / "singer0" / "utt0.pt")
    n_frames = features.num_frames
    assert features.amps.shape == (n_frames, 74) and features.candidate_amps.shape == (n_frames, 4, 74)
    assert features.num_samples == round(0.8 * 16_000)  # the frames are still the 16 kHz ones

    # a converter with a 24 kHz harmonic vocoder builds the pool from the same files and matches the same way
    cfg = hifigan_config(OUTPUT)
    cfg.upsample_initial_channel, cfg.hubert_dim, cfg.hifi_dim, cfg.n_harmonic = 32, 32, 16, 4
    converter = build_converter(str(WAVLM_TINY), (VocoderKind.HARMONIC, build_generator(VocoderKind.HARMONIC, cfg)),
                                config=prematch_match_config())
    own, *others = (file_pool(converter, corpus / "singer0" / f"utt{i}.wav") for i in range(3))
    assert [p.amp_rates for p in (own, *others)] == [[OUTPUT]] * 3
    result = converter.match(SourceFeatures(feats=own.feats, f0_hz=own.f0_hz), ReferencePool.concat(others))
    assert result.amps is not None
    assert torch.equal(features.amps, result.amps)
    torch.testing.assert_close(features.f0_hz, own.f0_hz)

    # harmonics from 8 to 9.5 kHz are there (a 16 kHz measurement reads 0 above 8 kHz; higher up, the
    # pool's higher voices reach the 12 kHz where their recordings stop)
    voiced = features.f0_hz > 0
    frequency = torch.arange(1, 75)[None, :] * features.f0_hz[:, None]
    band = (frequency > 8_100) & (frequency < 9_500) & voiced[:, None]
    assert int(band.sum()) > 20 and float(features.amps[band].min()) > 1e-3

    manifest = json.loads((out / "prematch_manifest.json").read_text())
    assert manifest["settings"]["sample_rate"] == OUTPUT and manifest["settings"]["harmonics"] == 74


def test_the_16khz_run_keeps_its_49_columns_and_an_older_manifest_resumes(corpus, tmp_path, encoder):
    out = tmp_path / "features"
    Prematcher(config(corpus, out), encoder).run()
    features = PrematchedFeatures.load(out / "singer0" / "utt0.pt")
    assert features.amps.shape[1] == 49
    above_8k = torch.arange(1, 50)[None, :] * features.f0_hz[:, None] >= 8_000
    assert bool(above_8k.any()) and torch.all(features.amps[above_8k] == 0)
    # a manifest written before sample_rate was recorded is one of a 16 kHz run
    path = out / "prematch_manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["settings"]["sample_rate"], manifest["settings"]["harmonics"]
    path.write_text(json.dumps(manifest))
    assert Prematcher(config(corpus, out), encoder).run().existing == 3
    with pytest.raises(ValueError, match=r"prematched with other settings \(sample_rate: 16000 -> 24000, "
                                         r"harmonics: 49 -> 74\)"):
        Prematcher(config(corpus, out, sample_rate=OUTPUT), encoder).run()


@pytest.mark.parametrize("rate, message", [(8_000, "at least 16000"), (22_001, "not a whole number of samples"),
                                           (24_000.0, "whole number of Hz")])
def test_a_bad_output_rate_is_refused(tmp_path, rate, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, tmp_path / "f", sample_rate=rate)


def test_training_at_24khz_on_16khz_amplitudes_says_so_once(corpus, tmp_path, encoder, caplog):
    entries = [SplitEntry(f"singer0/utt{i}.wav", f"singer0/utt{i}.pt") for i in range(3)]
    for rate in (16_000, OUTPUT):
        out = tmp_path / f"features{rate}"
        Prematcher(config(corpus, out, sample_rate=rate), encoder).run()
        dataset = VocoderDataset(entries, corpus, out, segment_size=None, mel_config=mel_config(OUTPUT),
                                 sample_rate=OUTPUT)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="knnsvc.training.dataset"):
            items = [dataset[i] for i in range(3)]
        assert all(item["wav"].numel() == item["feats"].shape[0] * 480 for item in items)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if rate == OUTPUT:
            assert warnings == [] and items[0]["amps"].shape[1] == 74
        else:
            assert len(warnings) == 1 and warnings[0].endswith(
                "holds 49 harmonic amplitude columns, but a 24000 Hz vocoder gets 74 at conversion; "
                "prematch the corpus with sample_rate=24000")
