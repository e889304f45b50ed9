"""Matching: cosine kNN, pitch priority, autoregressive reselection, summing-weight optimisation.

All functions are pure: tensors in, tensors out, no device or global state. Arithmetic happens in
the dtype of the features passed in; the reference runs this stage in float64.

Long sources are matched in blocks of `MATCH_BLOCK` frames, aligned at multiples of that size:
the kNN search, the reselection (carrying its state from block to block) and the Gram matrices
of the weight optimisation see the same sub-blocks whatever the caller's blocking, so a blocked
run gives exactly the result of a whole-file run. Memory is bounded by the block sizes and the
pool, not by the source length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PITCH_EPS = 1e-5
"""Added to F0 before log2 so unvoiced frames (0 Hz) get a finite, very low log-pitch."""

QUERY_BLOCK = 256
"""Source frames per kNN distance block (bounds the block x N distance matrix in memory)."""

MATCH_BLOCK = 16 * QUERY_BLOCK
"""Source frames per matching block (a multiple of QUERY_BLOCK; results do not depend on it)."""

GRAM_BLOCK = 1024
"""Frame pairs per block when the optimiser's Gram matrices are built (bounds gathered rows)."""


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (the one normalisation every cosine in this module uses)."""
    return x / x.norm(dim=-1, keepdim=True)


def frame_blocks(num_frames: int, block: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering 0..num_frames in steps of `block` (one range if block <= 0)."""
    if block <= 0 or num_frames <= block:
        return [(0, num_frames)] if num_frames else []
    return [(start, min(start + block, num_frames)) for start in range(0, num_frames, block)]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a_i, b_j) for all pairs.

    Args:
        a: (T, D), b: (N, D).

    Returns:
        (T, N) distances in [0, 2].
    """
    a_unit = a / a.norm(dim=-1, keepdim=True)
    b_unit = b / b.norm(dim=-1, keepdim=True)
    return 1.0 - a_unit @ b_unit.T


def cosine_topk(query: torch.Tensor, pool: torch.Tensor, k: int = 32, pool_is_unit: bool = False) -> torch.Tensor:
    """The k cosine-nearest pool frames of each query frame.

    Args:
        query: (T, D) source features.
        pool: (N, D) reference features, N >= k (or their `unit_rows` with ``pool_is_unit``).

    Returns:
        (T, k) int64 pool indices, nearest first.
    """
    if pool.shape[0] < k:
        raise ValueError(f"the reference has {pool.shape[0]} frames, fewer than the {k} candidates")
    pool_unit = pool if pool_is_unit else unit_rows(pool)
    blocks = []
    for start, stop in frame_blocks(query.shape[0], QUERY_BLOCK):
        dist = 1.0 - unit_rows(query[start:stop]) @ pool_unit.T  # (B, N)
        blocks.append(dist.topk(k, dim=-1, largest=False).indices)
    return torch.cat(blocks) if blocks else query.new_zeros((0, k), dtype=torch.long)


def log2_pitch(f0_hz: torch.Tensor) -> torch.Tensor:
    """log2(f0 + 1e-5): the pitch scale of the pitch cost (unvoiced -> about -16.6)."""
    return torch.log2(f0_hz + PITCH_EPS)


def pitch_priority(
    candidates: torch.Tensor, f0_target_hz: torch.Tensor, f0_pool_hz: torch.Tensor
) -> torch.Tensor:
    """Reorder candidates by pitch distance to the target pitch (spec §6.3).

    Stable: equally distant candidates keep their cosine order, so unvoiced target frames keep
    the cosine-ranked unvoiced candidates first.

    Args:
        candidates: (T, C) pool indices in cosine order.
        f0_target_hz: (T,) key-shifted source F0, 0 = unvoiced.
        f0_pool_hz: (N,) reference F0.

    Returns:
        (T, C) the same indices, closest pitch first.
    """
    cost = (log2_pitch(f0_pool_hz)[candidates] - log2_pitch(f0_target_hz)[:, None]).abs()
    order = torch.sort(cost, dim=1, stable=True).indices
    return candidates.gather(1, order)


@dataclass(frozen=True)
class Neighbours:
    """The pool row before and after each pool row, i.e. its contiguous reference frames.

    Attributes:
        previous: (N,) int64; next: (N,) int64. A row with no neighbour on a side points at itself.
    """

    previous: torch.Tensor
    next: torch.Tensor

    @classmethod
    def of(cls, num_rows: int, starts: list[int] | None = None) -> Neighbours:
        """Neighbours in a pool of `num_rows` rows.

        Without `starts` the whole pool is one sequence, clamped only at its ends (the reference:
        the frame after a file's last frame is the next file's first). With the first row of each
        file in `starts`, neighbours stay inside their file.
        """
        rows = torch.arange(num_rows)
        previous, following = (rows - 1).clamp(min=0), (rows + 1).clamp(max=max(num_rows - 1, 0))
        if starts is not None:
            firsts = torch.tensor([s for s in starts if 0 <= s < num_rows], dtype=torch.long)
            previous[firsts] = firsts
            lasts = torch.cat([firsts[1:] - 1, torch.tensor([num_rows - 1])]) if num_rows else firsts
            following[lasts] = lasts
        return cls(previous=previous, next=following)


@dataclass(frozen=True)
class PitchCost:
    """Pitch arrays for the pitch-aware reselection of the harmonic pass (spec §7.3, pass B).

    `sticky_switch_off` reproduces the reference: once a frame's source self-change baseline
    reaches `CONCAT_OFF_BASELINE`, the concatenation term stays off for the rest of the
    utterance. False re-evaluates it per frame (the evident intent).
    """

    f0_target_hz: torch.Tensor | None  # (T,), or None when given block by block
    f0_pool_hz: torch.Tensor  # (N,)
    sticky_switch_off: bool = True


CONCAT_OFF_BASELINE = 0.08
"""Pass B: frames whose source changes by 2*cos_dist >= this switch the concatenation term off."""

CONCAT_FORGIVE_FACTOR = 5.0
"""Pass B: concatenation distances below factor x baseline count as 0."""


class Reselector:
    """Autoregressive reselection with a concatenation cost (spec §7.3), block by block.

    Frame t chooses its k neighbours among its own initial k candidates and the natural
    successors (index + 1) of frame t-1's choice, by cosine distance to the source frame plus
    `concat_weight` times the low median of the cosine distances to frame t-1's choice (plus the
    pitch distance in the harmonic pass). The choice is causal, so consecutive blocks of a
    source, fed in order, give exactly the whole-source result: the last choice, the last source
    frame and the (sticky) concatenation weight carry over.

    Args:
        pool_unit: (N, D) unit rows of the reference features (`unit_rows`), in the matching dtype.
        concat_weight: m, the weight of the concatenation cost.
        pitch: pitch arrays for the harmonic pass (None for the WavLM pass); its f0_target_hz
            covers the whole source, indexed by absolute frame.
        neighbours: where the "natural successor" of a pool row is; default: the next row of
            the concatenated pool (the reference).
    """

    def __init__(
        self,
        pool_unit: torch.Tensor,
        concat_weight: float,
        pitch: PitchCost | None = None,
        neighbours: Neighbours | None = None,
    ) -> None:
        # The loop runs on tiny arrays: numpy has far less per-call overhead than torch here.
        self.pool_unit = pool_unit.cpu().numpy()
        self.successor = (neighbours or Neighbours.of(pool_unit.shape[0])).next.numpy()
        self.pitch = pitch
        if pitch is not None:
            dtype = self.pool_unit.dtype
            self.pitch_target = None
            if pitch.f0_target_hz is not None:
                self.pitch_target = log2_pitch(pitch.f0_target_hz).cpu().numpy().astype(dtype)
            self.pitch_pool = log2_pitch(pitch.f0_pool_hz).cpu().numpy().astype(dtype)
        self.weight = concat_weight
        self.position = 0  # absolute index of the next source frame
        self.last_choice: np.ndarray | None = None  # (K,) pool rows chosen for the previous frame
        self.last_query: np.ndarray | None = None  # (D,) previous source frame, unit length

    def __call__(
        self, initial: torch.Tensor, query_unit: torch.Tensor, f0_target_hz: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reselect the next block of source frames.

        Args:
            initial: (B, K) candidate pool indices of the block's frames.
            query_unit: (B, D) unit source features of the block (`unit_rows`, matching dtype).
            f0_target_hz: (B,) the block's target pitch, for a harmonic pass whose `PitchCost`
                has no whole-source targets (streaming, where targets arrive block by block).

        Returns:
            (B, K) reselected pool indices, lowest total cost first.
        """
        n_frames, k = initial.shape
        if n_frames == 0:
            return initial.clone()
        init = initial.cpu().numpy()
        query = query_unit.cpu().numpy()
        # 2 * cos_dist(Q[t-1], Q[t]) per frame; the source's very first frame has none (unused)
        if self.last_query is None:
            steps = 2.0 * (1.0 - np.einsum("td,td->t", query[:-1], query[1:]))
            baseline = np.concatenate([np.zeros(1, dtype=query.dtype), steps])
        else:
            previous = np.concatenate([self.last_query[None], query[:-1]])
            baseline = 2.0 * (1.0 - np.einsum("td,td->t", previous, query))

        if self.pitch is not None:
            if f0_target_hz is not None:
                targets = log2_pitch(f0_target_hz).cpu().numpy().astype(self.pool_unit.dtype)
            else:
                assert self.pitch_target is not None, "f0_target_hz is needed: the PitchCost has no targets"
                targets = self.pitch_target[self.position : self.position + n_frames]
        chosen = np.empty_like(init)
        first = 0
        if self.last_choice is None:
            chosen[0] = init[0]
            first = 1
        pool_unit = self.pool_unit
        for t in range(first, n_frames):
            prev = chosen[t - 1] if t > 0 else self.last_choice
            cands = np.concatenate([init[t], self.successor[prev]])  # (2K,)
            cand_unit = pool_unit[cands]  # (2K, D)
            match = 1.0 - cand_unit @ query[t]  # (2K,)
            concat = 1.0 - pool_unit[prev] @ cand_unit.T  # (K, 2K)
            b = baseline[t]
            if self.pitch is not None:
                if b < CONCAT_OFF_BASELINE:
                    concat[concat < CONCAT_FORGIVE_FACTOR * b] = 0.0
                    current = self.weight
                else:
                    current = 0.0
                    if self.pitch.sticky_switch_off:
                        self.weight = 0.0
                extra = np.abs(self.pitch_pool[cands] - targets[t])
            else:
                concat = np.where(concat > b, 1.5 * concat - b, concat)
                current = self.weight
                extra = 0.0
            total = current * _low_median(concat) + match + extra
            chosen[t] = cands[np.argsort(total, kind="stable")[:k]]
        self.last_choice = chosen[-1].copy()
        self.last_query = query[-1].copy()
        self.position += n_frames
        return torch.from_numpy(chosen).to(initial.device)


def reselect(
    initial: torch.Tensor,
    query: torch.Tensor,
    pool: torch.Tensor,
    concat_weight: float,
    pitch: PitchCost | None = None,
    neighbours: Neighbours | None = None,
) -> torch.Tensor:
    """Autoregressive reselection of a whole source (see :class:`Reselector`).

    Args:
        initial: (T, K) candidate pool indices per source frame.
        query: (T, D) source features.
        pool: (N, D) reference features.
        concat_weight: m, the weight of the concatenation cost.
        pitch: pitch arrays for the harmonic pass, None for the WavLM pass.
        neighbours: natural successors (default: the next row of the concatenated pool).

    Returns:
        (T, K) reselected pool indices, lowest total cost first.
    """
    return Reselector(unit_rows(pool), concat_weight, pitch, neighbours)(initial, unit_rows(query))


def _low_median(x: np.ndarray) -> np.ndarray:
    """Lower median over axis 0 (torch.median semantics: the (n-1)//2-th smallest)."""
    return np.sort(x, axis=0)[(x.shape[0] - 1) // 2]


@dataclass(frozen=True)
class OptimiserSettings:
    """Adam settings and the reference's stopping rule for the summing weights (spec §7.4)."""

    lr: float = 0.1
    max_iters: int = 100_000
    check_every: int = 100
    """Stop at iteration check_every*n + 1 if the best loss moved less than `tolerance`."""
    tolerance: float = 1e-5
    patience: int = 1000
    """Stop if the loss has not improved for this many iterations."""


WAVLM_SMOOTHNESS = 0.1
"""alpha of the smoothness loss for the WavLM features (pass A)."""

HARMONIC_SMOOTHNESS = 1000.0
"""alpha of the smoothness loss for the harmonic amplitudes (pass B)."""


def optimise_weights(
    indices: torch.Tensor,
    table: torch.Tensor,
    alpha: float,
    settings: OptimiserSettings = OptimiserSettings(),
    neighbours: Neighbours | None = None,
    dtype: torch.dtype | None = None,
    fixed_first: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summing weights under which consecutive output frames concatenate smoothly (spec §7.4).

    With w[t] = softmax(theta[t]) and E_o[t] = sum_j w[t, j] * table[indices[t, j] + o], it
    minimises alpha * (mean (E_-1[t+1] - E_0[t])^2 + mean (E_0[t+1] - E_+1[t])^2) with Adam
    (amsgrad, theta in float32 as the reference) and returns the best weights seen, stopping as
    the reference does.

    The loss is a quadratic form in the weights, so it is evaluated from per-pair K x K Gram
    matrices computed once, with its exact gradient: each step costs O(T K^2) instead of the
    reference's O(T K D) autograd pass.

    The Gram matrices are built in blocks of `GRAM_BLOCK` frame pairs, so memory stays bounded
    for long sources; the optimisation itself runs on all frames at once (its stopping rule is
    global), on (T, K) arrays.

    Args:
        indices: (T, K) selected pool indices.
        table: (N, D) per-pool-frame vectors (WavLM features or harmonic amplitudes).
        alpha: loss weight (0.1 for WavLM features, 1000 for harmonic amplitudes).
        neighbours: which rows count as table[index - 1] and table[index + 1]; default: the
            adjacent rows of the concatenated pool (the reference).
        dtype: arithmetic of the Gram matrices (rows are converted as they are gathered);
            default: the dtype of `table`.
        fixed_first: (K,) weights of frame 0, kept as they are (streaming optimises each new
            block joined to the last frame already emitted); None optimises every frame.

    Returns:
        (T, K) weights, each row on the simplex, in `dtype`.
    """
    dtype = dtype or table.dtype
    n_frames, k = indices.shape
    if n_frames < 2:
        return torch.full((n_frames, k), 1.0 / k, dtype=dtype, device=table.device)
    neighbours = neighbours or Neighbours.of(table.shape[0])
    a_aa, a_ab, a_bb = _pair_grams(indices, table, neighbours, dtype)
    scale = alpha / ((n_frames - 1) * table.shape[1])

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = _softmax(theta).astype(a_aa.dtype)
        after, before = w[1:], w[:-1]  # (T-1, K): frames t+1 and t of each pair
        aa_after = np.einsum("pij,pj->pi", a_aa, after)
        ab_before = np.einsum("pij,pj->pi", a_ab, before)
        ab_after = np.einsum("pij,pi->pj", a_ab, after)
        bb_before = np.einsum("pij,pj->pi", a_bb, before)
        loss = scale * float(
            np.sum(after * aa_after) - 2.0 * np.sum(after * ab_before) + np.sum(before * bb_before)
        )
        grad_w = np.zeros_like(w)
        grad_w[1:] += 2.0 * scale * (aa_after - ab_before)
        grad_w[:-1] += 2.0 * scale * (bb_before - ab_after)
        grad_theta = w * (grad_w - np.sum(w * grad_w, axis=1, keepdims=True))  # softmax backward
        return loss, grad_theta.astype(theta.dtype)

    start = np.zeros((n_frames, k), dtype=np.float32)
    if fixed_first is not None:  # softmax(log w) = w for a row on the simplex
        start[0] = np.log(np.clip(fixed_first.detach().cpu().double().numpy(), 1e-30, None))
    adam = _AmsgradAdam(start, lr=settings.lr, frozen_rows=0 if fixed_first is None else 1)
    best = adam.param.copy()
    min_loss = conv_ref = 20_000.0
    since_improved = 0
    for it in range(settings.max_iters):
        loss, grad = loss_and_grad(adam.param)
        if it % settings.check_every == 1:
            if abs(min_loss - conv_ref) < settings.tolerance:
                break
            conv_ref = min_loss
        if loss < min_loss:
            min_loss = loss
            best = adam.param.copy()
            since_improved = 0
        else:
            since_improved += 1
            if since_improved >= settings.patience:
                break
        adam.step(grad)
    return torch.from_numpy(_softmax(best)).to(device=table.device, dtype=dtype)


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _AmsgradAdam:
    """Adam with amsgrad, the update of torch.optim.Adam(amsgrad=True), on a numpy array."""

    def __init__(self, param: np.ndarray, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 frozen_rows: int = 0) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.frozen_rows = frozen_rows
        self.exp_avg = np.zeros_like(param)
        self.exp_avg_sq = np.zeros_like(param)
        self.max_exp_avg_sq = np.zeros_like(param)
        self.steps = 0

    def step(self, grad: np.ndarray) -> None:
        if self.frozen_rows:
            grad = grad.copy()
            grad[: self.frozen_rows] = 0.0
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg += (1.0 - beta1) * (grad - self.exp_avg)
        self.exp_avg_sq *= beta2
        self.exp_avg_sq += (1.0 - beta2) * grad * grad
        np.maximum(self.max_exp_avg_sq, self.exp_avg_sq, out=self.max_exp_avg_sq)
        step_size = self.lr / (1.0 - beta1**self.steps)
        denom = np.sqrt(self.max_exp_avg_sq) / np.sqrt(1.0 - beta2**self.steps) + self.eps
        self.param -= (step_size * self.exp_avg / denom).astype(self.param.dtype)


def _pair_grams(
    indices: torch.Tensor, table: torch.Tensor, neighbours: Neighbours, dtype: torch.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K x K Gram matrices of the smoothness loss for each consecutive frame pair (t, t+1).

    With G_o[t] = table[neighbour o of indices[t]] (K, D), the pair's loss is
    |a G_-1[t+1] - b G_0[t]|^2 + |a G_0[t+1] - b G_+1[t]|^2 for weights a = w[t+1], b = w[t],
    i.e. a^T A_aa a - 2 a^T A_ab b + b^T A_bb b.

    Returns:
        A_aa, A_ab, A_bb: each (T-1, K, K) in `dtype`, built `GRAM_BLOCK` pairs at a time.
    """
    previous = neighbours.previous.to(indices.device)
    following = neighbours.next.to(indices.device)
    n_pairs, k = indices.shape[0] - 1, indices.shape[1]
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    grams = [np.empty((n_pairs, k, k), dtype=np_dtype) for _ in range(3)]

    def rows(frames: torch.Tensor) -> torch.Tensor:  # (P, K) pool rows -> (P, K, D) in dtype
        return table[frames].to(dtype)

    def gram(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("pid,pjd->pij", x, y)

    for start, stop in frame_blocks(n_pairs, GRAM_BLOCK):
        after, before = indices[start + 1 : stop + 1], indices[start:stop]  # frames t+1 and t
        after_prev, after_rows = rows(previous[after]), rows(after)
        before_rows, before_next = rows(before), rows(following[before])
        grams[0][start:stop] = (gram(after_prev, after_prev) + gram(after_rows, after_rows)).cpu().numpy()
        grams[1][start:stop] = (gram(after_prev, before_rows) + gram(after_rows, before_next)).cpu().numpy()
        grams[2][start:stop] = (gram(before_rows, before_rows) + gram(before_next, before_next)).cpu().numpy()
    return grams[0], grams[1], grams[2]


def weighted_sum(
    indices: torch.Tensor, weights: torch.Tensor, table: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """sum_j weights[t, j] * table[indices[t, j]], the terms added in order j = 0, 1, ...

    Written out term by term (not as a matrix product), so each frame's value does not depend on
    how many frames are computed at once.

    Args:
        indices: (T, K), weights: (T, K), table: (N, D).
        dtype: arithmetic (rows are converted as gathered); default: the dtype of `table`.

    Returns:
        (T, D) in `dtype`.
    """
    dtype = dtype or table.dtype
    weights = weights.to(dtype)
    total = weights[:, 0, None] * table[indices[:, 0]].to(dtype)
    for j in range(1, indices.shape[1]):
        total = total + weights[:, j, None] * table[indices[:, j]].to(dtype)
    return total
