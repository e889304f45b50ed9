"""Evaluation metrics that need no pretrained model: EER, text normalisation, WER/CER, F0 scores,
reports, plots, timers."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from knnsvc.eval.intelligibility import edit_distance, error_rates, find_transcript, normalise_text, number_to_words
from knnsvc.eval.pitch_accuracy import expected_f0, f0_scores, pitch_accuracy
from knnsvc.eval.report import SYSTEM_COLUMNS, table1_markdown, write_csv, write_json
from knnsvc.eval.speaker import Trial, equal_error_rate, make_trials, per_speaker_eer
from knnsvc.eval.speed import peak_rss_gb, real_time_factor, reset_peak_rss
from knnsvc.pitch import harvest_f0
from knnsvc.plots import frame_provenance, plot_f0_contours, plot_metric_curves, plot_provenance, plot_spectrograms
from knnsvc.runtime import StageTimer

SR = 16000


def sung_vowel(f0_hz: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Harmonic-rich vowel following a per-sample F0 contour (Harvest needs harmonics, not a sine)."""
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.cumsum(f0_hz) / SR
    wav = np.zeros_like(phase)
    for h in range(1, 25):
        amp = np.exp(-(((h * f0_hz) - 700.0) / 900.0) ** 2) + 0.05
        wav += np.where(h * f0_hz < 7500, amp * np.sin(h * phase) / h**0.5, 0.0)
    wav = 0.5 * wav / np.abs(wav).max() + 1e-3 * rng.standard_normal(len(wav))
    return torch.from_numpy(wav.astype(np.float32))


def vibrato_contour(seconds: float, base_hz: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return base_hz * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t)) * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))


# ------------------------------------------------------------------------------------------ EER
def test_eer_of_perfectly_separable_scores_is_zero():
    scores = [0.9, 0.8, 0.85, 0.95, 0.1, 0.2, 0.3, 0.05]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    assert equal_error_rate(scores, labels) == 0.0


def test_eer_of_fully_inverted_scores_is_one():
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(1.0)


def test_eer_of_identical_distributions_is_about_half():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=4000)
    labels = np.r_[np.ones(2000, dtype=int), np.zeros(2000, dtype=int)]
    assert equal_error_rate(scores, labels) == pytest.approx(0.5, abs=0.03)
    assert equal_error_rate(np.zeros(10), [1] * 5 + [0] * 5) == pytest.approx(0.5)


def test_eer_interpolates_between_roc_points():
    # genuine 0.9, 0.4; impostor 0.6, 0.1: ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1) -> EER 0.5
    assert equal_error_rate([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5)
    # one swap out of 4 x 4 -> FPR = FNR = 0.25
    scores = [0.9, 0.8, 0.7, 0.35, 0.4, 0.3, 0.2, 0.1]
    assert equal_error_rate(scores, [1, 1, 1, 1, 0, 0, 0, 0]) == pytest.approx(0.25)


def test_eer_needs_both_labels():
    with pytest.raises(ValueError, match="genuine and impostor"):
        equal_error_rate([0.1, 0.2], [1, 1])


def test_per_speaker_eer_mean_std_and_undefined_speakers():
    trials = [Trial("a", "x1", "y1", 1), Trial("a", "x2", "y2", 0), Trial("b", "x3", "y3", 1),
              Trial("b", "x4", "y4", 0), Trial("c", "x5", "y5", 0)]
    result = per_speaker_eer(trials, [0.9, 0.1, 0.1, 0.9, 0.5])
    assert result.per_speaker == {"a": 0.0, "b": 1.0}
    assert result.mean == pytest.approx(0.5) and result.std == pytest.approx(0.5)
    assert "c" in result.skipped


def test_make_trials_balanced_per_target():
    trials = make_trials({"t": ["c1", "c2", "c3"], "lonely": ["c4"]}, {"t": ["r1", "r2", "r3"], "lonely": ["r9"]})
    t_trials = [t for t in trials if t.target_speaker == "t"]
    assert sum(t.label == 0 for t in t_trials) == 3 and sum(t.label == 1 for t in t_trials) == 3
    assert all(t.x != t.y for t in t_trials if t.label == 1)
    assert [t.label for t in trials if t.target_speaker == "lonely"] == [0]


# ---------------------------------------------------------------------------------- WER / CER
def test_number_words_follow_num2words_style():
    assert number_to_words(21) == "twenty-one"
    assert number_to_words(105) == "one hundred and five"
    assert number_to_words(1984) == "one thousand, nine hundred and eighty-four"
    assert number_to_words(2_000_000) == "two million"


def test_normalise_text_like_the_reference():
    assert normalise_text("  Hello,   World! It's 21 o'clock.\n") == "hello world its twenty one oclock"


def test_edit_distance_and_pooled_rates():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2
    rates = error_rates(["the cat sat", "a dog"], ["the cat sat on", "a fog"])
    assert rates.words == 5 and rates.word_errors == 2
    assert rates.wer == pytest.approx(0.4)
    assert rates.cer == pytest.approx((3 + 1) / (11 + 5))
    assert error_rates([""], ["x"]).wer is None


def test_find_transcript_sidecar_and_librispeech(tmp_path):
    (tmp_path / "song.txt").write_text("la la land\n")
    assert find_transcript(tmp_path / "song.wav") == "la la land"
    (tmp_path / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS\n")
    assert find_transcript(tmp_path / "84-121123-0001.flac") == "BUT IN LESS"
    assert find_transcript(tmp_path / "other.wav") is None


# ------------------------------------------------------------------------------------ F0 scores
def test_f0_scores_on_contours():
    f0 = torch.tensor([0.0, 200.0, 210.0, 220.0, 0.0, 230.0])
    same = f0_scores(f0, f0)
    assert same.f0_rmse_cents == 0.0 and same.vuv_error == 0.0 and same.f0_corr == pytest.approx(1.0)
    up = f0_scores(f0, f0 * 2 ** (1 / 12))
    assert up.f0_rmse_cents == pytest.approx(100.0) and up.gross_pitch_error == 1.0
    flipped = f0_scores(f0, torch.tensor([100.0, 200.0, 210.0, 220.0, 0.0, 0.0, 99.0]))
    assert flipped.vuv_error == pytest.approx(2 / 6) and flipped.frames == 6 and flipped.voiced_both == 3
    assert f0_scores(torch.zeros(4), torch.zeros(4)).f0_rmse_cents is None


@pytest.mark.slow
def test_pitch_metrics_zero_for_identical_audio_and_match_a_known_shift():
    contour = vibrato_contour(2.0, 180.0)
    wav = sung_vowel(contour, seed=1)
    shifted_wav = sung_vowel(contour * 2 ** (3 / 12), seed=2)  # the same melody 3 semitones up
    source_f0 = harvest_f0(wav)
    assert (source_f0 > 0).float().mean() > 0.9

    identical = pitch_accuracy(wav, source_f0)
    assert identical.f0_rmse_cents == pytest.approx(0.0, abs=1e-6)
    assert identical.vuv_error == 0.0 and identical.f0_corr == pytest.approx(1.0)

    shifted = pitch_accuracy(shifted_wav, expected_f0(source_f0, pitch_shift=3.0))
    assert shifted.f0_rmse_cents < 10.0
    assert shifted.vuv_error < 0.05 and shifted.f0_corr > 0.98
    unshifted = pitch_accuracy(shifted_wav, source_f0)  # forgetting the key shift costs ~300 cents
    assert unshifted.f0_rmse_cents == pytest.approx(300.0, abs=15.0)

    # "auto": the target's median pitch is 3 semitones above the source's, so the expected contour
    # is the source moved up by 3 semitones.
    target_f0 = harvest_f0(sung_vowel(vibrato_contour(1.0, 180.0) * 2 ** (3 / 12), seed=3))
    auto = pitch_accuracy(shifted_wav, expected_f0(source_f0, [target_f0], "auto"))
    assert auto.f0_rmse_cents < 20.0


def test_expected_f0_modes():
    f0 = torch.tensor([0.0, 100.0, 200.0])
    assert torch.equal(expected_f0(f0, pitch_shift=None), f0)
    assert torch.allclose(expected_f0(f0, pitch_shift=12.0), torch.tensor([0.0, 200.0, 400.0]))
    assert torch.allclose(expected_f0(f0, torch.tensor([0.0, 300.0]), "auto"), torch.tensor([0.0, 300.0, 600.0]))
    with pytest.raises(ValueError):
        expected_f0(f0, None, "auto")


# ------------------------------------------------------------------------------- reports, plots
def test_table1_has_paper_columns_and_condition_rows():
    runs = [
        {"system": "kNN-SVC", "condition": "os → os", "eer": 31.5, "eer_std": 2.0, "wer": 10.0, "sim": 0.9},
        {"system": "kNN-VC", "condition": "os → os", "eer": 20.0, "wer": 12.0, "sim": 0.8},
        {"system": "kNN-SVC", "condition": "ls → ls", "eer": 40.0, "wer": float("nan")},
        {"system": "NeuCoSVC", "condition": "os → os", "eer": 25.0},
    ]
    table = table1_markdown(runs)
    header = table.splitlines()[0]
    assert header.split("|")[3:7] == [f" {s} " for s in SYSTEM_COLUMNS]
    assert "NeuCoSVC" in header
    lines = table.splitlines()
    eer_os = next(line for line in lines if line.startswith("| os → os | EER"))
    assert "31.50 ± 2.00" in eer_os and "20.00" in eer_os and eer_os.count("–") == 2
    assert not any(line.startswith("| ls → ls | WER") for line in lines)  # NaN everywhere: row dropped
    assert any(line.startswith("| ls → ls | EER") for line in lines)


def test_json_and_csv_writers(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": tmp_path})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": str(tmp_path)}
    rows = [{"item": "x", "sim": 0.5, "zzz": 1}, {"item": "y", "error": "bad", "wer": None}]
    with write_csv(tmp_path / "u.csv", rows).open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0])[:2] == ["item", "sim"] and read[1]["error"] == "bad" and read[1]["wer"] == ""


def test_provenance_maps_rows_to_files():
    indices = torch.tensor([[5, 1], [12, 0], [30, 2]])
    weights = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    file_index, seconds, top = frame_provenance(indices, weights, starts=[0, 10, 25])
    assert file_index.tolist() == [0, 0, 2]
    assert seconds == pytest.approx([0.1, 0.0, 0.1])
    assert top == pytest.approx([0.9, 0.8, 0.6])
    file_index, _, _ = frame_provenance(indices, None, starts=[0, 10, 25])
    assert file_index.tolist() == [0, 1, 2]


def test_plots_write_pngs(tmp_path):
    f0 = torch.tensor([0.0, 200.0, 210.0, 0.0, 220.0])
    wav = sung_vowel(vibrato_contour(0.5, 200.0))
    paths = [
        plot_f0_contours(tmp_path / "f0.png", {"source": f0, "shifted": f0 * 1.2, "converted": f0 * 1.21}),
        plot_spectrograms(tmp_path / "spec.png", {"source": wav, "reference": wav[:4000], "converted": wav}),
        plot_provenance(tmp_path / "prov.png", torch.randint(0, 50, (25, 4)), torch.rand(25, 4), [0, 20],
                        ["a.wav", "b.wav"]),
        plot_metric_curves(tmp_path / "curve.png",
                           [{"k": 2, "eer": 10, "s": "A"}, {"k": 4, "eer": 20, "s": "A"},
                            {"k": 2, "eer": 12, "s": "B"}],
                           "k", ["eer"], group_by="s"),
        plot_metric_curves(tmp_path / "cat.png", [{"d": None, "sim": 0.5}, {"d": 5.0, "sim": 0.4}], "d",
                           ["sim", "eer"]),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_timer_and_rtf():
    timer = StageTimer(torch.device("cpu"))
    with timer("a"):
        sum(range(1000))
    with timer("a"):
        pass
    with timer("b", sync=False):
        pass
    assert set(timer.seconds) == {"a", "b"} and sum(timer.seconds.values()) >= timer.seconds["a"] > 0
    assert real_time_factor(2.0, 4.0) == 0.5 and real_time_factor(1.0, 0.0) is None
    reset_peak_rss()
    assert 0 < peak_rss_gb() < 64
    assert not math.isnan(peak_rss_gb())
