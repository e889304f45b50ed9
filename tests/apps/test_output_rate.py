"""Every command writes at the vocoder's rate: knnsvc-convert, knnsvc-stream, knnsvc-cover and the demo with
tiny random self-describing vocoders at 24 and 44.1 kHz (the input stays 16 kHz: T = floor(L / 320) frames of
the vocoder's samples per frame)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hifigan.generator import VocoderKind, build_generator, generator_file
from hifigan.presets import hifigan_config, hop_for_rate
from hifigan.vocos import vocos_config
from knnsvc import synthetic
from knnsvc.apps import convert, stream
from knnsvc.apps.demo import Controls, DemoEngine
from knnsvc.audio import load_audio
from tests.apps.test_contract import STREAM_FAST
from tests.apps.test_convert import SR, WAVLM, sung_vowel

SOURCE_SECONDS = 0.73  # not a whole number of frames: 36 frames, 16 samples left over
VOCODERS = [("harmonic", 24_000), ("vocos", 44_100), ("vocos", 24_000), ("harmonic", 44_100)]


def tiny_vocoder(kind: str, rate: int, seed: int = 0) -> torch.nn.Module:
    """A tiny random generator of `kind` at `rate` that reads the tiny WavLM's 32-dim features."""
    if kind == "vocos":
        cfg = vocos_config(rate, input_dim=32, dim=32, intermediate_dim=64, num_layers=2)
    else:
        cfg = hifigan_config(rate)
        cfg.upsample_initial_channel, cfg.hubert_dim, cfg.hifi_dim, cfg.n_harmonic = 32, 32, 16, 4
    torch.manual_seed(seed)
    return build_generator(kind, cfg).eval()


@pytest.fixture(scope="module")
def vocoder_files(tmp_path_factory) -> dict[tuple[str, int], Path]:
    """Self-describing generator files ({'generator', 'config'}), as training at these rates saves them."""
    folder = tmp_path_factory.mktemp("vocoders")
    paths = {}
    for kind, rate in VOCODERS:
        paths[kind, rate] = folder / f"{kind}_{rate}.pt"
        torch.save(generator_file(tiny_vocoder(kind, rate)), paths[kind, rate])
    return paths


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    paths = {"src": folder / "src.wav", "ref": folder / "singer" / "ref.wav"}
    paths["ref"].parent.mkdir()
    sf.write(paths["src"], sung_vowel(SOURCE_SECONDS, 262.0, 1), SR)
    sf.write(paths["ref"], sung_vowel(1.0, 196.0, 2), SR)
    return paths


def expected_frames(num_samples_16k: int, rate: int) -> int:
    """Output samples of a conversion of `num_samples_16k` input samples by a vocoder at `rate`."""
    return (num_samples_16k // 320) * hop_for_rate(rate)


def model_args(vocoder: Path, *extra: str) -> list[str]:
    return ["--wavlm", WAVLM, "--vocoder", str(vocoder), "-q", *extra]


@pytest.mark.parametrize(("kind", "rate"), VOCODERS)
def test_convert_and_stream_write_at_the_vocoders_rate_and_agree_in_length(vocoder_files, audio, tmp_path, kind,
                                                                           rate, capsys):
    vocoder = vocoder_files[kind, rate]
    offline, streamed = tmp_path / "offline.wav", tmp_path / "streamed.flac"
    assert convert.main([str(audio["src"]), str(audio["ref"]), "-o", str(offline),
                         *model_args(vocoder, "--no-post-opt")]) == 0
    assert stream.main([str(audio["src"]), str(audio["ref"]), "-o", str(streamed),
                        *model_args(vocoder, *STREAM_FAST)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["sample_rate"] == rate

    n_frames = expected_frames(sf.info(audio["src"]).frames, rate)
    for path in (offline, streamed):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (rate, 1, n_frames), path.name
        wav = sf.read(path, dtype="float32")[0]
        assert np.isfinite(wav).all() and np.abs(wav).max() > 1e-4  # audio, not silence
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offline.wav", "streamed.flac"]


def test_a_source_at_another_rate_is_read_at_16k_and_written_at_the_vocoders(vocoder_files, audio, tmp_path):
    """The output's length follows the source's 16 kHz frames, not its own rate's samples."""
    source = tmp_path / "src_44k.wav"
    sf.write(source, synthetic.sung_vowel(SOURCE_SECONDS, 262.0, seed=1, sample_rate=44_100).numpy(), 44_100)
    out = tmp_path / "out.wav"
    assert convert.main([str(source), str(audio["ref"]), "-o", str(out),
                         *model_args(vocoder_files["vocos", 24_000], "--no-post-opt")]) == 0
    info = sf.info(out)
    assert (info.samplerate, info.frames) == (24_000, expected_frames(load_audio(source).numel(), 24_000))


@pytest.fixture(scope="module")
def loud_vocos(tmp_path_factory) -> Path:
    """A 24 kHz Vocos whose raw output goes far beyond ±1 (log magnitudes raised by 4: x55 per bin):
    an iSTFT head is not tanh-bounded."""
    generator = tiny_vocoder("vocos", 24_000)
    with torch.no_grad():
        generator.head.bias[: generator.config.n_bins] += 4.0
    path = tmp_path_factory.mktemp("loud") / "loud_vocos.pt"
    torch.save(generator_file(generator), path)
    return path


def test_a_vocos_output_beyond_full_scale_is_clipped_when_written(loud_vocos, audio, tmp_path, caplog):
    """As for any vocoder: samples beyond ±1 are clipped in the file, with one warning counting them."""
    from knnsvc import checkpoints

    converter = checkpoints.build_converter(WAVLM, str(loud_vocos), config=None)
    raw = converter.convert(load_audio(audio["src"]), converter.build_pool([load_audio(audio["ref"])]))
    assert raw.abs().max() > 2.0  # the vocoder itself does go beyond full scale

    offline, streamed = tmp_path / "offline.wav", tmp_path / "streamed.wav"
    with caplog.at_level(logging.WARNING, logger="knnsvc"):
        assert convert.main([str(audio["src"]), str(audio["ref"]), "-o", str(offline),
                             *model_args(loud_vocos, "--no-post-opt", "--pitch-shift", "none")]) == 0
        assert stream.main([str(audio["src"]), str(audio["ref"]), "-o", str(streamed),
                            *model_args(loud_vocos, *STREAM_FAST, "--pitch-shift", "none")]) == 0
    for path in (offline, streamed):
        wav = sf.read(path, dtype="float64")[0]
        assert sf.info(path).samplerate == 24_000
        assert np.abs(wav).max() <= 1.0 and np.mean(np.abs(wav) > 0.999) > 0.01, path.name  # clipped, not scaled
        assert any("beyond ±1 and clipped" in r.getMessage() and path.name in r.getMessage() for r in caplog.records)


def test_the_loudness_target_keeps_a_vocos_output_within_full_scale(loud_vocos, audio, tmp_path):
    """--loudness measures the output at its own rate and peak-limits it (no clipping)."""
    out = tmp_path / "out.wav"
    assert convert.main([str(audio["src"]), str(audio["ref"]), "-o", str(out), "--loudness", "-3",
                         *model_args(loud_vocos, "--no-post-opt", "--pitch-shift", "none")]) == 0
    wav, rate = sf.read(out, dtype="float64")
    assert rate == 24_000 and 0.99 <= np.abs(wav).max() <= 1.0


def test_the_demo_converts_at_the_vocoders_rate(vocoder_files, audio, tmp_path):
    vocoder = str(vocoder_files["vocos", 44_100])
    engine = DemoEngine(WAVLM, vocoder, None, torch.device("cpu"), tmp_path / "work")
    result = engine.convert(audio["src"], [audio["ref"]], Controls(vocoder=vocoder, output_f0=True))
    info = sf.info(result.wav_path)
    n_frames = expected_frames(sf.info(audio["src"]).frames, 44_100)
    assert result.sample_rate == 44_100
    assert (info.samplerate, info.frames, info.subtype) == (44_100, n_frames, "PCM_16")
    assert f"{n_frames / 44_100:.2f} s of audio" in result.summary


@pytest.mark.parametrize(("kind", "rate"), [("harmonic", 24_000), ("vocos", 44_100)])
def test_cover_converts_the_vocals_at_the_vocoders_rate_and_remixes_at_the_songs(vocoder_files, tmp_path, kind,
                                                                                 rate):
    pytest.importorskip("demucs_infer")
    from knnsvc.apps import cover
    from tests.apps.test_cover import COMPLETE, TINY_SEPARATOR, make_song

    singer = tmp_path / "singer" / "ref.wav"
    singer.parent.mkdir()
    sf.write(singer, sung_vowel(1.0, 196.0, 2), SR)
    song = make_song(tmp_path / "song.wav", seconds=1.5, rate=44_100, channels=2)
    out = tmp_path / "out"
    assert cover.main([str(tmp_path / "song.wav"), str(singer), "-o", str(out), "--separator", str(TINY_SEPARATOR),
                       "--pitch-shift", "0", *model_args(vocoder_files[kind, rate])]) == 0
    assert sorted(p.name for p in out.iterdir()) == COMPLETE
    converted = sf.info(out / "vocals_converted.wav")
    n_frames = expected_frames(load_audio(out / "vocals.wav").numel(), rate)
    assert (converted.samplerate, converted.channels, converted.frames) == (rate, 1, n_frames)
    remix = sf.info(out / "remix.wav")
    assert (remix.samplerate, remix.channels, remix.frames) == (44_100, 2, len(song))
    mix = sf.read(out / "remix.wav", always_2d=True)[0]
    assert np.isfinite(mix).all() and np.abs(mix).max() <= 1.0


def test_the_vocoder_kind_and_rate_come_from_the_file(vocoder_files):
    """What the commands load: the self-describing file's kind and rate (no --vocoder-config)."""
    from knnsvc import checkpoints

    for (kind, rate), path in vocoder_files.items():
        converter = checkpoints.build_converter(WAVLM, str(path))
        assert (converter.kind, converter.sample_rate) == (VocoderKind(kind), rate)
