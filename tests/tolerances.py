"""Float tolerances derived from the arithmetic, so that no test depends on the CPU it runs on.

Two float32 implementations of the same computation (oneDNN vs MKL, batched vs one by one, folded
vs unfolded weight norm) sum their products in different orders, with or without FMA, in SIMD
lanes of different widths. Their results differ by rounding only, and how much depends on the
machine. The allowances here bound that rounding from the size of the computation, never from
one machine's observed difference:

- :func:`dot_bound`: Higham's bound for one sum of products, valid for *any* summation order
  and blocking (``|fl(x.y) - x.y| <= gamma_n |x|.|y|``, gamma_n = n u / (1 - n u)).
- :func:`network_tolerance`: for a deep network, ``safety * u * sqrt(terms) * magnitude``, the
  usual statistical growth of rounding through ``terms`` accumulated products, where ``terms``
  is the total fan-in along the network (every weight's fan-in, summed).
"""

from __future__ import annotations

import math

import torch
from torch import nn

UNIT_ROUNDOFF_32 = 2.0**-24
"""u of float32: the largest relative error of one rounding."""


def dot_bound(abs_products: torch.Tensor, terms: int) -> torch.Tensor:
    """Worst-case rounding of float32 sums of ``terms`` products, elementwise.

    Args:
        abs_products: sum of |x_i| |y_i| for each result element (computed in float64).
        terms: number of products in each sum (a bias counts as one more).
    """
    n_u = terms * UNIT_ROUNDOFF_32
    return abs_products * (n_u / (1.0 - n_u)) + UNIT_ROUNDOFF_32 * abs_products


def fan_in_terms(module: nn.Module) -> int:
    """Total fan-in of the weights of `module` (products accumulated along the network)."""
    return sum(p[0].numel() for name, p in module.named_parameters() if p.dim() >= 2)


def network_tolerance(magnitude: float, terms: int, safety: float = 8.0) -> float:
    """Allowance for two float32 evaluations of one network to differ: safety * u * sqrt(terms) * magnitude."""
    return safety * UNIT_ROUNDOFF_32 * math.sqrt(terms) * max(magnitude, 1.0)
