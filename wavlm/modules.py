"""Building blocks of WavLM: convolutional front end, positional convolution, transformer blocks.

Attribute names mirror the official state-dict keys (``conv_layers.{i}.0``, ``pos_conv.0``,
``self_attn.grep_linear`` ...), so official checkpoints load strictly. Only inference behaviour is
implemented: no dropout, no masking, no layer drop.

Shape letters: B batch, L samples, C channels, T frames, D model dim, H heads, E head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavlm import ops
from wavlm.config import ConvLayerSpec, WavLMConfig


class Fp32LayerNorm(nn.LayerNorm):
    """Layer norm over the last axis computed in float32 (the official ``Fp32LayerNorm``)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).type_as(x)


class ChannelNorm(nn.Module):
    """Holder of the channel norm of a feature-extractor layer, at index 1 (``.2.1.weight``).

    Mirrors the official ``Sequential(TransposeLast, Fp32LayerNorm, TransposeLast)``; as our
    feature extractor works on (B, T, C) tensors, no transposes are needed.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.add_module("1", Fp32LayerNorm(channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        return getattr(self, "1")(x)


class PerChannelGroupNorm(nn.GroupNorm):
    """Group norm with one group per channel, in float32 (the official ``Fp32GroupNorm``):
    each channel is normalised over time."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        y = F.group_norm(x.transpose(1, 2).float(), self.num_groups, self.weight, self.bias, self.eps)
        return y.type_as(x).transpose(1, 2)


class ConvBlock(nn.Module):
    """One feature-extractor layer: strided conv (no padding), optional norm, GELU.

    Children are registered at the official indices (``0`` conv, ``2`` norm). Tensors stay in the
    (B, T, C) layout that the layer norms need, so no transposed copies are made.
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int, conv_bias: bool,
                 norm: nn.Module | None) -> None:
        super().__init__()
        self.add_module("0", nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=conv_bias))
        if norm is not None:
            self.add_module("2", norm)
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """(B, T_in, C_in) -> (B, T_out, C_out), T_out = (T_in - kernel) // stride + 1."""
        conv = getattr(self, "0")
        if conv.in_channels == 1:
            # the windows of a waveform are a strided view: one small matrix product
            windows = x.squeeze(2).unfold(1, self.kernel, self.stride)  # (B, T_out, kernel)
            x = ops.linear(windows, conv.weight.squeeze(1), conv.bias)
        else:
            x = ops.conv1d_channels_last(x, conv.weight, conv.bias, self.stride)
        norm = getattr(self, "2", None)
        if norm is not None:
            x = norm(x)
        return F.gelu(x)


class ConvFeatureExtractor(nn.Module):
    """Strided 1-D convolutions turning a waveform (B, L) into frames (B, T, C).

    In ``"layer_norm"`` mode every layer has a channel layer norm; in ``"default"`` mode only
    layer 0 has a (per-channel) group norm.
    """

    def __init__(self, layers: list[ConvLayerSpec], mode: str, conv_bias: bool) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(layers):
            norm: nn.Module | None
            if mode == "layer_norm":
                norm = ChannelNorm(channels)
            elif index == 0:
                norm = PerChannelGroupNorm(channels, channels)
            else:
                norm = None
            self.conv_layers.append(ConvBlock(in_channels, channels, kernel, stride, conv_bias, norm))
            in_channels = channels

    def forward(self, wav: Tensor) -> Tensor:
        """(B, L) -> (B, T, C)."""
        x = wav.unsqueeze(-1)
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is stored as legacy weight-norm ``weight_g``/``weight_v`` (norm over dim 2).

    ``weight = weight_g * weight_v / ||weight_v||``, the norm taken over every axis except the
    kernel axis, exactly what ``torch.nn.utils.weight_norm(conv, dim=2)`` computes.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        self._folded: tuple[tuple, Tensor] | None = None  # (parameter versions, weight), see `_current_weight`
        if not self.weight_v.is_meta:  # built on the meta device to take a checkpoint's tensors: nothing to draw
            std = math.sqrt(4.0 / (kernel_size * channels))
            nn.init.normal_(self.weight_v, mean=0.0, std=std)
            with torch.no_grad():
                self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))

    @property
    def weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self._current_weight(), self.bias, padding=self.padding, groups=self.groups)

    def _current_weight(self) -> Tensor:
        """`weight`; without autograd, computed once and kept until ``weight_g`` or ``weight_v``
        changes (in place, as loading does, or by moving): the norm over the 8.4M weights of
        WavLM-Large cost 30 ms per call, a fifth of a streaming step's WavLM window. The same
        arithmetic, so the same values."""
        if (torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
                or torch.jit.is_tracing()):
            return self.weight
        key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in (self.weight_g, self.weight_v))
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, self.weight.detach())
        return self._folded[1]


class PositionalConv(nn.Module):
    """Convolutional relative positional embedding: grouped conv, "same" trim, GELU.

    Keys ``pos_conv.0.{weight_g,weight_v,bias}``. With an even kernel the padded convolution yields
    one frame too many; the last frame is dropped.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.add_module("0", WeightNormConv1d(channels, kernel_size, groups))
        self.trim = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D) positional term (to be added to x)."""
        y = getattr(self, "0")(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, : -self.trim]
        return F.gelu(y).transpose(1, 2)


def relative_position_buckets(num_frames: int, num_buckets: int, max_distance: int,
                              device: torch.device | None = None) -> Tensor:
    """Bidirectional T5-style bucket index of every (query, key) offset: (T, T) long.

    Half of the buckets hold keys after the query, half keys before it. Within a half, the first
    ``num_buckets // 4`` distances get a bucket each; larger distances share log-spaced buckets up
    to ``max_distance``, beyond which all fall into the last bucket.
    """
    positions = torch.arange(num_frames, dtype=torch.long, device=device)
    offset = positions[None, :] - positions[:, None]  # key - query
    half = num_buckets // 2
    buckets = (offset > 0).to(torch.long) * half
    distance = offset.abs()
    max_exact = half // 2
    # float32 arithmetic in this exact order: bucket boundaries must match the released models
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).to(torch.long)
    large = large.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class Linear(nn.Linear):
    """``nn.Linear`` computed with ``ops.linear`` (oneDNN fast path on CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.linear(x, self.weight, self.bias)


def _embedding(num: int, dim: int) -> nn.Embedding:
    """``nn.Embedding(num, dim)`` with its N(0, 1) initialisation, skipped on the meta device (where
    a model is built to take a checkpoint's tensors): drawing there would import torch._dynamo,
    seconds of start-up for nothing."""
    embedding = nn.Embedding(num, dim, _weight=torch.empty(num, dim))
    if not embedding.weight.is_meta:
        nn.init.normal_(embedding.weight)
    return embedding


class SelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias.

    The bucket embedding ``relative_attention_bias`` lives in block 0 only; the bias it gives,
    (1, H, T, T), is shared by every block. Each block gates it per head and query frame with
    ``grep_linear``/``grep_a`` before adding it to the attention logits.
    """

    def __init__(self, config: WavLMConfig, has_relative_attention_bias: bool) -> None:
        super().__init__()
        dim, heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.num_heads = heads
        self.head_dim = dim // heads
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_distance
        if has_relative_attention_bias:
            self.relative_attention_bias: nn.Embedding | None = _embedding(config.num_buckets, heads)
        else:
            self.relative_attention_bias = None
        self.k_proj = Linear(dim, dim)
        self.v_proj = Linear(dim, dim)
        self.q_proj = Linear(dim, dim)
        self.out_proj = Linear(dim, dim)
        if config.gru_rel_pos:
            self.grep_linear: Linear | None = Linear(self.head_dim, 8)
            self.grep_a: nn.Parameter | None = nn.Parameter(torch.ones(1, heads, 1, 1))
        else:
            self.grep_linear = None
            self.grep_a = None

    def position_bias(self, num_frames: int) -> Tensor:
        """Bias of every (head, query, key): (1, H, T, T). Only for the block owning the embedding."""
        assert self.relative_attention_bias is not None, "only the block owning the embedding has the bias"
        table = self.relative_attention_bias.weight  # (num_buckets, H)
        buckets = relative_position_buckets(num_frames, self.num_buckets, self.max_distance, device=table.device)
        bias = table.t().contiguous().index_select(1, buckets.flatten())  # (H, T * T)
        return bias.view(1, -1, num_frames, num_frames)

    def forward(self, x: Tensor, position_bias: Tensor | None, bias_buffer: Tensor | None = None) -> Tensor:
        """Attend.

        Args:
            x: (B, T, D) block input (after the block's layer norm in pre-LN models).
            position_bias: (1, H, T, T) shared relative position bias, or None.
            bias_buffer: optional (B, H, T, T) scratch tensor that receives the gated bias
                (reusing one buffer across blocks saves a large allocation per block).

        Returns:
            (B, T, D).
        """
        batch, frames, dim = x.shape

        def split_heads(y: Tensor) -> Tensor:  # (B, T, D) -> (B, H, T, E)
            return y.view(batch, frames, self.num_heads, self.head_dim).transpose(1, 2)

        q = split_heads(self.q_proj(x))
        k = split_heads(self.k_proj(x))
        v = split_heads(self.v_proj(x))

        attn_bias = position_bias
        if position_bias is not None and self.grep_linear is not None and self.grep_a is not None:
            # the gate reads the block input split into heads, not the projected query
            gates = self.grep_linear(split_heads(x)).view(batch, self.num_heads, frames, 2, 4).sum(-1)
            gate_a, gate_b = torch.sigmoid(gates).unbind(-1)  # (B, H, T) each
            gate = (gate_a * (gate_b * self.grep_a.view(1, -1, 1) - 1.0) + 2.0).unsqueeze(-1)
            if bias_buffer is not None and not torch.is_grad_enabled():
                attn_bias = torch.mul(gate, position_bias, out=bias_buffer)
            else:
                attn_bias = gate * position_bias  # (B, H, T, T)
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)

        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (B, H, T, E)
        return self.out_proj(y.transpose(1, 2).reshape(batch, frames, dim))


class TransformerBlock(nn.Module):
    """Self-attention + feed-forward block, pre-LN (``layer_norm_first``) or post-LN."""

    def __init__(self, config: WavLMConfig, has_relative_attention_bias: bool) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.self_attn = SelfAttention(config, has_relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = F.gelu if config.activation_fn == "gelu" else F.relu

    def forward(self, x: Tensor, position_bias: Tensor | None, bias_buffer: Tensor | None = None) -> Tensor:
        """(B, T, D) -> (B, T, D); see ``SelfAttention.forward`` for the bias arguments."""
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), position_bias, bias_buffer)
            x = x + self.fc2(self.activation(self.fc1(self.final_layer_norm(x))))
        else:
            x = self.self_attn_layer_norm(x + self.self_attn(x, position_bias, bias_buffer))
            x = self.final_layer_norm(x + self.fc2(self.activation(self.fc1(x))))
        return x


class TransformerEncoder(nn.Module):
    """Positional convolution followed by the transformer blocks."""

    def __init__(self, config: WavLMConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.gated_bias = config.relative_position_embedding and config.gru_rel_pos
        self.num_heads = config.encoder_attention_heads
        self.pos_conv = PositionalConv(dim, config.conv_pos, config.conv_pos_groups)
        self.layers = nn.ModuleList(
            TransformerBlock(config, has_relative_attention_bias=config.relative_position_embedding and i == 0)
            for i in range(config.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, num_layers: int | None = None,
                hidden_states: list[Tensor] | None = None) -> Tensor:
        """Run the encoder on (B, T, D) frames.

        Args:
            x: projected conv features (B, T, D).
            num_layers: run only the first ``num_layers`` blocks and skip the final layer norm;
                None runs every block and applies the final layer norm (pre-LN models).
            hidden_states: if a list is given, the transformer input and each executed block's
                output (B, T, D) are appended to it.

        Returns:
            (B, T, D).
        """
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        blocks = self.layers[: len(self.layers) if num_layers is None else num_layers]
        position_bias = bias_buffer = None
        first_attention = blocks[0].self_attn if len(blocks) else None
        if isinstance(first_attention, SelfAttention) and first_attention.relative_attention_bias is not None:
            batch, frames, _ = x.shape
            position_bias = first_attention.position_bias(frames).to(x.dtype)
            if self.gated_bias:
                bias_buffer = x.new_empty(batch, self.num_heads, frames, frames)
        for block in blocks:
            x = block(x, position_bias, bias_buffer)
            if hidden_states is not None:
                hidden_states.append(x)
        if num_layers is None and self.layer_norm_first:
            x = self.layer_norm(x)
        return x
