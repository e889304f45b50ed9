import math

import pytest
import torch

from conftest import sung_vowel
from knnsvc.pitch import harvest_f0, median_log_f0, shift_semitones, shift_to_reference


def test_harvest_matches_golden(golden):
    for wav, f0 in ((golden["src_wav"], golden["src_f0"]), (golden["ref_wav"], golden["ref_f0"])):
        ours = harvest_f0(wav)
        assert ours.dtype == torch.float32
        assert ours.shape[0] == wav.shape[0] // 320 + 1
        torch.testing.assert_close(ours[: f0.shape[0]], f0, atol=1e-3, rtol=0)


def test_harvest_follows_a_sung_note():
    f0 = harvest_f0(sung_vowel(1.0, 220.0))
    voiced = f0[f0 > 0]
    assert voiced.numel() > 0.8 * f0.numel()
    assert abs(1200 * math.log2(float(voiced.median()) / 220.0)) < 20  # cents


def test_key_shift_matches_golden(golden):
    for conversion in golden["conversions"].values():
        shifted = shift_to_reference(golden["src_f0"], golden["ref_f0"])
        torch.testing.assert_close(shifted, conversion["f0_shifted"], atol=1e-3, rtol=0)


def test_key_shift_moves_median_onto_reference_and_keeps_unvoiced():
    src = torch.tensor([0.0, 200.0, 220.0, 0.0, 240.0])
    ref = torch.tensor([100.0, 110.0, 0.0, 120.0])
    shifted = shift_to_reference(src, ref)
    assert shifted[0] == 0 and shifted[3] == 0
    assert math.isclose(float(median_log_f0(shifted)), float(median_log_f0(ref)), abs_tol=1e-6)
    ratios = shifted[src > 0] / src[src > 0]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 110.0 / 220.0))


def test_lower_median_like_torch():
    assert math.isclose(float(median_log_f0(torch.tensor([100.0, 200.0]))), math.log(100.0), rel_tol=1e-6)


def test_semitone_shift():
    shifted = shift_semitones(torch.tensor([0.0, 220.0]), 12)
    torch.testing.assert_close(shifted, torch.tensor([0.0, 440.0]))
    torch.testing.assert_close(shift_semitones(torch.tensor([440.0]), -3), torch.tensor([440.0 * 2 ** (-0.25)]))


def test_all_unvoiced_has_no_median():
    with pytest.raises(ValueError, match="no voiced frames"):
        shift_to_reference(torch.zeros(10), torch.tensor([100.0, 120.0]))
