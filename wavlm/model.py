"""WavLM: self-supervised speech model, our own implementation of the official architecture.

``WavLM(config)`` has exactly the state-dict keys of the official checkpoints (e.g. the
``WavLM-Large.pt`` used by kNN-VC / kNN-SVC, a dict ``{'cfg': dict, 'model': state_dict}``), so
``load_wavlm(torch.load(path, weights_only=True))`` loads them strictly.

The waveform is fed as is: no input normalisation, even when ``cfg.normalize`` is True (the
kNN-VC/kNN-SVC vocoders were trained on features extracted this way).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from wavlm.config import WavLMConfig
from wavlm.modules import ConvFeatureExtractor, TransformerEncoder


class WavLM(nn.Module):
    """WavLM encoder: conv feature extractor -> layer norm -> projection -> transformer.

    Inference only (no dropout, masking or layer drop). ``mask_emb`` exists only so that the
    official state dict loads strictly.
    """

    def __init__(self, config: WavLMConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        conv_layers = config.conv_layers
        conv_dim = conv_layers[-1][0]
        self.feature_extractor = ConvFeatureExtractor(conv_layers, config.extractor_mode, config.conv_bias)
        if conv_dim != config.encoder_embed_dim:
            self.post_extract_proj: nn.Linear | None = nn.Linear(conv_dim, config.encoder_embed_dim)
        else:
            self.post_extract_proj = None
        self.mask_emb = nn.Parameter(torch.zeros(config.encoder_embed_dim))
        if not self.mask_emb.is_meta:  # drawing on the meta device would import torch._dynamo (seconds)
            nn.init.uniform_(self.mask_emb)
        self.encoder = TransformerEncoder(config)
        self.layer_norm = nn.LayerNorm(conv_dim)

    @property
    def num_layers(self) -> int:
        """Transformer blocks this model holds (fewer than the config's when truncated)."""
        return len(self.encoder.layers)

    @property
    def truncated(self) -> bool:
        """Whether blocks after `num_layers` were dropped (see `truncate`)."""
        return self.num_layers < self.config.encoder_layers

    def truncate(self, num_layers: int) -> WavLM:
        """Keep only the first `num_layers` blocks (enough for ``output_layer <= num_layers``).

        The dropped blocks' weights are released, so a model loaded from a memory-mapped
        checkpoint never reads them from disk. Returns self.
        """
        if not 0 <= num_layers <= self.num_layers:
            raise ValueError(f"num_layers must be in 0..{self.num_layers}, got {num_layers}")
        self.encoder.layers = self.encoder.layers[:num_layers]
        return self

    @property
    def dim(self) -> int:
        return self.config.encoder_embed_dim

    @property
    def frame_hop(self) -> int:
        """Samples between consecutive frames of the convolutional front end (320)."""
        return math.prod(stride for _, _, stride in self.config.conv_layers)

    @property
    def frame_samples(self) -> int:
        """Samples one front-end frame reads (400: frame t covers samples t hop .. t hop + 399)."""
        span, hop = 1, 1
        for _, kernel, stride in self.config.conv_layers:
            span += (kernel - 1) * hop
            hop *= stride
        return span

    @property
    def frame_local_front_end(self) -> bool:
        """Whether a front-end frame depends only on its `frame_samples` samples.

        True with ``extractor_mode="layer_norm"`` (WavLM-Large: every layer normalises each frame
        over its channels); False in ``"default"`` mode, whose first layer's group norm normalises
        each channel over the whole input.
        """
        return self.config.extractor_mode == "layer_norm"

    def front_end(self, wav: Tensor) -> Tensor:
        """The convolutional front end alone: (B, L) waveforms -> (B, T, C) frames, T as in
        `extract_features` (no input normalisation, no layer norm yet)."""
        if wav.dim() != 2:
            raise ValueError(f"WavLM expects a (batch, samples) waveform, got shape {tuple(wav.shape)}")
        return self.feature_extractor(wav)

    def extract_features(self, wav: Tensor, output_layer: int | None = None,
                         ret_layer_results: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Encode raw 16 kHz waveforms.

        Args:
            wav: (B, L) waveforms, not normalised.
            output_layer: stop after this many transformer blocks (0 = transformer input) and
                return that block's output without the final encoder layer norm. None runs every
                block and applies the final layer norm.
            ret_layer_results: also return the hidden states.

        Returns:
            ``(x, hidden_states)``: x (B, T, D) with T = floor((L - 400) / 320) + 1 for the
            standard front end; hidden_states is a list of (B, T, D), index 0 = transformer input,
            index i = output of block i (empty unless ``ret_layer_results``).
        """
        self._check_output_layer(output_layer)  # before the front end's work
        return self.encode_front_end(self.front_end(wav), output_layer, ret_layer_results)

    def _check_output_layer(self, output_layer: int | None) -> None:
        if output_layer is not None and not 0 <= output_layer <= self.num_layers:
            raise ValueError(f"output_layer must be in 0..{self.num_layers}, got {output_layer}")
        if output_layer is None and self.truncated:
            raise ValueError(f"this model keeps only {self.num_layers} blocks: pass output_layer <= {self.num_layers}")

    def encode_front_end(self, frames: Tensor, output_layer: int | None = None,
                         ret_layer_results: bool = False) -> tuple[Tensor, list[Tensor]]:
        """The rest of `extract_features` from the front end's (B, T, C) frames (see `front_end`):
        layer norm, projection, transformer. Same arguments and results as `extract_features`."""
        self._check_output_layer(output_layer)
        features = self.layer_norm(frames)  # (B, T, C)
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        hidden_states: list[Tensor] | None = [] if ret_layer_results else None
        x = self.encoder(features, num_layers=output_layer, hidden_states=hidden_states)
        return x, hidden_states or []

    def forward(self, wav: Tensor, output_layer: int | None = None) -> Tensor:
        """(B, L) -> (B, T, D); see ``extract_features``."""
        return self.extract_features(wav, output_layer=output_layer)[0]


def load_wavlm(checkpoint: Mapping[str, Any], num_layers: int | None = None) -> WavLM:
    """Build a WavLM from an official checkpoint dict and load its weights strictly.

    The model is built on the meta device (no random initialisation) and takes the checkpoint's
    tensors themselves (``assign=True``): with a memory-mapped checkpoint nothing is copied, and
    with `num_layers` the blocks after it are never touched.

    Args:
        checkpoint: ``{'cfg': dict, 'model': state_dict}``, e.g.
            ``torch.load("WavLM-Large.pt", map_location="cpu", weights_only=True, mmap=True)``.
        num_layers: keep only the first blocks (every key is still checked strictly).

    Returns:
        The model in eval mode, holding the checkpoint tensors themselves (no copy; floating
        tensors are converted to float32), so on their device.

    Raises:
        ValueError: the dict is not a WavLM checkpoint, or its weights do not fit its ``cfg``.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"not a WavLM checkpoint: expected a dict, got {type(checkpoint).__name__}")
    if "cfg" not in checkpoint or "model" not in checkpoint:
        found = ", ".join(repr(key) for key in list(checkpoint)[:8]) or "nothing"
        hint = " (this looks like a HiFi-GAN vocoder checkpoint)" if "generator" in checkpoint else ""
        raise ValueError(f"not a WavLM checkpoint: expected keys 'cfg' and 'model', found {found}{hint}")
    cfg, state_dict = checkpoint["cfg"], checkpoint["model"]
    if not isinstance(cfg, Mapping) or not isinstance(state_dict, Mapping):
        raise ValueError("not a WavLM checkpoint: 'cfg' and 'model' must both be dicts")
    config = WavLMConfig.from_dict(cfg)

    with torch.device("meta"):
        model = WavLM(config)
    state_dict = {
        key: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
        for key, value in state_dict.items()
    }
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        expected, given = set(model.state_dict()), set(state_dict)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        detail = "; ".join(
            part for part in (
                f"missing {len(missing)} keys, e.g. {missing[:3]}" if missing else "",
                f"unexpected {len(unexpected)} keys, e.g. {unexpected[:3]}" if unexpected else "",
            ) if part
        ) or str(error).splitlines()[-1].strip()
        raise ValueError(f"WavLM checkpoint weights do not match its cfg: {detail}") from None
    if num_layers is not None:
        model.truncate(num_layers)
    return model.eval()
