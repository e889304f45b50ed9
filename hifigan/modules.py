"""Building blocks of the HiFi-GAN generators: weight-normalised convolutions and residual blocks.

Weight norm is implemented directly (W = g * v / ||v||, norm over every dim but 0) with parameters
named ``weight_g`` and ``weight_v``, so ``state_dict()`` emits exactly the legacy keys of the
official checkpoints and loads them strictly, without the deprecated ``torch.nn.utils.weight_norm``
or state-dict hooks. :meth:`fold_weight_norm` replaces the pair by a plain ``weight`` for inference,
as the official ``remove_weight_norm`` does (the key names change accordingly).

Shape letters: B batch, C channels, L samples.
"""

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

LRELU_SLOPE = 0.1
"""Leaky-ReLU slope inside the generators (the final activation uses PyTorch's default 0.01)."""


def _norm_except_dim0(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm over every dim but 0, kept as (C0, 1, ..., 1)."""
    return torch.linalg.vector_norm(weight, dim=tuple(range(1, weight.dim())), keepdim=True)


class WeightNormMixin:
    """Mixin turning a conv module's ``weight`` into the pair ``weight_g`` (C0,1,1), ``weight_v``."""

    # provided by the conv module it is mixed into
    _parameters: dict[str, nn.Parameter | None]
    weight: torch.Tensor
    weight_g: nn.Parameter
    weight_v: nn.Parameter

    def _split_weight(self) -> None:
        weight = self.weight.detach()
        del self._parameters["weight"]
        if weight.is_meta:  # built to take a checkpoint's tensors: only the shape matters (and a norm
            # on the meta device would import torch._dynamo, seconds of start-up)
            self.weight_g = nn.Parameter(torch.empty(weight.shape[:1] + (1,) * (weight.dim() - 1), device="meta"))
        else:
            self.weight_g = nn.Parameter(_norm_except_dim0(weight))
        self.weight_v = nn.Parameter(weight.clone())

    @property
    def is_weight_normed(self) -> bool:
        """True until :meth:`fold_weight_norm` has been called."""
        return "weight_v" in self._parameters

    def effective_weight(self) -> torch.Tensor:
        """The convolution kernel actually applied: g * v / ||v|| (or the folded weight)."""
        if self.is_weight_normed:
            return self.weight_v * (self.weight_g / _norm_except_dim0(self.weight_v))
        return self.weight

    def fold_weight_norm(self) -> None:
        """Replace ``weight_g``/``weight_v`` by a single ``weight`` parameter (same output)."""
        if not self.is_weight_normed:
            return
        weight = self.effective_weight().detach()
        del self._parameters["weight_g"]
        del self._parameters["weight_v"]
        self.weight = nn.Parameter(weight)


class WNConv1d(WeightNormMixin, nn.Conv1d):
    """``nn.Conv1d`` with legacy-format weight norm over the output channels (dim 0)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, L) -> (B, C_out, L')."""
        return self._conv_forward(x, self.effective_weight(), self.bias)


class WNConvTranspose1d(WeightNormMixin, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with legacy-format weight norm over dim 0 (= input channels)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """(B, C_in, L) -> (B, C_out, L'); `output_size` picks L' as in ``nn.ConvTranspose1d``."""
        assert isinstance(self.padding, tuple)  # a transposed conv has no string padding
        output_padding = self._output_padding(
            x, output_size, list(self.stride), list(self.padding), list(self.kernel_size), 1, list(self.dilation)
        )
        return F.conv_transpose1d(
            x,
            self.effective_weight(),
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )


class WNConv2d(WeightNormMixin, nn.Conv2d):
    """``nn.Conv2d`` with legacy-format weight norm over the output channels (dim 0)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        return self._conv_forward(x, self.effective_weight(), self.bias)


def fold_weight_norm(module: nn.Module) -> None:
    """Fold the weight norm of every weight-normalised conv inside ``module`` (in place)."""
    for child in module.modules():
        if isinstance(child, WeightNormMixin):
            child.fold_weight_norm()


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the length of a stride-1 convolution with an odd kernel."""
    return dilation * (kernel_size - 1) // 2


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type "1": per dilation d, x <- x + c2(lrelu(c1_d(lrelu(x)))).

    Keys ``convs1.{j}`` (dilation d_j) and ``convs2.{j}`` (dilation 1), all weight-normalised.
    """

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, padding=same_padding(kernel_size)) for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, C, L)."""
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            residual = conv1(F.leaky_relu(x, LRELU_SLOPE))
            x = x + conv2(F.leaky_relu(residual, LRELU_SLOPE))
        return x


class DownResBlock(nn.Module):
    """Single-conv residual block of the excitation branch ("ResBlock3" in the spec).

    x <- x + conv(lrelu(x)) with one weight-normalised kernel-3 conv under the key ``convs.0``.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList([WNConv1d(channels, channels, kernel_size, padding=same_padding(kernel_size))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, C, L)."""
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


def multi_receptive_field(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Multi-receptive-field fusion: mean of ``blocks`` (B, C, L) -> (B, C, L) applied to ``x``."""
    out = blocks[0](x)
    for block in blocks[1:]:
        out = out + block(x)
    return out / len(blocks)


TILE_FLOATS = 2**20
"""Floats of one (C, L) activation (4 MiB) above which `in_time_tiles` splits a CPU stage in time."""


def in_time_tiles(fn: Callable[..., torch.Tensor], reach: int, *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)`` for (B, C_i, L) tensors, computed tile by tile along L on the CPU.

    `fn` must map length L to length L, each output sample depending on at most `reach` samples on
    either side (zero padding at the ends, as convolutions with "same" padding do). A long input is
    cut into tiles of about `TILE_FLOATS` / C samples, each run with `reach` extra samples on both
    sides that are then dropped, so a stage's intermediates stay in the CPU's cache instead of
    going through memory once per layer: a 30 s block vocodes about 1.6x faster on the CPU. The
    result is bit-identical to the untiled call (the convolutions compute each sample the same
    way; tested). Untiled on other devices, under autograd and while tracing or compiling (an
    exported graph keeps its dynamic length).
    """
    if (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
            or torch.is_grad_enabled() or xs[0].device.type != "cpu"):
        return fn(*xs)
    length, channels = xs[0].shape[-1], xs[0].shape[1]
    tile = max(1024, TILE_FLOATS // channels)
    if length <= tile + tile // 2:
        return fn(*xs)
    tiles = []
    for start in range(0, length, tile):
        stop = min(length, start + tile)
        lo, hi = max(0, start - reach), min(length, stop + reach)
        tiles.append(fn(*(x[..., lo:hi] for x in xs))[..., start - lo : stop - lo])
    return torch.cat(tiles, dim=-1)
