"""Matching against the reference run: indices identical in float64, weights within 1e-3."""

import pytest
import torch

from knnsvc import matching
from knnsvc.matching import (
    HARMONIC_SMOOTHNESS,
    WAVLM_SMOOTHNESS,
    Neighbours,
    OptimiserSettings,
    PitchCost,
    Reselector,
    cosine_topk,
    optimise_weights,
    pitch_priority,
    reselect,
    unit_rows,
    weighted_sum,
)


@pytest.fixture(scope="module")
def tables(golden):
    return golden["src_feats"].double(), golden["ref_feats"].double()


def test_top32_identical_to_reference(golden, tables):
    query, pool = tables
    assert torch.equal(cosine_topk(query, pool, 32), golden["nn32"])


def test_topk_is_sorted_by_cosine_distance(tables):
    query, pool = tables
    nn = cosine_topk(query, pool, 8)
    q = query / query.norm(dim=1, keepdim=True)
    p = pool / pool.norm(dim=1, keepdim=True)
    dist = 1 - torch.einsum("td,tkd->tk", q, p[nn])
    assert bool((dist[:, 1:] >= dist[:, :-1]).all())
    brute = (1 - q @ p.T).argmin(dim=1)
    assert torch.equal(nn[:, 0], brute)


def test_too_few_pool_frames_is_a_clear_error(tables):
    query, pool = tables
    with pytest.raises(ValueError, match="fewer than the 32 candidates"):
        cosine_topk(query, pool[:31], 32)


def test_pitch_priority_identical_to_reference(golden):
    for conversion in golden["conversions"].values():
        ordered = pitch_priority(golden["nn32"], conversion["f0_shifted"], golden["ref_f0"])
        assert torch.equal(ordered, conversion["pitch_sorted"][0])


def test_pitch_priority_is_stable_and_prefers_unvoiced_for_unvoiced():
    candidates = torch.tensor([[3, 2, 1, 0]])
    pool_f0 = torch.tensor([0.0, 200.0, 0.0, 400.0])
    assert pitch_priority(candidates, torch.tensor([0.0]), pool_f0).tolist() == [[2, 0, 1, 3]]
    assert pitch_priority(candidates, torch.tensor([390.0]), pool_f0).tolist()[0][:2] == [3, 1]


def test_reselection_identical_to_reference(golden, tables):
    query, pool = tables
    conversion = golden["conversions"]["post_opt_0.2"]
    pass_a = reselect(golden["nn32"][:, :4], query, pool, 0.2)
    assert torch.equal(pass_a, conversion["reselect"][0])
    pitch = PitchCost(conversion["f0_shifted"], golden["ref_f0"])
    pass_b = reselect(conversion["pitch_sorted"][0][:, :4], query, pool, 0.2, pitch)
    assert torch.equal(pass_b, conversion["reselect"][1])


def _jumpy_then_steady(seed=0):
    """A source that changes abruptly once (frame 1), then barely moves; a smooth pool."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(300, 16, generator=g, dtype=torch.float64).cumsum(0)
    steady = torch.randn(16, generator=g, dtype=torch.float64) * 5
    noise = [0.05 * torch.randn(16, generator=g, dtype=torch.float64) for _ in range(30)]
    query = torch.stack([-steady] + [steady + n for n in noise])
    f0_pool = torch.full((300,), 200.0)
    f0_target = torch.full((31,), 200.0)
    return query, pool, f0_target, f0_pool


def test_sticky_switch_is_a_named_choice():
    """Faithful: after one fast-changing frame pass B's concatenation term stays off, so the
    result equals m = 0. The fix (sticky_switch_off=False) re-enables it on steady frames."""
    query, pool, f0_target, f0_pool = _jumpy_then_steady()
    initial = pitch_priority(cosine_topk(query, pool, 32), f0_target, f0_pool)[:, :4]
    sticky = reselect(initial, query, pool, 50.0, PitchCost(f0_target, f0_pool))
    no_concat = reselect(initial, query, pool, 0.0, PitchCost(f0_target, f0_pool))
    fixed = reselect(initial, query, pool, 50.0, PitchCost(f0_target, f0_pool, sticky_switch_off=False))
    assert torch.equal(sticky, no_concat)
    assert not torch.equal(fixed, no_concat)


def _concat_distance(indices, pool):
    unit = pool / pool.norm(dim=1, keepdim=True)
    return (1 - (unit[indices[1:, 0]] * unit[indices[:-1, 0]]).sum(1)).mean()


def test_reselection_makes_consecutive_picks_closer():
    """A noisy source read along a smooth reference trajectory: the larger the concatenation
    weight, the closer consecutive picks; m = 0 keeps the cosine choice."""
    g = torch.Generator().manual_seed(0)
    frame = torch.arange(200, dtype=torch.float64)[:, None]
    rate = 0.3 * torch.rand(1, 16, generator=g, dtype=torch.float64)
    phase = 6.28 * torch.rand(1, 16, generator=g, dtype=torch.float64)
    pool = torch.cos(rate * frame + phase)
    query = pool[50:90] + 0.4 * torch.randn(40, 16, generator=g, dtype=torch.float64)
    initial = cosine_topk(query, pool, 4)
    assert torch.equal(reselect(initial, query, pool, 0.0)[:, 0], initial[:, 0])
    distances = [_concat_distance(reselect(initial, query, pool, m), pool) for m in (0.2, 1.0, 10.0)]
    assert distances[0] < _concat_distance(initial, pool)
    assert distances[2] < distances[1] < distances[0]


def test_weights_match_reference(golden, tables):
    _, pool = tables
    conversion = golden["conversions"]["post_opt_0.2"]
    w_a = optimise_weights(conversion["reselect"][0], pool, WAVLM_SMOOTHNESS)
    torch.testing.assert_close(w_a.float(), conversion["weights_wavlm"][0], atol=1e-3, rtol=0)
    amps = golden["ref_harmonics"].double()
    w_b = optimise_weights(conversion["reselect"][1], amps, HARMONIC_SMOOTHNESS)
    torch.testing.assert_close(w_b.float(), conversion["weights_harm"][0], atol=1e-3, rtol=0)
    x = weighted_sum(conversion["reselect"][0], w_a, pool).float()
    torch.testing.assert_close(x, conversion["X"], rtol=1e-3, atol=1e-3 * float(conversion["X"].abs().max()))
    a = weighted_sum(conversion["reselect"][1], w_b, amps).float()
    torch.testing.assert_close(a, conversion["A"], rtol=1e-3, atol=1e-3 * float(conversion["A"].abs().max()))


def _direct_loss(indices, weights, table, alpha):
    """The smoothness loss as the spec writes it, with explicit neighbour gathers."""
    last = table.shape[0] - 1
    e = {o: torch.einsum("tk,tkd->td", weights, table[(indices + o).clamp(0, last)]) for o in (-1, 0, 1)}
    return alpha * (((e[-1][1:] - e[0][:-1]) ** 2).mean() + ((e[0][1:] - e[1][:-1]) ** 2).mean())


def test_optimised_weights_lower_the_smoothness_loss(golden, tables):
    _, pool = tables
    indices = golden["conversions"]["post_opt_0.2"]["reselect"][0]
    uniform = torch.full(indices.shape, 0.25, dtype=torch.float64)
    weights = optimise_weights(indices, pool, WAVLM_SMOOTHNESS)
    torch.testing.assert_close(weights.sum(1), torch.ones(indices.shape[0], dtype=torch.float64))
    assert _direct_loss(indices, weights, pool, 0.1) < 0.9 * _direct_loss(indices, uniform, pool, 0.1)


def test_iteration_cap_is_respected(golden, tables):
    _, pool = tables
    indices = golden["conversions"]["post_opt_0.2"]["reselect"][0]
    capped = optimise_weights(indices, pool, WAVLM_SMOOTHNESS, OptimiserSettings(max_iters=1))
    torch.testing.assert_close(capped, torch.full_like(capped, 0.25))


def test_single_frame_gets_uniform_weights():
    weights = optimise_weights(torch.tensor([[0, 1, 2, 3]]), torch.randn(10, 4), 0.1)
    assert weights.tolist() == [[0.25] * 4]


def test_neighbours_clamp_at_pool_ends_or_file_boundaries():
    joined = Neighbours.of(6)
    assert joined.previous.tolist() == [0, 0, 1, 2, 3, 4] and joined.next.tolist() == [1, 2, 3, 4, 5, 5]
    per_file = Neighbours.of(6, starts=[0, 2, 5])
    assert per_file.previous.tolist() == [0, 0, 2, 2, 3, 5]
    assert per_file.next.tolist() == [1, 1, 3, 4, 4, 5]


def test_file_boundaries_keep_successors_and_smoothing_inside_files():
    """Row 19 ends file 1: joined, its successor is file 2's first row; per file, it is itself."""
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(40, 8, generator=g, dtype=torch.float64)
    initial = torch.tensor([[19, 5, 6, 7], [8, 9, 10, 11]])
    query = torch.stack([pool[19], pool[20]])  # frame 1 sounds exactly like file 2's first row
    per_file_neighbours = Neighbours.of(40, starts=[0, 20])
    joined = reselect(initial, query, pool, 0.0)
    per_file = reselect(initial, query, pool, 0.0, neighbours=per_file_neighbours)
    assert joined[1, 0] == 20
    assert 20 not in per_file[1].tolist()
    weights = optimise_weights(initial, pool, 0.1, neighbours=per_file_neighbours)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, dtype=torch.float64))


def test_blocked_matching_is_exactly_the_whole_source(golden, tables):
    """Reselection fed block by block (state carried), Gram matrices built in small blocks and
    the kNN search in sub-blocks give exactly the whole-source result."""
    query, pool = tables
    conversion = golden["conversions"]["post_opt_0.2"]
    pitch = PitchCost(conversion["f0_shifted"], golden["ref_f0"])
    pool_unit, query_unit = unit_rows(pool), unit_rows(query)
    initial_b = conversion["pitch_sorted"][0][:, :4]
    for pitch_cost, initial, expected in ((None, golden["nn32"][:, :4], conversion["reselect"][0]),
                                          (pitch, initial_b, conversion["reselect"][1])):
        reselector = Reselector(pool_unit, 0.2, pitch_cost)
        blocks = [reselector(initial[a:b], query_unit[a:b]) for a, b in ((0, 1), (1, 37), (37, 100), (100, 150))]
        assert torch.equal(torch.cat(blocks), expected)
    whole = optimise_weights(conversion["reselect"][0], pool, WAVLM_SMOOTHNESS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matching, "GRAM_BLOCK", 7)
        patch.setattr(matching, "QUERY_BLOCK", 16)
        assert torch.equal(optimise_weights(conversion["reselect"][0], pool.float(), WAVLM_SMOOTHNESS,
                                            dtype=torch.float64), whole)
        assert torch.equal(cosine_topk(query, pool_unit, 32, pool_is_unit=True), golden["nn32"])
