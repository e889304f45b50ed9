"""Fast CPU paths for the two operations that dominate WavLM inference, with exact fallbacks.

On CPUs where MKL's SGEMM does not use AVX-512 (e.g. AMD Zen), oneDNN's matmul and direct
convolution run about twice as fast; PyTorch reaches oneDNN for float32 only through these
routes. Results agree with ``F.linear``/``F.conv1d`` up to float32 rounding.

Shape letters: B batch, T frames, C channels, N rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
"""Route float32 CPU inference matmuls through oneDNN; set False to use ``F.linear`` everywhere."""


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``: (..., D_in) -> (..., D_out).

    Uses oneDNN's inner product for float32 CPU tensors when no gradient is needed (the oneDNN
    op has no autograd formula).
    """
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if (ONEDNN_LINEAR and not needs_grad and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def conv1d_channels_last(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """Unpadded strided conv of a (B, T, C_in) tensor -> (B, T_out, C_out), no transposes.

    The (B, T, C) memory is a channels-last (B, C, 1, T) image, which oneDNN convolves directly
    and returns in the same layout.
    """
    image = x.transpose(1, 2).unsqueeze(2)  # (B, C_in, 1, T), channels-last strides
    y = F.conv2d(image, weight.unsqueeze(2), bias, stride=(1, stride))  # (B, C_out, 1, T_out)
    return y.squeeze(2).transpose(1, 2)
