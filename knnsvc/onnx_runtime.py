"""The ONNX Runtime backend: exported graphs (`knnsvc.onnx_export`) as the converter's encoder and vocoder.

`OnnxEncoder` and `OnnxVocoder` answer every call the drivers make on ``converter.encoder`` and
``converter.vocoder`` (`knnsvc.pipeline`, `knnsvc.blocks`, `knnsvc.streaming`), so the same
blocks, F0, matching and output code runs with either backend:

- `OnnxEncoder` cuts the waveform into the same 30 s chunks as `knnsvc.encoder.WavLMEncoder`
  (spec §3.4: a last chunk of at most 320 samples dropped, each right-padded with 1..320 zeros) and
  runs the graph on each; its `encoder_id` is the PyTorch encoder's, read from the sidecar, so
  pools cached with either backend serve both.
- `OnnxVocoder` computes the excitation in torch with the same functions as the PyTorch
  generators (additive synthesis or the f0 sinusoid at the vocoder's rate, the phase carried from
  `start_cycles`; for Vocos also its spectrum and the inverse STFT) and runs the network in ONNX
  Runtime.

Both run on the CPU (ONNX Runtime's CPU provider) and take and return torch tensors.

Shape letters: B batch, T frames, D feature dim, H harmonics, L samples, S exported layers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from hifigan.config import HiFiGANConfig
from hifigan.excitation import additive_synth, sine_excitation
from hifigan.generator import VocoderKind, as_frames, check_feats
from knnsvc.checkpoints import CheckpointError
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE, WAVLM_LAYER
from knnsvc.onnx_export import read_sidecar
from knnsvc.runtime import first_line

log = logging.getLogger(__name__)

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
"""ONNX Runtime graph optimisation levels by name (`session_options`)."""


def session_options(threads: int | None = None, optimization: str = "all") -> ort.SessionOptions:
    """ONNX Runtime session settings: intra-op threads (None: torch's thread count), one inter-op
    thread, sequential execution, and the graph optimisation level (`OPTIMIZATION_LEVELS`)."""
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {sorted(OPTIMIZATION_LEVELS)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    options.log_severity_level = 3  # errors only
    return options


def open_session(graph: str | os.PathLike, sidecar: dict[str, Any], options: ort.SessionOptions | None = None
                 ) -> ort.InferenceSession:
    """An ONNX Runtime session of `graph` (CPU), its inputs and outputs checked against `sidecar`.

    Raises:
        CheckpointError: ONNX Runtime cannot load the file, or its inputs/outputs are not the ones
            the sidecar names (a foreign graph).
    """
    try:
        session = ort.InferenceSession(os.fspath(graph), sess_options=options or session_options(),
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's load errors (InvalidProtobuf, InvalidGraph, Fail) share no base class
        raise CheckpointError(f"{graph}: not a loadable ONNX graph ({first_line(err)})") from None
    inputs = [node.name for node in session.get_inputs()]
    outputs = [node.name for node in session.get_outputs()]
    if inputs != list(sidecar["inputs"]) or outputs != list(sidecar["outputs"]):
        raise CheckpointError(f"{graph}: the graph takes {inputs} and gives {outputs}, but its sidecar says "
                              f"{sidecar['inputs']} and {sidecar['outputs']}: not the graph that was exported")
    return session


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to(device="cpu", dtype=torch.float32).numpy())


class OnnxEncoder(nn.Module):
    """WavLM features from an exported encoder graph, chunked as `knnsvc.encoder.WavLMEncoder`.

    Args:
        graph: the ``.onnx`` file.
        sidecar: its sidecar (None: read and checked, `knnsvc.onnx_export.read_sidecar`).
        layer: the synthesis layer (must be exported).
        chunk_seconds: length of the independently encoded chunks (30 s, the reference's).
        match_layers: layers the converter matches on (must be exported), or None.
        options: ONNX Runtime session settings (default `session_options()`).

    Raises:
        CheckpointError: the graph or sidecar cannot be used, or lacks a layer asked for.
    """

    def __init__(self, graph: str | os.PathLike, sidecar: dict[str, Any] | None = None, layer: int = WAVLM_LAYER,
                 chunk_seconds: float = 30.0, match_layers: Sequence[int] | None = None,
                 options: ort.SessionOptions | None = None) -> None:
        super().__init__()
        self.graph = Path(graph)
        self.sidecar = sidecar if sidecar is not None else read_sidecar(graph, "wavlm")
        self.layers: list[int] = [int(index) for index in self.sidecar["layers"]]
        wanted = [layer, *(match_layers or [])]
        missing = sorted(set(wanted) - set(self.layers))
        if missing:
            raise CheckpointError(
                f"{graph}: exported with layers {self.layers}, but these settings use layers {missing}; export "
                "it again with --match-layers")
        self.layer = layer
        self.chunk_samples = round(chunk_seconds * SAMPLE_RATE)
        self.encoder_id: str = str(self.sidecar["encoder_id"])
        """The PyTorch encoder's `KnnSvc.encoder_id` (pool cache keys are shared with it)."""
        self.session = open_session(graph, self.sidecar, options)

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.sidecar["dim"])

    @property
    def device(self) -> torch.device:
        """Where features are returned: the CPU."""
        return torch.device("cpu")

    @property
    def num_layers(self) -> int:
        """The deepest exported block (what the drivers may ask for)."""
        return max(self.layers)

    @property
    def wavlm(self) -> OnnxEncoder:
        """Itself: callers that ask the PyTorch encoder's model for its depth (`num_layers`) get it here."""
        return self

    def chunk_lengths(self, num_samples: int) -> list[int]:
        """Lengths of the chunks that are encoded (a tail of <= 320 samples is dropped), as `WavLMEncoder`."""
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

    def forward(self, wav_16k: torch.Tensor) -> torch.Tensor:
        """(L,) waveform -> (T, D) float32 features of the synthesis layer, on the CPU."""
        chunks = list(self.chunks(wav_16k))
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim)

    def hidden_states(self, wav_16k: torch.Tensor) -> torch.Tensor:
        """(L,) waveform -> (layer + 1, T, D) float32; only for a graph exported with layers 0..layer."""
        rows = list(range(self.layer + 1))
        if any(index not in self.layers for index in rows):
            raise ValueError(f"{self.graph}: hidden states 0..{self.layer} were not all exported ({self.layers})")
        states = [self._states(chunk) for chunk in self._chunk_waves(wav_16k)]
        if not states:
            return torch.zeros(len(rows), 0, self.dim)
        picked = [state[[self.layers.index(index) for index in rows]] for state in states]
        return torch.cat(picked, dim=1)

    def chunks(self, wav_16k: torch.Tensor) -> Iterator[torch.Tensor]:
        """The features chunk by chunk, in order: (T_c, D) float32 each; concatenated, `forward`'s."""
        row = self.layers.index(self.layer)
        for chunk in self._chunk_waves(wav_16k):
            yield self._states(chunk)[row]

    def chunks_with_matching(self, wav_16k: torch.Tensor, match_layers: Sequence[int]
                             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per chunk, the synthesis layer's features and the mean of `match_layers`' hidden states.

        Yields:
            ((T_c, D), (T_c, D)) float32.

        Raises:
            ValueError: a matching layer was not exported.
        """
        missing = sorted(set(match_layers) - set(self.layers))
        if missing:
            raise ValueError(f"matching layers {missing} were not exported in {self.graph} (layers {self.layers})")
        row = self.layers.index(self.layer)
        rows = [self.layers.index(index) for index in match_layers]
        for chunk in self._chunk_waves(wav_16k):
            states = self._states(chunk)
            yield states[row], states[rows].mean(dim=0)

    @property
    def frame_local(self) -> bool:
        """False: the graph runs front end and transformer together, so no front-end frames are reused."""
        return False

    def encode_window(self, wav_16k: torch.Tensor, front_prefix: torch.Tensor | None = None,
                      match_layers: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One window of at most one chunk, as `WavLMEncoder.encode_window` without front-end reuse.

        Returns:
            ((T, 0) no front-end frames, (T, D) features of ``layer``, (T, D) matching features or None).

        Raises:
            ValueError: not one chunk, a `front_prefix` given, or a matching layer not exported.
        """
        if wav_16k.dim() != 1 or not HOP_LENGTH < wav_16k.numel() <= self.chunk_samples:
            raise ValueError(f"encode_window takes one chunk of 321..{self.chunk_samples} samples, "
                             f"got shape {tuple(wav_16k.shape)}")
        if front_prefix is not None and front_prefix.shape[0]:
            raise ValueError("front-end frames can be reused only with a frame-local front end")
        missing = sorted(set(match_layers) - set(self.layers))
        if missing:
            raise ValueError(f"matching layers {missing} were not exported in {self.graph} (layers {self.layers})")
        (chunk,) = self._chunk_waves(wav_16k)
        states = self._states(chunk)
        feats = states[self.layers.index(self.layer)]
        matching = states[[self.layers.index(index) for index in match_layers]].mean(dim=0) if match_layers else None
        return feats.new_zeros(feats.shape[0], 0), feats, matching

    def _chunk_waves(self, wav_16k: torch.Tensor) -> Iterator[torch.Tensor]:
        """(1, L_c) padded chunks of the waveform, as `WavLMEncoder` pads them."""
        if wav_16k.dim() != 1:
            raise ValueError(f"expected a mono waveform of shape (L,), got {tuple(wav_16k.shape)}")
        wav = wav_16k.detach().to(device="cpu", dtype=torch.float32)
        start = 0
        for length in self.chunk_lengths(wav.numel()):
            chunk = wav[start : start + length]
            start += length
            yield F.pad(chunk, (0, HOP_LENGTH - length % HOP_LENGTH))[None]

    def _states(self, chunk: torch.Tensor) -> torch.Tensor:
        """(1, L_c) -> (S, T_c, D) float32 hidden states of the exported layers."""
        (hidden,) = self.session.run(None, {"wav": _numpy(chunk)})
        return torch.from_numpy(hidden[0])


class OnnxVocoder(nn.Module):
    """A vocoder whose network is an exported graph; called like every generator,
    ``vocoder(feats, f0_hz, amps, start_cycles)`` -> (B, 1, T * hop).

    Args:
        graph: the ``.onnx`` file.
        sidecar: its sidecar (None: read and checked, `knnsvc.onnx_export.read_sidecar`).
        options: ONNX Runtime session settings (default `session_options()`).

    Raises:
        CheckpointError: the graph or sidecar cannot be used.
    """

    def __init__(self, graph: str | os.PathLike, sidecar: dict[str, Any] | None = None,
                 options: ort.SessionOptions | None = None) -> None:
        super().__init__()
        self.graph = Path(graph)
        self.sidecar = sidecar if sidecar is not None else read_sidecar(graph, "vocoder")
        try:
            self.kind = VocoderKind(self.sidecar["kind"])
            self.config: Any = self._config()
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"{graph}: the sidecar's vocoder description is not usable ({first_line(err)})"
                                  ) from None
        self._vocos: Any = None
        if self.kind is VocoderKind.VOCOS:
            from hifigan.vocos import VocosGenerator

            with torch.device("meta"):  # only the framing, window and inverse STFT are used: no weights
                self._vocos = VocosGenerator(self.config)
            self._vocos.window = torch.hann_window(self.config.fft_length, periodic=True)
        self.session = open_session(graph, self.sidecar, options)

    def _config(self) -> Any:
        architecture = dict(self.sidecar["architecture"])
        if self.kind is VocoderKind.VOCOS:
            from hifigan.vocos import VocosConfig

            return VocosConfig.from_dict(architecture)
        return HiFiGANConfig.from_dict(architecture)

    @property
    def uses_pitch(self) -> bool:
        """Needs ``f0_hz``."""
        return self.kind.uses_pitch

    @property
    def uses_harmonics(self) -> bool:
        """Needs ``amps``."""
        return self.kind.uses_harmonics

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz."""
        return int(self.sidecar["sample_rate"])

    @property
    def samples_per_frame(self) -> int:
        """Output samples per input frame."""
        return int(self.sidecar["hop_length"])

    @property
    def context_frames(self) -> int:
        """The source generator's receptive field in frames (recorded in the sidecar)."""
        return int(self.sidecar["context_frames"])

    @property
    def dim(self) -> int:
        """Feature dimension D the vocoder takes."""
        return int(self.sidecar["dim"])

    def remove_weight_norm(self) -> None:
        """Nothing to fold (weight norm was folded before export); present for the common interface."""

    def forward(
        self,
        feats: torch.Tensor,
        f0_hz: torch.Tensor | None = None,
        amps: torch.Tensor | None = None,
        start_cycles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vocode features.

        Args:
            feats: (B, T, D) features.
            f0_hz: (B, T) target F0 (the pitch kinds); (B, T, 1) is accepted too.
            amps: (B, T, H) harmonic amplitudes (harmonic and vocos).
            start_cycles: (B,) phase of the excitation before the first sample (None = 0).

        Returns:
            (B, 1, T * hop) float32 waveform on `feats`' device.
        """
        check_feats(feats, self.dim)
        if self.uses_pitch:
            if f0_hz is None:
                raise ValueError(f"the {self.kind.value} vocoder needs f0_hz")
            f0_hz = as_frames(f0_hz, feats).cpu()
        if self.uses_harmonics:
            if amps is None:
                raise ValueError(f"the {self.kind.value} vocoder needs amps")
            amps = amps.cpu()
        cycles = None if start_cycles is None else start_cycles.reshape(-1).cpu()
        rows = []
        for b in range(feats.shape[0]):  # the graphs take one sequence at a time
            rows.append(self._one(feats[b : b + 1], None if f0_hz is None else f0_hz[b : b + 1],
                                  None if amps is None else amps[b : b + 1],
                                  None if cycles is None else cycles[b : b + 1]))
        return torch.cat(rows).to(feats.device)

    def _one(self, feats: torch.Tensor, f0_hz: torch.Tensor | None, amps: torch.Tensor | None,
             cycles: torch.Tensor | None) -> torch.Tensor:
        """One sequence (batch 1) -> (1, 1, T * hop)."""
        feeds = {"feats": _numpy(feats)}
        if self.kind is VocoderKind.VOCOS:
            assert f0_hz is not None and amps is not None
            exc_spec, exc_log_mag, pitch = self._vocos.conditioning(f0_hz, amps, cycles)
            feeds.update(excitation_log_mag=_numpy(exc_log_mag), pitch=_numpy(pitch))
            (head,) = self.session.run(None, feeds)
            return self._vocos.synthesis(torch.from_numpy(head), exc_spec)
        if self.kind is VocoderKind.HARMONIC:
            assert f0_hz is not None and amps is not None
            excitation = additive_synth(f0_hz, amps, cycles, self.config.sample_rate, self.config.hop_length)
            feeds["excitation"] = _numpy(excitation[:, None, :])
        elif self.kind is VocoderKind.SINE:
            assert f0_hz is not None
            excitation = sine_excitation(f0_hz, cycles, self.config.sample_rate, self.config.hop_length)
            feeds["excitation"] = _numpy(excitation[:, None, :])
        (wav,) = self.session.run(None, feeds)
        return torch.from_numpy(wav)
