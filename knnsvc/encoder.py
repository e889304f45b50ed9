"""WavLM feature extraction as kNN-SVC does it: 30 s chunks, padding, layer selection, early exit.

Spec §3.4: the waveform is cut into consecutive chunks of ``chunk_seconds`` (480 000 samples);
a final chunk of at most 320 samples is dropped; each chunk is right-padded with
``320 - len % 320`` zeros (always 1..320) and encoded independently, yielding
``len // 320`` frames; the chunks' frames are concatenated. The features are the output of
transformer block ``layer`` (6), without the final encoder layer norm. Only ``layer`` blocks run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from knnsvc.config import HOP_LENGTH, SAMPLE_RATE, WAVLM_LAYER
from knnsvc.runtime import check_network_precision, network_autocast
from wavlm import WavLM


class WavLMEncoder(nn.Module):
    """Frame-level WavLM features of a 16 kHz waveform, 50 frames per second.

    Args:
        wavlm: the WavLM model (e.g. from ``wavlm.load_wavlm``); its device is used.
        layer: transformer block whose output is returned (0 = transformer input).
        chunk_seconds: length of the independently encoded chunks.
        max_batch_chunks: how many full-length chunks are encoded in one forward pass; None
            picks 4 on CUDA and 1 elsewhere (batching does not speed up CPU inference). Results do
            not depend on it (up to float rounding); memory does: about 0.6 GB per 30 s chunk for
            WavLM-Large to layer 6.
        precision: the precision WavLM runs in (`knnsvc.runtime.NETWORK_PRECISIONS`): float32, or
            bfloat16/float16 under autocast; features are returned in float32 either way.
    """

    def __init__(self, wavlm: WavLM, layer: int = WAVLM_LAYER, chunk_seconds: float = 30.0,
                 max_batch_chunks: int | None = None, precision: str = "float32") -> None:
        super().__init__()
        if not 0 <= layer <= wavlm.num_layers:
            raise ValueError(f"layer must be in 0..{wavlm.num_layers}, got {layer}")
        chunk_samples = round(chunk_seconds * SAMPLE_RATE)
        if chunk_samples <= HOP_LENGTH:
            raise ValueError(f"chunk_seconds must be longer than one hop (0.02 s), got {chunk_seconds}")
        if max_batch_chunks is not None and max_batch_chunks < 1:
            raise ValueError(f"max_batch_chunks must be >= 1, got {max_batch_chunks}")
        self.wavlm = wavlm.eval()
        self.layer = layer
        self.chunk_samples = chunk_samples
        self.max_batch_chunks = max_batch_chunks
        self.precision = check_network_precision(precision)

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self.wavlm.dim

    @property
    def device(self) -> torch.device:
        """Device of the WavLM weights (where features are computed and returned)."""
        return next(self.wavlm.parameters()).device

    def chunk_lengths(self, num_samples: int) -> list[int]:
        """Lengths of the chunks that are encoded (a tail of <= 320 samples is dropped)."""
        lengths = []
        for start in range(0, num_samples, self.chunk_samples):
            length = min(self.chunk_samples, num_samples - start)
            if length <= HOP_LENGTH:
                break
            lengths.append(length)
        return lengths

    def num_frames(self, num_samples: int) -> int:
        """Frames T produced for a waveform of ``num_samples`` samples."""
        return sum(length // HOP_LENGTH for length in self.chunk_lengths(num_samples))

    @torch.inference_mode()
    def forward(self, wav_16k: Tensor) -> Tensor:
        """(L,) waveform -> (T, D) float32 features of block ``layer`` on the model's device."""
        return self._encode(wav_16k, all_layers=False)[0]

    @torch.inference_mode()
    def hidden_states(self, wav_16k: Tensor) -> Tensor:
        """(L,) waveform -> (layer + 1, T, D) float32; index 0 = transformer input."""
        return self._encode(wav_16k, all_layers=True)

    def chunks(self, wav_16k: Tensor) -> Iterator[Tensor]:
        """The features chunk by chunk, in order: (T_c, D) float32 each (memory: one batch).

        Concatenated, they are exactly ``forward(wav_16k)``.
        """
        for states in self._encode_chunks(wav_16k, all_layers=False):
            yield states[0]

    def chunks_with_matching(self, wav_16k: Tensor, match_layers: Sequence[int]) -> Iterator[tuple[Tensor, Tensor]]:
        """Per chunk, the features of ``layer`` and the mean of `match_layers`' hidden states.

        One WavLM pass, as deep as the deepest layer asked for (the model must hold it).

        Yields:
            ((T_c, D), (T_c, D)) float32: synthesis features, matching features.
        """
        depth = max(self.layer, *match_layers)
        if depth > self.wavlm.num_layers:
            raise ValueError(f"matching layer {depth} is deeper than the {self.wavlm.num_layers} blocks loaded")
        rows = list(match_layers)
        for states in self._encode_chunks(wav_16k, all_layers=True, depth=depth):
            yield states[self.layer], states[rows].mean(dim=0)

    @property
    def frame_local(self) -> bool:
        """Whether a front-end frame depends only on its own 400 samples (`WavLM.frame_local_front_end`),
        so `encode_window` can take the frames of a window's start from an earlier window."""
        return self.wavlm.frame_local_front_end

    @torch.inference_mode()
    def encode_window(
        self, wav_16k: Tensor, front_prefix: Tensor | None = None, match_layers: Sequence[int] = ()
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Encode one window of at most one chunk, as `forward` does, reusing front-end frames.

        The window is padded as a chunk (``320 - L % 320`` zeros). With a frame-local front end
        (`frame_local`), its first P frames can be given as `front_prefix`: frames that an earlier
        window computed from the same 400 samples each. Only the samples from 320 P on then go
        through the front end; the transformer runs on the whole window. The result is what
        `forward` (and `chunks_with_matching`) return, up to float rounding.

        Args:
            wav_16k: (L,) with 320 < L <= chunk_samples.
            front_prefix: (P, C) front-end frames 0..P-1 of this window, P <= L // 320; None: none.
            match_layers: also return the mean of these layers' hidden states.

        Returns:
            ((T, C) front-end frames of the window, (T, D) float32 features of ``layer``,
            (T, D) float32 matching features or None), T = L // 320, on the model's device.

        Raises:
            ValueError: the window is not one chunk, a prefix with a front end that is not frame-local,
                or a prefix longer than the window.
        """
        if wav_16k.dim() != 1 or not HOP_LENGTH < wav_16k.numel() <= self.chunk_samples:
            raise ValueError(f"encode_window takes one chunk of 321..{self.chunk_samples} samples, "
                             f"got shape {tuple(wav_16k.shape)}")
        num_frames = wav_16k.numel() // HOP_LENGTH
        reused = 0 if front_prefix is None else front_prefix.shape[0]
        if reused and not self.frame_local:
            raise ValueError("front-end frames can be reused only with a frame-local front end (layer_norm mode)")
        if reused > num_frames:
            raise ValueError(f"front_prefix holds {reused} frames, the window has {num_frames}")
        depth = max(self.layer, *match_layers) if match_layers else self.layer
        if depth > self.wavlm.num_layers:
            raise ValueError(f"matching layer {depth} is deeper than the {self.wavlm.num_layers} blocks loaded")
        dtype = next(self.wavlm.parameters()).dtype
        wav = F.pad(wav_16k.to(device=self.device, dtype=dtype), (0, HOP_LENGTH - wav_16k.numel() % HOP_LENGTH))
        with network_autocast(self.device, self.precision):
            if front_prefix is not None and reused == num_frames:
                front = front_prefix.to(device=self.device, dtype=dtype)
            else:
                front = self.wavlm.front_end(wav[reused * HOP_LENGTH :][None])[0]  # (T - P, C)
                if front_prefix is not None and reused:
                    front = torch.cat([front_prefix.to(device=front.device, dtype=front.dtype), front])
            x, states = self.wavlm.encode_front_end(front[None], output_layer=depth,
                                                    ret_layer_results=bool(match_layers))
        if not match_layers:
            return front, x[0].float(), None
        matching = torch.stack([states[i][0] for i in match_layers]).float().mean(dim=0)
        return front, states[self.layer][0].float(), matching

    def _encode(self, wav_16k: Tensor, all_layers: bool) -> Tensor:
        """(L,) -> (S, T, D) with S = layer + 1 if ``all_layers`` else 1."""
        outputs = list(self._encode_chunks(wav_16k, all_layers))
        if not outputs:
            num_states = self.layer + 1 if all_layers else 1
            return torch.zeros(num_states, 0, self.dim, device=self.device)
        return torch.cat(outputs, dim=1)

    def _encode_chunks(self, wav_16k: Tensor, all_layers: bool, depth: int | None = None) -> Iterator[Tensor]:
        """(L,) -> one (S, T_c, D) float32 tensor per chunk, S = depth + 1 if ``all_layers`` else 1
        (depth: ``layer`` unless given)."""
        depth = self.layer if depth is None else depth
        if wav_16k.dim() != 1:
            raise ValueError(f"expected a mono waveform of shape (L,), got {tuple(wav_16k.shape)}")
        dtype = next(self.wavlm.parameters()).dtype
        wav_16k = wav_16k.to(device=self.device, dtype=dtype)
        lengths = self.chunk_lengths(wav_16k.numel())
        max_batch = self.max_batch_chunks or (4 if self.device.type == "cuda" else 1)
        start = 0
        index = 0
        while index < len(lengths):
            length = lengths[index]
            # a batch of consecutive chunks of equal length (all but possibly the last chunk)
            count = 1
            while (count < max_batch and index + count < len(lengths)
                   and lengths[index + count] == length):
                count += 1
            chunks = wav_16k[start: start + count * length].view(count, length)
            chunks = F.pad(chunks, (0, HOP_LENGTH - length % HOP_LENGTH))
            # per batch: the caller's code between chunks runs outside inference mode and autocast
            with torch.inference_mode(), network_autocast(self.device, self.precision):
                x, states = self.wavlm.extract_features(chunks, output_layer=depth, ret_layer_results=all_layers)
                batch = torch.stack(states, dim=1) if all_layers else x.unsqueeze(1)  # (count, S, T_c, D)
                batch = batch.float()
            start += count * length
            index += count
            yield from batch.unbind(0)
