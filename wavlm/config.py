"""WavLM hyper-parameters, read from the ``cfg`` dict stored in an official checkpoint."""

from __future__ import annotations

import ast
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

logger = logging.getLogger(__name__)

ConvLayerSpec = tuple[int, int, int]
"""One feature-extractor convolution: (output channels, kernel size, stride)."""

ACTIVATIONS = ("gelu", "relu")
"""Feed-forward activations this implementation supports (the released models use gelu)."""


WAVLM_LARGE_CFG: dict = {
    "extractor_mode": "layer_norm",
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
    "activation_fn": "gelu",
    "layer_norm_first": True,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "normalize": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
}
"""The `cfg` of WavLM-Large.pt (315,453,120 parameters), for building it without the file."""


@dataclass
class WavLMConfig:
    """Architecture of a WavLM model.

    Field names and defaults follow the official ``WavLMConfig`` so that the ``cfg`` dict saved in
    a released checkpoint maps onto it one to one. Training-only fields (dropout, masking) are kept
    for completeness; they have no effect in evaluation mode.
    """

    extractor_mode: str = "default"
    """``"default"``: group norm after the first convolution only; ``"layer_norm"``: layer norm
    after every convolution (WavLM-Large)."""
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    """True: pre-LN transformer blocks and a final encoder layer norm (WavLM-Large)."""
    conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    """Python-literal list of (channels, kernel, stride), as written in the checkpoints."""
    conv_bias: bool = False
    feature_grad_mult: float = 1.0
    normalize: bool = False
    """Recorded in the checkpoint; kNN-SVC feeds the raw waveform, so nothing here reads it."""

    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    dropout_features: float = 0.0

    mask_length: int = 10
    mask_prob: float = 0.65
    mask_selection: str = "static"
    mask_other: float = 0.0
    no_mask_overlap: bool = False
    mask_min_space: int = 1
    mask_channel_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_selection: str = "static"
    mask_channel_other: float = 0.0
    no_mask_channel_overlap: bool = False
    mask_channel_min_space: int = 1

    conv_pos: int = 128
    """Kernel size of the convolutional positional embedding."""
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    """Gate the relative position bias with the query (WavLM's "gated relative position bias")."""

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "WavLMConfig":
        """Build from a checkpoint's ``cfg`` dict; keys this class does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            logger.debug("ignoring WavLM cfg keys: %s", ", ".join(unknown))
        config = cls(**{key: value for key, value in cfg.items() if key in known})
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (the format stored in checkpoints)."""
        return dataclasses.asdict(self)

    @property
    def conv_layers(self) -> list[ConvLayerSpec]:
        """``conv_feature_layers`` parsed into a list of (channels, kernel, stride)."""
        return parse_conv_layers(self.conv_feature_layers)

    def validate(self) -> None:
        """Raise ``ValueError`` for a configuration this implementation cannot build."""
        if self.extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"WavLM cfg: unsupported extractor_mode {self.extractor_mode!r}")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(
                f"WavLM cfg: unsupported activation_fn {self.activation_fn!r} "
                f"(supported: {', '.join(sorted(ACTIVATIONS))})"
            )
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(
                f"WavLM cfg: encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_attention_heads {self.encoder_attention_heads}"
            )
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(
                f"WavLM cfg: encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"conv_pos_groups {self.conv_pos_groups}"
            )
        if self.encoder_layers < 1:
            raise ValueError(f"WavLM cfg: encoder_layers must be >= 1, got {self.encoder_layers}")
        parse_conv_layers(self.conv_feature_layers)



def parse_conv_layers(spec: str) -> list[ConvLayerSpec]:
    """Parse e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"`` without ``eval``.

    Only list/tuple literals of integers combined with ``+`` and ``*`` are accepted.
    """
    try:
        tree = ast.parse(spec, mode="eval")
        value = _evaluate_literal(tree.body)
    except (SyntaxError, ValueError, TypeError) as error:
        raise ValueError(f"WavLM cfg: cannot parse conv_feature_layers {spec!r}: {error}") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"WavLM cfg: conv_feature_layers {spec!r} is not a non-empty list")
    layers = []
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 3 and all(isinstance(n, int) for n in item)):
            raise ValueError(f"WavLM cfg: conv layer {item!r} is not (channels, kernel, stride)")
        layers.append(item)
    return layers


def _evaluate_literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate_literal(element) for element in node.elts)
    if isinstance(node, ast.List):
        return [_evaluate_literal(element) for element in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _evaluate_literal(node.left), _evaluate_literal(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported expression {ast.dump(node)}")
