"""Spectrogram frames, harmonic amplitudes, additive synthesis and sine excitation (spec §8)."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hifigan import excitation
from knnsvc.config import HOP_LENGTH, N_HARMONICS, SAMPLE_RATE
from knnsvc.harmonics import (
    AMPLITUDE_SCALE,
    MASK_PASS,
    MASK_STOP,
    N_BINS,
    additive_synth,
    amplitude_rate,
    harmonic_amplitudes,
    harmonics_for_rate,
    magnitude_spectrogram,
    running_cycles,
    sine_excitation,
    spectrum_size,
    upsample_bicubic,
)

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN / "golden_pipeline.pt", weights_only=True)


def _phase(f0_hz: torch.Tensor) -> torch.Tensor:
    """Reference phase of (T,) f0: float64 inclusive cumsum of the nearest-upsampled f0, wrapped."""
    cycles = torch.cumsum(f0_hz.double().repeat_interleave(HOP_LENGTH) / SAMPLE_RATE, dim=0)
    return 2 * math.pi * (cycles - torch.round(cycles))


# -- golden parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wav_key, spec_key", [("ref_wav", "ref_spec"), ("src_wav", "src_spec")])
def test_spectrogram_matches_golden(golden, wav_key, spec_key):
    wav = golden[wav_key]
    spec = magnitude_spectrogram(wav)
    assert spec.shape == (wav.numel() // HOP_LENGTH + 1, N_BINS)
    assert spec.dtype == torch.float32
    expected = golden[spec_key]
    assert (spec[: expected.shape[0]] - expected).abs().max() <= TOL


def test_harmonic_amplitudes_match_golden(golden):
    amps = harmonic_amplitudes(golden["ref_spec"], golden["ref_f0"])
    assert amps.shape == (golden["ref_f0"].numel(), N_HARMONICS)
    assert (amps - golden["ref_harmonics"]).abs().max() <= TOL


def test_harmonic_amplitudes_from_audio_match_golden(golden):
    n_frames = golden["ref_f0"].numel()
    spec = magnitude_spectrogram(golden["ref_wav"])[:n_frames]
    amps = harmonic_amplitudes(spec, golden["ref_f0"])
    assert (amps - golden["ref_harmonics"]).abs().max() <= TOL


@pytest.mark.parametrize("conversion", ["post_opt_0.2", "no_post_opt"])
def test_additive_synth_matches_golden(golden, conversion):
    case = golden["conversions"][conversion]
    wav = additive_synth(case["f0_shifted"][None], case["A"][None])
    assert wav.shape == (1, case["f0_shifted"].numel() * HOP_LENGTH)
    assert (wav[0] - case["U"]).abs().max() <= TOL


# -- harmonic amplitudes ---------------------------------------------------------------------------


def test_unit_peak_reads_interpolation_quirk():
    """Spec §17 test 4: unit peak at bin 10 (400 Hz) read at f0 = 400 Hz gives 0.0108 * 0.5625."""
    spec = torch.zeros(1, N_BINS)
    spec[0, 10] = 1.0
    amps = harmonic_amplitudes(spec, torch.tensor([400.0]))
    assert amps[0, 0].item() == pytest.approx(AMPLITUDE_SCALE * 0.5625, rel=1e-6)
    assert torch.all(amps[0, 1:] == 0)


def test_unvoiced_frame_keeps_only_frame_maximum():
    spec = torch.rand(3, N_BINS)
    f0_hz = torch.tensor([0.0, 150.0, 0.0])
    amps = harmonic_amplitudes(spec, f0_hz)
    for frame in (0, 2):
        assert amps[frame, 0].item() == pytest.approx(AMPLITUDE_SCALE * spec[frame].max().item(), rel=1e-6)
        assert torch.all(amps[frame, 1:] == 0)
    assert torch.all(amps[1] > 0)


def test_harmonics_at_or_above_nyquist_read_zero():
    spec = torch.ones(1, N_BINS)
    amps = harmonic_amplitudes(spec, torch.tensor([4000.0]))  # k = 1 -> 4 kHz, k >= 2 -> >= 8 kHz
    assert amps[0, 0].item() == pytest.approx(AMPLITUDE_SCALE, rel=1e-6)
    assert torch.all(amps[0, 1:] == 0)


@pytest.mark.parametrize("f0_hz, index", [(202.5, 40), (207.5, 42)])
def test_harmonic_index_rounds_half_to_even(f0_hz, index):
    spec = torch.arange(N_BINS, dtype=torch.float32)[None]  # linear ramp: fine sample i = (i + 0.5) / 8 - 0.5
    amps = harmonic_amplitudes(spec, torch.tensor([f0_hz]))
    assert amps[0, 0].item() == pytest.approx(AMPLITUDE_SCALE * ((index + 0.5) / 8 - 0.5), rel=1e-6)


def test_harmonic_amplitudes_rejects_bad_shapes():
    with pytest.raises(ValueError, match="200"):
        harmonic_amplitudes(torch.zeros(4, 201), torch.zeros(4))
    with pytest.raises(ValueError, match="f0_hz"):
        harmonic_amplitudes(torch.zeros(4, N_BINS), torch.zeros(5))


# -- spectrogram -----------------------------------------------------------------------------------


def test_spectrogram_of_440hz_sinusoid_peaks_in_bin_11_with_scale_100():
    amplitude = 0.3
    t = torch.arange(SAMPLE_RATE, dtype=torch.float64) / SAMPLE_RATE
    wav = (amplitude * torch.sin(2 * math.pi * 440.0 * t)).float()
    spec = magnitude_spectrogram(wav)
    assert spec.shape == (SAMPLE_RATE // HOP_LENGTH + 1, N_BINS)
    interior = spec[2:-2]
    assert torch.all(interior.argmax(dim=1) == 11)  # 440 Hz / 40 Hz per bin
    assert torch.allclose(interior[:, 11], torch.full_like(interior[:, 11], 100 * amplitude), rtol=1e-3)


@pytest.mark.parametrize("n_samples", [320, 1000, 16000, 16319])
def test_spectrogram_frame_count(n_samples):
    assert magnitude_spectrogram(torch.randn(n_samples)).shape == (n_samples // HOP_LENGTH + 1, N_BINS)


def test_spectrogram_rejects_batched_input():
    with pytest.raises(ValueError, match="1-D"):
        magnitude_spectrogram(torch.randn(2, 16000))


# -- measuring at other rates ----------------------------------------------------------------------

RATES = (16_000, 24_000, 44_100)


def _tones(sample_rate: int, partials: dict[float, float], seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return sum(a * torch.sin(2 * math.pi * hz * t) for hz, a in partials.items()).float()


def test_the_16khz_spectrum_is_todays_stft_bit_for_bit():
    wav = torch.randn(48_001, generator=torch.Generator().manual_seed(0)) * 0.1
    stft = torch.stft(wav, 400, 320, 400, torch.hann_window(400), center=True, pad_mode="reflect",
                      return_complex=True)
    assert spectrum_size(SAMPLE_RATE) == (400, 320)
    assert torch.equal(magnitude_spectrogram(wav, sample_rate=SAMPLE_RATE), stft.abs()[:N_BINS].T)


@pytest.mark.parametrize("sample_rate, n_fft, hop", [(24_000, 600, 480), (44_100, 1102, 882), (48_000, 1200, 960)])
def test_other_rates_use_20ms_frames_and_a_scaled_25ms_window(sample_rate, n_fft, hop):
    wav = torch.randn(sample_rate + 7, generator=torch.Generator().manual_seed(1)) * 0.1
    assert spectrum_size(sample_rate) == (n_fft, hop)
    stft = torch.stft(wav, n_fft, hop, n_fft, torch.hann_window(n_fft), center=True, pad_mode="reflect",
                      return_complex=True)
    spec = magnitude_spectrogram(wav, sample_rate=sample_rate)
    assert spec.shape == (wav.numel() // hop + 1, n_fft // 2)
    torch.testing.assert_close(spec, stft.abs()[: n_fft // 2].T * (400 / n_fft))
    assert torch.equal(magnitude_spectrogram(wav, 5, 20, sample_rate=sample_rate), spec[5:25])  # works in blocks


def test_a_rate_without_whole_20ms_frames_is_refused():
    with pytest.raises(ValueError, match="not a whole number of samples per frame"):
        magnitude_spectrogram(torch.randn(22_000), sample_rate=22_001)


@pytest.mark.parametrize("sample_rate", RATES)
def test_a_tone_reads_the_same_magnitude_and_amplitudes_at_every_rate(sample_rate):
    """A sinusoid of amplitude a peaks at 100 a at every rate, and its harmonic amplitudes are the
    16 kHz ones (the -17.5 Hz read-out quirk included: bins are 40 Hz apart at 16 and 24 kHz, 40.018 Hz
    at 44.1 kHz, so there a partial at f sits f / 40 * 4.5e-4 bins away and reads up to 1 % off
    below 1.5 kHz)."""
    partials = {440.0: 0.5, 880.0: 0.2, 1320.0: 0.05}
    spec = magnitude_spectrogram(_tones(sample_rate, partials), sample_rate=sample_rate)[2:-2]
    bin_hz = sample_rate / spectrum_size(sample_rate)[0]
    assert torch.all(spec.argmax(dim=1) == round(440.0 / bin_hz))
    torch.testing.assert_close(spec.amax(dim=1), torch.full((spec.shape[0],), 50.0), rtol=1e-3, atol=0)
    f0_hz = torch.full((spec.shape[0],), 440.0)
    amps = harmonic_amplitudes(spec, f0_hz, 5, sample_rate)
    at_16k = harmonic_amplitudes(magnitude_spectrogram(_tones(SAMPLE_RATE, partials))[2:-2], f0_hz, 5)
    torch.testing.assert_close(amps[:, :3], at_16k[:, :3], rtol=1e-2 if sample_rate == 44_100 else 1e-6, atol=0)
    assert amps[:, :3].min() > 0.03 and amps[:, 3:].max() < 1e-4


def test_a_partial_above_8khz_is_measured_at_24_and_44khz():
    """Harmonic 20 of 500 Hz (10 kHz) reads its amplitude where the rate can see it, the same at
    24 and 44.1 kHz up to the scalloping of 44.1 kHz's 40.018 Hz bins (0.11 bin at 10 kHz: 2.4 %)."""
    partials = {500.0: 0.3, 10_000.0: 0.1}
    read = {}
    for sample_rate in (24_000, 44_100):
        spec = magnitude_spectrogram(_tones(sample_rate, partials), sample_rate=sample_rate)[2:-2]
        read[sample_rate] = harmonic_amplitudes(spec, torch.full((spec.shape[0],), 500.0), 40, sample_rate)
    torch.testing.assert_close(read[24_000], read[44_100], rtol=3e-2, atol=1e-5)
    assert read[44_100][:, 19].min() > 0.1 * read[44_100][:, 0].min()  # about a third of harmonic 1
    assert read[44_100][:, torch.arange(40) != 19][:, 1:].max() < 1e-3 * read[44_100][:, 19].min()


@pytest.mark.parametrize("sample_rate, visible", [(16_000, 15), (24_000, 23), (44_100, 44)])
def test_harmonics_above_the_measuring_nyquist_read_zero_at_every_rate(sample_rate, visible):
    """With H for 44.1 kHz output, a spectrum measured at a lower rate gives 0 above its Nyquist."""
    spec = torch.ones(1, spectrum_size(sample_rate)[0] // 2)
    amps = harmonic_amplitudes(spec, torch.tensor([500.0]), harmonics_for_rate(44_100), sample_rate)
    assert amps.shape == (1, 137)
    assert torch.all(amps[0, :visible] > 0) and torch.all(amps[0, visible:] == 0)  # k * 500 Hz < Nyquist


def test_harmonic_columns_per_output_rate():
    assert harmonics_for_rate(SAMPLE_RATE) == N_HARMONICS == 49
    assert [harmonics_for_rate(rate) for rate in (24_000, 44_100, 48_000)] == [74, 137, 149]


@pytest.mark.parametrize("original, output, measured", [
    (44_100, 16_000, 16_000), (48_000, 44_100, 44_100), (16_000, 44_100, 16_000), (8_000, 24_000, 16_000),
    (22_050, 44_100, 22_050), (44_100, 24_000, 24_000), (22_075, 44_100, 22_050),
])
def test_the_measuring_rate_is_the_lower_of_the_two_and_at_least_16khz(original, output, measured):
    assert amplitude_rate(original, output) == measured


# -- additive synthesis ----------------------------------------------------------------------------


def test_additive_synth_edge_cases():
    """Spec §17 test 5: f0 = [0, 200, 200, 5000] Hz, all amplitudes 1."""
    f0_hz = torch.tensor([0.0, 200.0, 200.0, 5000.0])
    wav = additive_synth(f0_hz[None], torch.ones(1, 4, N_HARMONICS))[0]
    assert wav.shape == (4 * HOP_LENGTH,)
    assert torch.all(wav[:HOP_LENGTH] == 0)

    phase = _phase(f0_hz).float()
    k = torch.arange(1, N_HARMONICS + 1, dtype=torch.float32)[:, None]
    partials = torch.sin(k * phase[None])  # (H, L)
    # 200 Hz: harmonics 1..39 pass, 40 (= 8 kHz exactly) and above are suppressed.
    voiced = slice(HOP_LENGTH, 3 * HOP_LENGTH)
    expected = MASK_PASS * partials[:39, voiced].sum(0) + MASK_STOP * partials[39:, voiced].sum(0)
    assert (wav[voiced] - expected).abs().max() <= 1e-4
    # 5 kHz: only the fundamental passes; the 48 others contribute at the 1e-7 scale.
    high = slice(3 * HOP_LENGTH, 4 * HOP_LENGTH)
    assert (wav[high] - partials[0, high]).abs().max() <= N_HARMONICS * MASK_STOP + 1e-5
    assert partials[0, high].abs().max() > 0.5


def test_additive_synth_second_harmonic_lands_in_440hz_bin():
    n_frames = 50
    f0_hz = torch.full((1, n_frames), 220.0)
    amps = torch.zeros(1, n_frames, N_HARMONICS)
    amps[..., 1] = 0.5  # harmonic 2 -> 440 Hz
    wav = additive_synth(f0_hz, amps)[0]
    spec = magnitude_spectrogram(wav)[2:-2]
    assert torch.all(spec.argmax(dim=1) == 11)
    assert torch.allclose(spec[:, 11], torch.full_like(spec[:, 11], 100 * 0.5), rtol=1e-3)


@pytest.mark.parametrize("n_frames", [1, 2, 7, 50])
def test_output_length_is_320_per_frame(n_frames):
    f0_hz = torch.rand(3, n_frames) * 500
    amps = torch.rand(3, n_frames, N_HARMONICS)
    assert additive_synth(f0_hz, amps).shape == (3, n_frames * HOP_LENGTH)
    assert sine_excitation(f0_hz).shape == (3, n_frames * HOP_LENGTH)


def test_additive_synth_batch_matches_items():
    generator = torch.Generator().manual_seed(0)
    f0_hz = torch.rand(2, 12, generator=generator) * 400
    f0_hz[0, 3:5] = 0
    amps = torch.rand(2, 12, N_HARMONICS, generator=generator) * 0.1
    batched = additive_synth(f0_hz, amps)
    for item in range(2):
        single = additive_synth(f0_hz[item : item + 1], amps[item : item + 1])
        assert (batched[item] - single[0]).abs().max() <= 1e-6


def test_bicubic_upsampling_is_pytorchs():
    generator = torch.Generator().manual_seed(2)
    for n_frames in (1, 2, 3, 40):
        values = torch.rand(2, n_frames, generator=generator)
        expected = F.interpolate(values[:, None, None, :], size=(1, n_frames * HOP_LENGTH), mode="bicubic",
                                 align_corners=False)[:, 0, 0]
        # PyTorch computes each sample's source position in float32 (error ~ n_frames * 2**-24);
        # ours is exact, so the two differ by the kernel's slope times that error.
        assert (upsample_bicubic(values) - expected).abs().max() <= 4 * n_frames * 2**-24 + 1e-6


def test_blocks_with_the_carried_phase_are_exactly_the_whole_signal():
    """A block synthesised from the phase reached before it, with two frames of context on each
    side, is sample for sample the whole signal (this is what blocked vocoding relies on)."""
    generator = torch.Generator().manual_seed(1)
    f0_hz = torch.rand(1, 300, generator=generator) * 600
    f0_hz[0, 40:70] = 0
    amps = torch.rand(1, 300, N_HARMONICS, generator=generator) * 0.1
    whole = additive_synth(f0_hz, amps)
    sine = sine_excitation(f0_hz)
    cycles = running_cycles(f0_hz)
    for start, stop in ((0, 90), (90, 180), (180, 300)):
        lo, hi = max(start - 2, 0), min(stop + 2, 300)
        carried = cycles[:, lo * HOP_LENGTH - 1] if lo else None
        keep = slice((start - lo) * HOP_LENGTH, (stop - lo) * HOP_LENGTH)
        block = additive_synth(f0_hz[:, lo:hi], amps[:, lo:hi], start_cycles=carried)[:, keep]
        assert torch.equal(block, whole[:, start * HOP_LENGTH : stop * HOP_LENGTH])
        block = sine_excitation(f0_hz[:, lo:hi], start_cycles=carried)[:, keep]
        assert torch.equal(block, sine[:, start * HOP_LENGTH : stop * HOP_LENGTH])


def test_additive_synth_is_differentiable_in_amplitudes():
    amps = torch.rand(2, 5, N_HARMONICS, requires_grad=True)
    additive_synth(torch.full((2, 5), 300.0), amps).square().sum().backward()
    assert amps.grad is not None and torch.isfinite(amps.grad).all() and amps.grad.abs().sum() > 0


def test_additive_synth_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        additive_synth(torch.zeros(5), torch.zeros(1, 5, N_HARMONICS))
    with pytest.raises(ValueError, match="amps"):
        additive_synth(torch.zeros(1, 5), torch.zeros(1, 6, N_HARMONICS))


# -- sine excitation -------------------------------------------------------------------------------


def test_sine_excitation_uses_inclusive_phase():
    f0_hz = torch.tensor([[0.0, 250.0, 250.0, 0.0]])
    wav = sine_excitation(f0_hz)[0]
    assert torch.all(wav[:HOP_LENGTH] == 0)
    assert wav[HOP_LENGTH].item() == pytest.approx(math.sin(2 * math.pi * 250.0 / SAMPLE_RATE), abs=1e-6)
    assert (wav - torch.sin(_phase(f0_hz[0]).float())).abs().max() <= 1e-6
    frozen = wav[3 * HOP_LENGTH :]
    assert torch.all(frozen == frozen[0])  # unvoiced: phase freezes


@pytest.mark.parametrize("group_floats", [1, 3 * 20 * HOP_LENGTH, 2**22])
def test_additive_synth_is_the_same_whatever_the_harmonics_grouping(monkeypatch, group_floats):
    """Upsampling the amplitudes of several harmonics in one call (batch rows) changes no sample:
    one at a time, a few at a time (three rows of 20 frames per group) or all at once."""
    generator = torch.Generator().manual_seed(11)
    f0_hz = 80 + 900 * torch.rand(2, 20, generator=generator)
    f0_hz[:, 3:6] = 0
    amps = torch.rand(2, 20, N_HARMONICS, generator=generator)
    monkeypatch.setattr(excitation, "_SYNTH_FLOATS", 1)
    one_at_a_time = additive_synth(f0_hz, amps)
    monkeypatch.setattr(excitation, "_SYNTH_FLOATS", group_floats)
    assert torch.equal(additive_synth(f0_hz, amps), one_at_a_time)
