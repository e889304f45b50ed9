"""Streaming conversion: lengths, latency, edge cases, and equivalence with the offline CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from hifigan.generator import load_generator
from knnsvc import streaming
from knnsvc.apps import convert, stream
from knnsvc.config import HOP_LENGTH
from knnsvc.encoder import WavLMEncoder
from knnsvc.pipeline import KnnSvc, MatchConfig
from knnsvc.runtime import analysis_split, usable_cores
from knnsvc.streaming import StreamingConverter
from tests.apps.test_convert import tiny_args
from tests.conftest import sung_vowel
from tests.test_pipeline import si_snr_db
from wavlm import load_wavlm

SR = 16000
NO_POST_OPT = MatchConfig(concat_weight=None, optimise_weights=False)


@pytest.fixture(scope="module")
def models(golden_dir):
    encoder = WavLMEncoder(load_wavlm(torch.load(golden_dir / "wavlm_tiny.pt", weights_only=True)))
    kind, vocoder = load_generator(torch.load(golden_dir / "vocoder_harmonic_tiny.pt", weights_only=True))
    return encoder, kind, vocoder


@pytest.fixture(scope="module")
def pool(models):
    encoder, kind, vocoder = models
    return KnnSvc(encoder, vocoder, kind).build_pool([sung_vowel(2.0, 185.0, seed=7)])


def converter(models, config: MatchConfig | None = None) -> KnnSvc:
    encoder, kind, vocoder = models
    return KnnSvc(encoder, vocoder, kind, config or MatchConfig())


def stream_all(streamer: StreamingConverter, wav: torch.Tensor, chunk: int) -> torch.Tensor:
    pieces = [streamer.push(wav[i : i + chunk]) for i in range(0, wav.numel(), chunk)]
    return torch.cat(pieces + [streamer.flush()])


@pytest.mark.parametrize(("block_ms", "chunk"), [(160, 1000), pytest.param(100, 321, marks=pytest.mark.slow),
                                                 pytest.param(60, 4800, marks=pytest.mark.slow)])
def test_output_is_as_long_as_offline_for_any_block_and_chunk_size(models, pool, block_ms, chunk):
    wav = sung_vowel(1.37, 240.0, seed=3)  # 21920 samples: 68 frames, blocks do not divide it
    streamer = StreamingConverter(converter(models), pool, block_ms=block_ms, lookahead_ms=40, crossfade_ms=20)
    out = stream_all(streamer, wav, chunk)
    assert out.shape == (wav.numel() // HOP_LENGTH * HOP_LENGTH,)
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    assert len(streamer.compute_seconds) == -(-68 // streamer.block)


def test_output_waits_exactly_for_block_and_lookahead(models, pool):
    streamer = StreamingConverter(converter(models), pool, block_ms=160, lookahead_ms=80, crossfade_ms=40)
    assert streamer.algorithmic_latency_ms == 280
    needed = HOP_LENGTH * (8 + 4 - 1) + 400  # the lookahead frames' last samples
    wav = sung_vowel(1.0, 220.0, seed=4)
    assert streamer.push(wav[: needed - 1]).numel() == 0
    first = streamer.push(wav[needed - 1 : needed])
    assert first.numel() == (8 - 2) * HOP_LENGTH  # the block minus the held-back crossfade


def test_silence_and_unvoiced_stretches(models, pool):
    rng = np.random.default_rng(0)
    noise = torch.from_numpy((0.05 * rng.standard_normal(SR // 2)).astype(np.float32))
    wav = torch.cat([torch.zeros(SR // 2), noise, sung_vowel(0.8, 230.0, seed=5), torch.zeros(SR // 3)])
    streamer = StreamingConverter(converter(models), pool)
    pieces, shifts = [], []
    for i in range(0, wav.numel(), 2560):
        pieces.append(streamer.push(wav[i : i + 2560]))
        shifts.append(streamer.semitones)
    out = torch.cat(pieces + [streamer.flush()])
    assert out.shape == (wav.numel() // HOP_LENGTH * HOP_LENGTH,) and torch.isfinite(out).all()
    assert shifts[0] == 0.0  # no shift before the first voiced frame
    assert shifts[-1] < -1.0  # the running median settles towards the reference's lower pitch


def test_a_source_shorter_than_one_block(models, pool):
    wav = sung_vowel(0.09, 220.0, seed=6)  # 4 frames, a block is 8
    streamer = StreamingConverter(converter(models), pool)
    assert streamer.push(wav).numel() == 0
    assert streamer.flush().shape == (4 * HOP_LENGTH,)
    assert StreamingConverter(converter(models), pool).flush().numel() == 0  # nothing pushed at all


def test_post_opt_streams_with_reselection_and_windowed_weights(models, pool):
    wav = sung_vowel(1.5, 250.0, seed=8)
    streamer = StreamingConverter(converter(models), pool)
    out = stream_all(streamer, wav, 1600)
    assert out.shape == (wav.numel() // HOP_LENGTH * HOP_LENGTH,) and torch.isfinite(out).all()
    assert set(streamer.weights.last) == {"wavlm", "harm"}
    for _, weights in streamer.weights.last.values():
        assert torch.isclose(weights.sum(), torch.tensor(1.0, dtype=weights.dtype))


@pytest.mark.parametrize("bad", [dict(block_ms=150), dict(crossfade_ms=200), dict(lookahead_ms=-20),
                                 dict(block_ms=0), dict(sola_ms=50), dict(context_s=float("nan"))])
def test_settings_are_checked(models, pool, bad):
    with pytest.raises(ValueError):
        StreamingConverter(converter(models), pool, **bad)


@pytest.mark.slow
def test_full_context_equals_the_offline_cli(tmp_path):
    """With context and lookahead covering the whole input, knnsvc-stream's output on a 20 s file
    is `python -m knnsvc.convert --no-post-opt`'s (the remaining difference: float rounding)."""
    phrase = torch.cat([sung_vowel(1.2, f0, seed=i) for i, f0 in enumerate((220.0, 262.0, 196.0, 247.0))])
    wav = torch.cat([phrase, torch.zeros(2000), phrase, phrase, phrase, phrase[:12345]])  # 20.1 s
    source, reference = tmp_path / "src.wav", tmp_path / "ref.wav"
    sf.write(source, wav.numpy(), SR, subtype="FLOAT")
    sf.write(reference, sung_vowel(3.0, 185.0, seed=9), SR, subtype="FLOAT")
    offline, streamed = tmp_path / "offline.wav", tmp_path / "streamed.wav"
    assert convert.main([str(source), str(reference), "-o", str(offline), *tiny_args("--no-post-opt")]) == 0
    seconds = wav.numel() / SR
    whole = ["--lookahead-ms", str(20 * (round(seconds * 50) + 5)), "--context-s", str(seconds + 1),
             "--f0-context-s", str(seconds + 1), "--block-ms", "400", "--crossfade-ms", "100"]
    assert stream.main([str(source), str(reference), "-o", str(streamed), *whole,
                        *tiny_args("--no-post-opt")]) == 0
    a, b = sf.read(offline, dtype="float64")[0], sf.read(streamed, dtype="float64")[0]
    assert a.shape == b.shape == (wav.numel() // HOP_LENGTH * HOP_LENGTH,)
    assert si_snr_db(torch.from_numpy(b), torch.from_numpy(a)) >= 60.0


def test_cli_prints_latency_and_real_time_factors(tmp_path, capsys):
    source, reference, out = tmp_path / "src.wav", tmp_path / "ref.wav", tmp_path / "out.wav"
    sf.write(source, sung_vowel(1.0, 230.0, seed=1).numpy(), SR)
    sf.write(reference, sung_vowel(2.0, 190.0, seed=2).numpy(), SR)
    assert stream.main([str(source), str(reference), "-o", str(out), *tiny_args()]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["algorithmic_latency_ms"] == 280 and line["blocks"] == 7
    assert line["rtf"]["median"] > 0 and line["rtf"]["max"] >= line["rtf"]["median"]
    assert sf.info(out).frames == 50 * HOP_LENGTH
    kept = out.read_bytes()
    assert stream.main([str(source), str(reference), "-o", str(out), *tiny_args()]) == 0  # kept: a warning
    assert out.read_bytes() == kept


@pytest.mark.slow
def test_the_crossfade_alignment_never_changes_the_length(models, pool, monkeypatch):
    """Whatever shift the SOLA search picks (here the largest, every time), the output keeps
    the offline length."""
    monkeypatch.setattr(StreamingConverter, "_sola", lambda self, wav, at, room: min(self.sola, room))
    wav = sung_vowel(1.01, 240.0, seed=3)
    for lookahead_ms in (0, 80):
        streamer = StreamingConverter(converter(models), pool, block_ms=100, lookahead_ms=lookahead_ms,
                                      crossfade_ms=40, sola_ms=8)
        assert stream_all(streamer, wav, 999).shape == (wav.numel() // HOP_LENGTH * HOP_LENGTH,)


# ------------------------------------------------------------------------------ every option, as offline
def full_context(seconds: float) -> dict:
    """Settings whose windows and lookahead cover an input of `seconds`."""
    return dict(lookahead_ms=20 * (round(seconds * 50) + 5), context_s=seconds + 1, f0_context_s=seconds + 1,
                block_ms=400, crossfade_ms=100)


def _phrase() -> torch.Tensor:
    """2.9 s: sung vowels, a breathy noise stretch (unvoiced frames) and a 20 dB quieter end."""
    rng = np.random.default_rng(4)
    noise = torch.from_numpy((0.05 * rng.standard_normal(4000)).astype(np.float32))
    wav = torch.cat([sung_vowel(0.9, 220.0, seed=11), noise, sung_vowel(0.8, 262.0, seed=12),
                     sung_vowel(0.9, 196.0, seed=13)])
    wav[-14400:] *= 0.1
    return wav


@pytest.mark.parametrize("option", [dict(rms_mix=0.6), dict(index_rate=0.4), dict(protect=0.2),
                                    pytest.param(dict(match_layers=[2, 3]), marks=pytest.mark.slow)])
def test_full_context_streaming_equals_offline_for_each_option(models, option):
    """rms_mix, index_rate, protect and match_layers mean in streaming what they mean offline:
    with the whole input as context and lookahead, the vocoder gets the offline features and
    amplitudes and the output is the offline conversion."""
    config = MatchConfig(concat_weight=None, optimise_weights=False, **option)
    offline = converter(models, config)
    pool = offline.build_pool([sung_vowel(2.0, 185.0, seed=7)])
    wav = _phrase()
    result = offline.match(wav, pool)
    expected = offline.vocode(result)
    plain = converter(models, NO_POST_OPT)
    plain_result = plain.match(wav, pool)
    if "rms_mix" in option:  # the option does change the output
        assert si_snr_db(plain.vocode(plain_result), expected) < 40.0
    else:
        assert not torch.allclose(plain_result.feats, result.feats, atol=1e-3)

    streamer = StreamingConverter(offline, pool, **full_context(wav.numel() / SR))
    blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
    append = streamer.history.append
    streamer.history.append = lambda feats, f0_hz, amps, energy: (blocks.append((feats, amps)),  # type: ignore
                                                                   append(feats, f0_hz, amps, energy))
    out = stream_all(streamer, wav, 4000)
    torch.testing.assert_close(torch.cat([b[0] for b in blocks]), result.feats, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat([b[1] for b in blocks]), result.amps, rtol=0, atol=1e-5)
    assert out.shape == expected.shape
    assert si_snr_db(out, expected) >= 60.0


def test_a_given_f0_curve_replaces_the_windows(models, pool):
    wav = _phrase()
    offline = converter(models, MatchConfig(concat_weight=None, optimise_weights=False, pitch_shift=None))
    source = offline.analyse(wav)
    curve = torch.where(source.f0_hz > 0, torch.full_like(source.f0_hz, 330.0), source.f0_hz)  # another melody
    source.f0_hz = curve
    expected = offline.vocode(offline.match(source, pool))
    streamer = StreamingConverter(offline, pool, f0_hz=curve, **full_context(wav.numel() / SR))
    out = stream_all(streamer, wav, 4000)
    assert si_snr_db(out, expected) >= 60.0
    assert si_snr_db(offline.convert(wav, pool), expected) < 40.0  # the curve made a difference

    short = StreamingConverter(offline, pool, f0_hz=curve[:20])
    with pytest.raises(ValueError, match="f0_hz covers 20 frames, but the input has reached"):
        stream_all(short, wav, 4000)


def test_loudness_follows_the_source_with_limited_lookahead(models, pool):
    wav = sung_vowel(2.0, 220.0, seed=14)
    wav[wav.numel() // 2 :] *= 0.1  # the second half 20 dB quieter
    quarter = wav.numel() // 4

    def drop_db(out: torch.Tensor) -> float:
        loud, quiet = out[quarter : 2 * quarter - 4000], out[2 * quarter + 4000 : 3 * quarter]
        return float(20 * torch.log10(loud.square().mean().sqrt() / quiet.square().mean().sqrt()))

    plain = stream_all(StreamingConverter(converter(models, NO_POST_OPT), pool), wav, 2560)
    follow = stream_all(StreamingConverter(converter(models, MatchConfig(concat_weight=None, optimise_weights=False,
                                                                         rms_mix=1.0)), pool), wav, 2560)
    assert follow.shape == plain.shape and torch.isfinite(follow).all()
    assert abs(drop_db(follow) - 20.0) < 4.0
    assert abs(drop_db(plain) - 20.0) > abs(drop_db(follow) - 20.0)


# ------------------------------------------------------------------------------ what cannot work is refused
def test_push_refuses_more_than_one_channel(models, pool):
    streamer = StreamingConverter(converter(models), pool)
    with pytest.raises(ValueError, match=r"samples_16k must be mono samples of shape \(L,\), got shape \(2, 1600\)"):
        streamer.push(torch.zeros(2, 1600))
    assert streamer.n_samples == 0  # nothing was taken in


def test_settings_that_cannot_work_are_refused_at_construction(models, pool):
    from dataclasses import replace

    with pytest.raises(ValueError, match="built by another encoder"):
        StreamingConverter(converter(models), replace(pool, encoder_id="another-encoder"))
    with pytest.raises(ValueError, match="analysed without them"):
        StreamingConverter(converter(models, MatchConfig(match_layers=[2, 3])), pool)
    with pytest.raises(ValueError, match="vocoder_context_frames must be a whole number >= 0"):
        StreamingConverter(converter(models), pool, vocoder_context_frames=-1)
    for curve, message in ((torch.zeros(2, 50), "f0_hz must be a \\(T,\\) curve"),
                           (torch.full((50,), float("nan")), "finite frequencies"),
                           (torch.full((50,), -1.0), "finite frequencies")):
        with pytest.raises(ValueError, match=message):
            StreamingConverter(converter(models), pool, f0_hz=curve)
    with pytest.raises(TypeError, match="f0_hz must be a"):
        StreamingConverter(converter(models), pool, f0_hz=[200.0] * 50)  # type: ignore[arg-type]


@pytest.mark.parametrize("lookahead_ms", [0, 20])
def test_one_frame_blocks_without_context_or_lookahead(models, pool, lookahead_ms):
    """The shortest settings work: 20 ms blocks, no WavLM context, no lookahead, on an input
    whose last frame ends exactly at the last sample (its window alone is too short for WavLM)."""
    wav = sung_vowel(0.6, 230.0, seed=15)[: 30 * HOP_LENGTH]
    streamer = StreamingConverter(converter(models, NO_POST_OPT), pool, block_ms=20, lookahead_ms=lookahead_ms,
                                  context_s=0, f0_context_s=0, crossfade_ms=20)
    out = stream_all(streamer, wav, 999)
    assert out.shape == (30 * HOP_LENGTH,) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------ the incremental step
def _cached_and_uncached(models, pool, config: MatchConfig, wav: torch.Tensor, **settings):
    outputs, features = [], []
    for incremental in (False, True):
        streamer = StreamingConverter(converter(models, config), pool, keep_features=True, incremental=incremental,
                                      **settings)
        outputs.append(stream_all(streamer, wav, 1000))
        features.append(torch.cat(streamer.source_features))
    return outputs, features


def _snr_db(out: torch.Tensor, reference: torch.Tensor) -> float:
    """Plain SNR (no scale fitting): how far the incremental output is from the uncached one."""
    error = float((out.double() - reference.double()).square().sum())
    return 10 * float(np.log10(float(reference.double().square().sum()) / max(error, 1e-300)))


@pytest.mark.parametrize("config", [MatchConfig(), pytest.param(MatchConfig(rms_mix=0.7), marks=pytest.mark.slow),
                                    pytest.param(MatchConfig(concat_weight=None, optimise_weights=False,
                                                             match_layers=[2, 3]), marks=pytest.mark.slow)])
def test_the_incremental_step_gives_the_uncached_output(models, config):
    """At the default settings (and with rms_mix, match_layers) the step that reuses the last
    step's front-end frames, runs F0 beside WavLM and vocodes only the frames it emits gives the
    output of the step that computes every window whole: the same length and >= 100 dB."""
    pool = converter(models, config).build_pool([sung_vowel(2.0, 185.0, seed=7)])
    wav = torch.cat([sung_vowel(1.3, 240.0, seed=3), torch.zeros(1234), sung_vowel(1.1, 300.0, seed=4)])
    (uncached, cached), (feats_uncached, feats_cached) = _cached_and_uncached(models, pool, config, wav)
    assert cached.shape == uncached.shape == (wav.numel() // HOP_LENGTH * HOP_LENGTH,)
    assert _snr_db(cached, uncached) >= 100.0
    torch.testing.assert_close(feats_cached, feats_uncached, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("settings", [dict(block_ms=20, lookahead_ms=0, context_s=0, f0_context_s=0, crossfade_ms=20),
                                      dict(block_ms=480, lookahead_ms=20, crossfade_ms=100, sola_ms=20)])
def test_the_incremental_step_gives_the_uncached_output_at_other_latencies(models, pool, settings):
    wav = sung_vowel(1.7, 230.0, seed=16)
    (uncached, cached), _ = _cached_and_uncached(models, pool, NO_POST_OPT, wav, **settings)
    assert cached.shape == uncached.shape
    assert _snr_db(cached, uncached) >= 100.0


def test_the_front_end_reads_only_samples_it_has_not_framed(models, pool, monkeypatch):
    """WavLM's convolutional front end (frame-local in layer_norm mode) runs on the new samples
    only: per 160 ms step, the block's 8 frames plus the one whose 400 samples were not all in."""
    encoder = models[0]
    assert encoder.frame_local
    read: list[int] = []
    front_end = encoder.wavlm.front_end
    monkeypatch.setattr(encoder.wavlm, "front_end", lambda wav: (read.append(wav.shape[-1]), front_end(wav))[1])
    streamer = StreamingConverter(converter(models, NO_POST_OPT), pool)
    wav = sung_vowel(2.0, 220.0, seed=17)
    for i in range(0, 3 * 2560 + 2 * 2560, 2560):  # the first steps fill the 1 s context
        streamer.push(wav[i : i + 2560])
    assert len(read) == len(streamer.compute_seconds) >= 4
    assert read[1:] == [9 * HOP_LENGTH] * (len(read) - 1)  # not the ~60 frames of the whole window


def test_the_front_end_is_recomputed_whole_when_it_is_not_frame_local(models, pool, monkeypatch):
    """A WavLM whose front end normalises over time (group norm, "default" mode) gets the whole
    window, as before."""
    encoder = models[0]
    monkeypatch.setattr(encoder.wavlm.config, "extractor_mode", "default")  # only the cache consults it
    read: list[int] = []
    front_end = encoder.wavlm.front_end
    monkeypatch.setattr(encoder.wavlm, "front_end", lambda wav: (read.append(wav.shape[-1]), front_end(wav))[1])
    streamer = StreamingConverter(converter(models, NO_POST_OPT), pool)
    wav = sung_vowel(2.0, 220.0, seed=17)
    for i in range(0, 5 * 2560, 2560):
        streamer.push(wav[i : i + 2560])
    assert len(read) >= 4 and read[-1] > 30 * HOP_LENGTH  # the window from the first frame on, not 9 frames


class _SlowVocoder(torch.nn.Module):
    """The tiny vocoder, made to take `seconds` per call (a stand-in for a machine too slow)."""

    def __init__(self, vocoder: torch.nn.Module, seconds: float) -> None:
        super().__init__()
        self.vocoder, self.seconds = vocoder, seconds
        self.kind, self.config = vocoder.kind, vocoder.config
        self.context_frames = vocoder.context_frames
        self.samples_per_frame, self.sample_rate = vocoder.samples_per_frame, vocoder.sample_rate
        self.uses_pitch, self.uses_harmonics = vocoder.uses_pitch, vocoder.uses_harmonics

    def forward(self, *args, **kwargs) -> torch.Tensor:
        import time

        time.sleep(self.seconds)
        return self.vocoder(*args, **kwargs)


def test_a_live_stream_slower_than_real_time_warns_and_exposes_its_rtf(models, pool, caplog, monkeypatch):
    encoder, kind, vocoder = models
    slow = KnnSvc(encoder, _SlowVocoder(vocoder, 0.03), kind, NO_POST_OPT)  # 30 ms per 20 ms block
    wav = sung_vowel(1.0, 220.0, seed=18)
    quiet = StreamingConverter(slow, pool, block_ms=20, crossfade_ms=20)  # not live: no warning
    with caplog.at_level("WARNING", logger="knnsvc.streaming"):
        stream_all(quiet, wav, 320)
    assert quiet.real_time_factor > 1.0 and not caplog.records

    monkeypatch.setattr(streaming, "RTF_WARN_EVERY_S", 0.4)
    streamer = StreamingConverter(slow, pool, block_ms=20, crossfade_ms=20, live=True)
    assert streamer.real_time_factor == 0.0
    heard = []
    with caplog.at_level("WARNING", logger="knnsvc.streaming"):
        for i in range(0, wav.numel(), 320):
            before = len(caplog.records)
            streamer.push(wav[i : i + 320])
            heard += [streamer.next_frame * 0.02] * (len(caplog.records) - before)
    warnings = [r.getMessage() for r in caplog.records]
    # after the first 10 steps (0.2 s), then again 0.4 s later while it persists; not per step
    assert heard == pytest.approx([0.2, 0.6]) and len(warnings) == 2
    assert streamer.real_time_factor > 1.0
    assert all("slower than real time: step RTF" in message for message in warnings)


def test_an_interrupt_during_a_step_ends_the_f0_thread_through_close(models, pool, monkeypatch):
    """Ctrl-C while a window's F0 runs on its thread: leaving the `with` block stops the extractor
    (its ``stop`` event) and joins the thread, so the process can exit (it hung at exit before)."""
    import threading
    import time as clock

    started = threading.Event()

    def slow_f0(wav, block_seconds=None, stop=None):
        started.set()
        assert stop is not None and stop.wait(30), "the F0 window was never stopped"
        raise RuntimeError("stopped")

    engine = converter(models)
    engine.f0 = slow_f0

    def interrupted(*args, **kwargs):
        assert started.wait(30)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.encoder, "encode_window", interrupted)
    before = set(threading.enumerate())  # other tests' streams may keep idle F0 threads
    began = clock.monotonic()
    with pytest.raises(KeyboardInterrupt), StreamingConverter(engine, pool) as streamer:
        streamer.push(sung_vowel(1.0, 220.0, seed=1))
    assert clock.monotonic() - began < 10
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("knnsvc-stream-f0")]
    streamer.close()  # closing again does nothing


def test_the_step_shares_the_cores_between_wavlm_and_the_f0_window(models, pool, monkeypatch):
    """While the F0 of a window runs on its thread, WavLM's window runs on the network's share of
    the cores (`runtime.analysis_split`); between steps torch has its threads back."""
    encoder = models[0]
    threads_before = torch.get_num_threads()
    seen: list[int] = []
    front_end = encoder.wavlm.front_end
    monkeypatch.setattr(encoder.wavlm, "front_end",
                        lambda wav: (seen.append(torch.get_num_threads()), front_end(wav))[1])
    with StreamingConverter(converter(models, NO_POST_OPT), pool) as streamer:
        wav = sung_vowel(1.0, 220.0, seed=19)
        for i in range(0, wav.numel(), 2560):
            streamer.push(wav[i : i + 2560])
            assert torch.get_num_threads() == threads_before
    assert seen and set(seen) == {min(analysis_split(usable_cores())[0], threads_before)}
