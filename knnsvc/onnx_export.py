"""Export of the encoder and the vocoder networks to ONNX graphs, each with a JSON sidecar.

    WavLM checkpoint ─► EncoderGraph: wav (1, L) ─► hidden states of the exported layers (1, S, T, D)
    vocoder checkpoint ─► VocoderGraph: the network after the excitation (the excitation itself,
        float64 phase sums and FFTs, stays in torch: `knnsvc.onnx_runtime` computes it exactly as
        the PyTorch vocoder does)
            knnvc:            feats (1, T, D) ─► wav (1, 1, T * hop)
            harmonic, sine:   feats (1, T, D), excitation (1, 1, T * hop) ─► wav (1, 1, T * hop)
            vocos:            feats (1, T, D), excitation_log_mag (1, T, F), pitch (1, T, 2)
                              ─► head (1, 3F, T) (spectrum and inverse STFT stay in torch)

Every length is dynamic (T frames, L samples). Next to ``NAME.onnx`` the sidecar ``NAME.onnx.json``
says what the graph is: role and kind, rates and hop, the layers, the receptive field, the
architecture, the graph's own SHA-256 (a truncated or replaced graph is refused before it is
parsed), the source checkpoint's path and SHA-256 (a graph exported from another checkpoint than
the one its sidecar names is refused while that file is there), for WavLM the converter's
`encoder_id` of the source model (so reference pools cached with the PyTorch model are reused),
and the self-check's deviation. A graph and its sidecar are written through temporaries and
renamed when both are complete, the sidecar last.

The self-check runs the written graph in ONNX Runtime and the source model in PyTorch on the same
recording and reports SI-SNR and the largest absolute difference (`Deviation`).

Reduced precision: ``precision="int8"`` quantises the float32 graph's weights dynamically
(`onnxruntime.quantization.quantize_dynamic`, int8 weights, activations quantised per call); its
deviation from PyTorch is measured by the same self-check.

Shape letters: T frames (50 Hz), L samples, S exported layers, D feature dim, H harmonics, F bins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hifigan.config import HiFiGANConfig
from hifigan.generator import VocoderKind
from knnsvc.checkpoints import CheckpointError, encoder_depth, load_vocoder, load_wavlm, resolve_checkpoint
from knnsvc.config import HOP_LENGTH, N_HARMONICS, SAMPLE_RATE, WAVLM_LAYER, MatchConfig
from knnsvc.encoder import WavLMEncoder
from knnsvc.files import atomic_path, scratch_path
from knnsvc.harmonics import harmonic_amplitudes, magnitude_spectrogram
from knnsvc.pool import module_fingerprint
from knnsvc.runtime import first_line
from wavlm import WavLM
from wavlm import ops as wavlm_ops

log = logging.getLogger(__name__)

GRAPH_FORMAT = "knnsvc-onnx"
"""The ``format`` field of every sidecar."""
FORMAT_VERSION = 1
"""The sidecar layout version this code writes and reads."""
SIDECAR_SUFFIX = ".json"
"""Appended to the graph's file name: ``wavlm.onnx`` -> ``wavlm.onnx.json``."""
PRECISIONS = ("float32", "int8")
"""Graph precisions: float32 (the PyTorch model's), int8 (dynamic weight quantisation)."""
OPSET = 18
"""ONNX opset of the exported graphs (attention as plain MatMul/Softmax, which int8 quantises)."""
MAX_SECONDS = 3600.0
"""The longest input the dynamic length dimensions are declared for (longer input still runs)."""

ENCODER_INPUTS = ("wav",)
ENCODER_OUTPUTS = ("hidden",)
VOCODER_INPUTS: dict[VocoderKind, tuple[str, ...]] = {
    VocoderKind.KNNVC: ("feats",),
    VocoderKind.HARMONIC: ("feats", "excitation"),
    VocoderKind.SINE: ("feats", "excitation"),
    VocoderKind.VOCOS: ("feats", "excitation_log_mag", "pitch"),
}
VOCODER_OUTPUTS: dict[VocoderKind, tuple[str, ...]] = {
    kind: ("head",) if kind is VocoderKind.VOCOS else ("wav",) for kind in VocoderKind
}

_ROLES = ("wavlm", "vocoder")
_REQUIRED = {
    "wavlm": ("format", "version", "role", "kind", "precision", "sample_rate", "hop_length", "dim", "layers",
              "synthesis_layer", "encoder_id", "inputs", "outputs", "graph_sha256", "source"),
    "vocoder": ("format", "version", "role", "kind", "precision", "sample_rate", "hop_length", "dim",
                "context_frames", "architecture", "inputs", "outputs", "graph_sha256", "source"),
}


# ----------------------------------------------------------------------------------- the graphs
class EncoderGraph(nn.Module):
    """WavLM up to the deepest exported layer; returns the hidden states of `layers`.

    Args:
        wavlm: the model (at least ``max(layers)`` blocks).
        layers: hidden states to return (0 = transformer input), in this order.
    """

    def __init__(self, wavlm: WavLM, layers: Sequence[int]) -> None:
        super().__init__()
        if not layers or min(layers) < 0 or max(layers) > wavlm.num_layers:
            raise ValueError(f"layers must be within 0..{wavlm.num_layers}, got {list(layers)}")
        self.wavlm = wavlm.eval()
        self.layers = list(layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(1, L) waveform (already padded as `WavLMEncoder` pads a chunk) -> (1, S, T, D) float32."""
        _, states = self.wavlm.extract_features(wav, output_layer=max(self.layers), ret_layer_results=True)
        return torch.stack([states[index] for index in self.layers], dim=1)


class VocoderGraph(nn.Module):
    """The vocoder network after its excitation (see the module docstring for each kind's inputs)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator.eval()
        self.kind = VocoderKind(generator.kind)

    def forward(self, feats: torch.Tensor, second: torch.Tensor | None = None,
                third: torch.Tensor | None = None) -> torch.Tensor:
        """(1, T, D) features plus the kind's conditioning (harmonic, sine: the excitation (1, 1, L);
        vocos: its log magnitudes (1, T, F) and the pitch features (1, T, 2)) -> (1, 1, T * hop)
        waveform, or the Vocos head's (1, 3F, T)."""
        generator: Any = self.generator
        if self.kind is VocoderKind.KNNVC:
            return generator(feats)
        if self.kind in (VocoderKind.HARMONIC, VocoderKind.SINE):
            return generator.dec(feats, generator.sin_prenet(second))
        return generator.backbone(feats, second, third)  # (1, 3F, T)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], dynamic_shapes: tuple[dict[int, Any], ...],
            inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
    """``torch.onnx.export`` (the dynamo exporter) of `module` to serialised ONNX bytes, weights inside."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    module.eval()
    onednn = wavlm_ops.ONEDNN_LINEAR
    wavlm_ops.ONEDNN_LINEAR = False  # plain F.linear: oneDNN's op has no ONNX translation
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    registry_level = registry_log.level
    registry_log.setLevel(logging.ERROR)  # one warning per torchvision op when torchvision is not installed
    try:
        with ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export
            warnings.filterwarnings("ignore", message="# The axis name")  # excitation length = hop x frames
            # the math attention kernel: the fused kernels' output strides do not survive the
            # decomposition with a dynamic length
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            stack.enter_context(torch.no_grad())
            program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic_shapes,
                                        input_names=list(inputs), output_names=list(outputs), opset_version=OPSET,
                                        optimize=True, verbose=False)
    finally:
        wavlm_ops.ONEDNN_LINEAR = onednn
        registry_log.setLevel(registry_level)
    assert program is not None  # no file given: the program is returned
    return program.model_proto.SerializeToString()


def export_encoder(wavlm: WavLM, layers: Sequence[int] = (WAVLM_LAYER,)) -> bytes:
    """WavLM up to ``max(layers)`` as ONNX: wav (1, L) -> hidden (1, S, T, D), L dynamic.

    Args:
        wavlm: the model (float32, CPU).
        layers: hidden states the graph returns (sorted, distinct).

    Returns:
        The serialised float32 graph.
    """
    graph = EncoderGraph(wavlm.float().cpu(), layers)
    samples = torch.export.Dim("samples", min=HOP_LENGTH, max=int(MAX_SECONDS * SAMPLE_RATE))
    example = torch.zeros(1, 2 * SAMPLE_RATE)
    return _export(graph, (example,), ({1: samples},), ENCODER_INPUTS, ENCODER_OUTPUTS)


def export_vocoder(generator: nn.Module) -> bytes:
    """The vocoder network after the excitation as ONNX (inputs per kind: `VOCODER_INPUTS`), T dynamic.

    Args:
        generator: a generator of this package with weight norm folded (float32, CPU).

    Returns:
        The serialised float32 graph.
    """
    generator = generator.float().cpu().eval()
    model: Any = generator
    kind = VocoderKind(model.kind)
    graph = VocoderGraph(generator)
    hop = int(model.samples_per_frame)
    max_frames = int(MAX_SECONDS * SAMPLE_RATE / HOP_LENGTH)
    frames = torch.export.Dim("frames", min=2, max=max_frames)
    n_frames = 50
    dim = _feature_dim(generator)
    feats = torch.zeros(1, n_frames, dim)
    args: tuple[torch.Tensor, ...]
    shapes: tuple[dict[int, Any], ...]
    if kind is VocoderKind.KNNVC:
        args, shapes = (feats,), ({1: frames},)
    elif kind is VocoderKind.VOCOS:
        n_bins = int(model.config.n_bins)
        args = (feats, torch.zeros(1, n_frames, n_bins), torch.zeros(1, n_frames, 2))
        shapes = ({1: frames}, {1: frames}, {1: frames})
    else:
        args = (feats, torch.zeros(1, 1, n_frames * hop))
        shapes = ({1: frames}, {2: hop * frames})
    return _export(graph, args, shapes, VOCODER_INPUTS[kind], VOCODER_OUTPUTS[kind])


def quantize_int8(graph: bytes) -> bytes:
    """Dynamic int8 quantisation of a float32 graph's weights (`onnxruntime.quantization`).

    Raises:
        ImportError: onnxruntime is not installed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = logging.NullHandler()
    # the quantiser logs through the root logger, whose first use would install a stderr handler
    root.addHandler(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="knnsvc-int8-") as folder:
            source, target = Path(folder) / "float32.onnx", Path(folder) / "int8.onnx"
            source.write_bytes(graph)
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
            return target.read_bytes()
    finally:
        root.removeHandler(quiet)


def _feature_dim(generator: nn.Module) -> int:
    config: Any = getattr(generator, "config", None)
    if isinstance(config, HiFiGANConfig):
        return config.hubert_dim
    return int(config.input_dim)


# ----------------------------------------------------------------------------------- sidecars
def sidecar_path(graph: str | os.PathLike) -> Path:
    """The sidecar of a graph: ``NAME.onnx`` -> ``NAME.onnx.json`` beside it."""
    graph = Path(graph)
    return graph.with_name(graph.name + SIDECAR_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source(checkpoint: Path) -> dict[str, str]:
    return {"path": os.fspath(checkpoint.resolve()), "name": checkpoint.name, "sha256": file_sha256(checkpoint)}


def encoder_sidecar(wavlm: WavLM, layers: Sequence[int], checkpoint: Path, graph: bytes,
                    precision: str = "float32") -> dict[str, Any]:
    """The sidecar of an exported WavLM (see the module docstring for the fields).

    ``encoder_id`` is what `KnnSvc.encoder_id` gives the PyTorch converter of the same checkpoint
    and depth, so the pool cache keys of both backends agree.
    """
    depth = max(layers)
    fingerprint = module_fingerprint(WavLMEncoder(wavlm, layer=WAVLM_LAYER))
    return {
        "format": GRAPH_FORMAT,
        "version": FORMAT_VERSION,
        "role": "wavlm",
        "kind": "wavlm",
        "precision": precision,
        "sample_rate": SAMPLE_RATE,
        "hop_length": HOP_LENGTH,
        "dim": wavlm.dim,
        "layers": list(layers),
        "depth": depth,
        "synthesis_layer": WAVLM_LAYER,
        "receptive_field_samples": 400,
        "encoder_id": f"{fingerprint}-layer{WAVLM_LAYER}",
        "inputs": list(ENCODER_INPUTS),
        "outputs": list(ENCODER_OUTPUTS),
        "graph_sha256": hashlib.sha256(graph).hexdigest(),
        "source": _source(checkpoint),
        "exported_with": _versions(),
    }


def vocoder_sidecar(generator: nn.Module, checkpoint: Path, graph: bytes, precision: str = "float32") -> dict[str, Any]:
    """The sidecar of an exported vocoder (see the module docstring for the fields)."""
    gen: Any = generator
    kind = VocoderKind(gen.kind)
    config = gen.config
    if isinstance(config, HiFiGANConfig):
        architecture = {**config.architecture_dict(), "sampling_rate": config.sample_rate}
    else:
        architecture = config.to_dict()
    return {
        "format": GRAPH_FORMAT,
        "version": FORMAT_VERSION,
        "role": "vocoder",
        "kind": kind.value,
        "precision": precision,
        "sample_rate": int(gen.sample_rate),
        "hop_length": int(gen.samples_per_frame),
        "dim": _feature_dim(generator),
        "context_frames": int(gen.context_frames),
        "excitation": "computed outside the graph" if kind.uses_pitch else "none",
        "architecture": architecture,
        "inputs": list(VOCODER_INPUTS[kind]),
        "outputs": list(VOCODER_OUTPUTS[kind]),
        "graph_sha256": hashlib.sha256(graph).hexdigest(),
        "source": _source(checkpoint),
        "exported_with": _versions(),
    }


def _versions() -> dict[str, str]:
    import onnx

    return {"torch": torch.__version__, "onnx": onnx.__version__}


def read_sidecar(graph: str | os.PathLike, role: str) -> dict[str, Any]:
    """The sidecar of `graph`, checked against the graph and its source checkpoint.

    Checks, each refused in one line naming the file: the graph exists; the sidecar exists, is a
    JSON object of this format and version with every field of `role`; the graph's SHA-256 is the
    one recorded (a truncated, re-exported or foreign graph differs); the checkpoint the sidecar
    names, while a file is at that path, has the recorded SHA-256 (else the graph was exported
    from another checkpoint than the one named).

    Args:
        graph: the ``.onnx`` file.
        role: "wavlm" or "vocoder": what the caller needs.

    Raises:
        CheckpointError: any check fails.
    """
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    graph = Path(graph).expanduser()
    if not graph.is_file():
        problem = "is a folder, not an exported graph file" if graph.is_dir() else "exported graph file not found"
        raise CheckpointError(f"{graph}: {problem}")
    side = sidecar_path(graph)
    if not side.is_file():
        raise CheckpointError(f"{graph}: no sidecar {side.name} beside it (export graphs with knnsvc-export, which "
                              "writes both)")
    try:
        with open(side, encoding="utf-8") as handle:
            sidecar = json.load(handle)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{side}: not a readable sidecar ({first_line(err)})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != GRAPH_FORMAT:
        raise CheckpointError(f"{side}: not a knnsvc-export sidecar (no \"format\": \"{GRAPH_FORMAT}\")")
    if sidecar.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{side}: sidecar version {sidecar.get('version')!r}, this knnsvc reads version "
                              f"{FORMAT_VERSION}; export the graph again")
    if sidecar.get("role") != role:
        found = sidecar.get("role")
        raise CheckpointError(f"{graph}: this is an exported {found} graph, but {_article(role)} graph is needed here")
    missing = [key for key in _REQUIRED[role] if key not in sidecar]
    if missing:
        raise CheckpointError(f"{side}: sidecar lacks the fields {missing}")
    actual = file_sha256(graph)
    if actual != sidecar["graph_sha256"]:
        raise CheckpointError(
            f"{graph}: does not match its sidecar {side.name} (SHA-256 {actual[:12]}..., recorded "
            f"{str(sidecar['graph_sha256'])[:12]}...): truncated, replaced or from another export; export it again")
    check_source(sidecar, graph)
    return sidecar


def check_source(sidecar: dict[str, Any], graph: Path, checkpoint: str | os.PathLike | None = None) -> None:
    """Refuse a graph exported from another checkpoint than `checkpoint` (default: the one its
    sidecar names, checked only while a file is at that path).

    Raises:
        CheckpointError: the checkpoint's SHA-256 differs from the recorded one.
    """
    source = sidecar.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("sha256"), str):
        raise CheckpointError(f"{sidecar_path(graph)}: the sidecar does not record its source checkpoint's SHA-256")
    named = Path(checkpoint) if checkpoint is not None else Path(str(source.get("path", "")))
    if checkpoint is None and not (str(source.get("path", "")) and named.is_file()):
        return
    if not named.is_file():
        raise CheckpointError(f"{named}: checkpoint file not found")
    if file_sha256(named) != source["sha256"]:
        raise CheckpointError(
            f"{graph}: exported from another checkpoint than {named} (its sidecar records SHA-256 "
            f"{source['sha256'][:12]}..., the file has another); export it again from {named.name}")


def _article(role: str) -> str:
    return "a WavLM encoder" if role == "wavlm" else "a vocoder"


# ----------------------------------------------------------------------------------- self-check
@dataclass(frozen=True)
class Deviation:
    """How far an ONNX Runtime output is from PyTorch's on the same input.

    Attributes:
        si_snr_db: scale-invariant SNR of the ONNX output against PyTorch's (inf: identical).
        max_abs_diff: the largest absolute difference of any element.
    """

    si_snr_db: float
    max_abs_diff: float

    def describe(self) -> str:
        """``SI-SNR 87.3 dB, max abs difference 2.1e-06``."""
        return f"SI-SNR {self.si_snr_db:.1f} dB, max abs difference {self.max_abs_diff:.2g}"

    def to_dict(self) -> dict[str, float | None]:
        return {"si_snr_db": None if math.isinf(self.si_snr_db) else round(self.si_snr_db, 2),
                "max_abs_diff": self.max_abs_diff}


def si_snr_db(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """Scale-invariant SNR in dB of `estimate` against `target` (any equal shapes, flattened), in float64."""
    estimate, target = estimate.detach().reshape(-1).double(), target.detach().reshape(-1).double()
    energy = target @ target
    if energy == 0:
        return math.inf if bool((estimate == 0).all()) else -math.inf
    scaled = (estimate @ target) / energy * target
    noise = (estimate - scaled).pow(2).sum()
    return math.inf if noise == 0 else float(10 * torch.log10(scaled.pow(2).sum() / noise))


def deviation(estimate: torch.Tensor, target: torch.Tensor) -> Deviation:
    """`Deviation` of `estimate` from `target` (equal shapes)."""
    if estimate.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(estimate.shape)} and {tuple(target.shape)}")
    diff = float((estimate.double() - target.double()).abs().max()) if target.numel() else 0.0
    return Deviation(si_snr_db(estimate, target), diff)


@dataclass
class VocoderInputs:
    """A vocoder's inputs for the self-check: feats (T, D), f0_hz (T,), amps (T, H)."""

    feats: torch.Tensor
    f0_hz: torch.Tensor
    amps: torch.Tensor


def vocoder_inputs(wav_16k: torch.Tensor, encoder: WavLMEncoder | None, dim: int, f0: str = "harvest",
                   seed: int = 0) -> VocoderInputs:
    """The self-check's vocoder inputs from a recording: its WavLM features (seeded Gaussian
    features of width `dim` without an encoder), its F0 and its harmonic amplitudes.

    Args:
        wav_16k: (L,) recording at 16 kHz.
        encoder: the PyTorch encoder, or None.
        dim: D, the vocoder's feature width.
        f0: pitch extractor name.
        seed: seed of the Gaussian features.
    """
    from knnsvc.pitch import get_f0_extractor

    n_frames = wav_16k.numel() // HOP_LENGTH
    if encoder is not None and encoder.dim == dim:
        feats = encoder(wav_16k).cpu()
        n_frames = feats.shape[0]
    else:
        feats = torch.randn(n_frames, dim, generator=torch.Generator().manual_seed(seed))
    f0_hz = get_f0_extractor(f0)(wav_16k, None)[:n_frames].float()
    f0_hz = torch.nn.functional.pad(f0_hz, (0, n_frames - f0_hz.numel()))
    amps = harmonic_amplitudes(magnitude_spectrogram(wav_16k, 0, n_frames), f0_hz, N_HARMONICS)
    return VocoderInputs(feats=feats, f0_hz=f0_hz, amps=amps)


def check_encoder(torch_encoder: WavLMEncoder, onnx_encoder: nn.Module, wav_16k: torch.Tensor) -> Deviation:
    """Deviation of the ONNX encoder's (T, D) features from PyTorch's on one recording."""
    with torch.inference_mode():
        return deviation(onnx_encoder(wav_16k), torch_encoder(wav_16k).cpu())


def check_vocoder(torch_vocoder: nn.Module, onnx_vocoder: nn.Module, inputs: VocoderInputs) -> Deviation:
    """Deviation of the ONNX vocoder's waveform from PyTorch's on the same inputs."""
    args = (inputs.feats[None], inputs.f0_hz[None], inputs.amps[None], None)
    with torch.inference_mode():
        return deviation(onnx_vocoder(*args).reshape(-1), torch_vocoder(*args).reshape(-1).cpu())


# ----------------------------------------------------------------------------------- files
@dataclass
class ExportReport:
    """One written graph: where, its bytes, its sidecar, and the self-check's deviation (None: not checked)."""

    path: Path
    graph: bytes
    sidecar: dict[str, Any]
    deviation: Deviation | None


def _checked_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def export_encoder_file(
    checkpoint: str | os.PathLike,
    graph_path: str | os.PathLike,
    layers: Sequence[int] = (WAVLM_LAYER,),
    check_wav: torch.Tensor | None = None,
    precision: str = "float32",
    graph: bytes | None = None,
) -> ExportReport:
    """Export a WavLM checkpoint to `graph_path` and its sidecar, self-checked on `check_wav`.

    Both files are written through temporaries and renamed only when the graph has loaded and (with
    `check_wav`) run in ONNX Runtime; a failure leaves nothing.

    Args:
        checkpoint: release name or file of the WavLM.
        layers: hidden states the graph returns; the synthesis layer (6) is always among them.
        check_wav: (L,) 16 kHz recording for the self-check, or None.
        precision: "float32" or "int8" (`quantize_int8` of the float32 graph).
        graph: the float32 graph already exported from this checkpoint and these layers (for the
            int8 variant next to it), or None.

    Raises:
        CheckpointError: the checkpoint cannot be used.
    """
    precision = _checked_precision(precision)
    layers = sorted({WAVLM_LAYER, *layers})
    path = resolve_checkpoint(checkpoint, "wavlm")
    wavlm = load_wavlm(path, num_layers=max(layers))
    data = graph if graph is not None else export_encoder(wavlm, layers)
    if precision == "int8":
        data = quantize_int8(data)
    sidecar = encoder_sidecar(wavlm, layers, path, data, precision)
    deviation_found = None
    with _staged(graph_path, data) as staged:
        if check_wav is not None:
            from knnsvc.onnx_runtime import OnnxEncoder

            onnx_encoder = OnnxEncoder(staged, sidecar)
            deviation_found = check_encoder(WavLMEncoder(wavlm, layer=WAVLM_LAYER), onnx_encoder, check_wav)
            sidecar["check"] = {"input_seconds": round(check_wav.numel() / SAMPLE_RATE, 3),
                                **deviation_found.to_dict()}
        _commit(staged, graph_path, sidecar)
    return ExportReport(Path(graph_path), data, sidecar, deviation_found)


def export_vocoder_file(
    checkpoint: str | os.PathLike,
    graph_path: str | os.PathLike,
    vocoder_config: str | os.PathLike | HiFiGANConfig | None = None,
    check_inputs: VocoderInputs | Callable[[int], VocoderInputs] | None = None,
    precision: str = "float32",
    graph: bytes | None = None,
) -> ExportReport:
    """Export a vocoder checkpoint to `graph_path` and its sidecar, self-checked on `check_inputs`.

    Written like `export_encoder_file` (nothing is left when anything fails).

    Args:
        checkpoint: release name or file of the vocoder (any kind, Vocos included).
        vocoder_config: HiFi-GAN config for non-standard widths (see `load_vocoder`).
        check_inputs: inputs for the self-check (`vocoder_inputs`), or a function of the vocoder's
            feature width D that makes them, or None.
        precision: "float32" or "int8".
        graph: the float32 graph already exported from this checkpoint, or None.

    Raises:
        CheckpointError: the checkpoint cannot be used.
    """
    precision = _checked_precision(precision)
    path = resolve_checkpoint(checkpoint, "vocoder")
    _, generator = load_vocoder(path, vocoder_config)
    data = graph if graph is not None else export_vocoder(generator)
    if precision == "int8":
        data = quantize_int8(data)
    sidecar = vocoder_sidecar(generator, path, data, precision)
    deviation_found = None
    with _staged(graph_path, data) as staged:
        if check_inputs is not None:
            from knnsvc.onnx_runtime import OnnxVocoder

            inputs = check_inputs if isinstance(check_inputs, VocoderInputs) else check_inputs(int(sidecar["dim"]))
            deviation_found = check_vocoder(generator, OnnxVocoder(staged, sidecar), inputs)
            sidecar["check"] = {"input_seconds": round(inputs.f0_hz.numel() * HOP_LENGTH / SAMPLE_RATE, 3),
                                **deviation_found.to_dict()}
        _commit(staged, graph_path, sidecar)
    return ExportReport(Path(graph_path), data, sidecar, deviation_found)


@contextmanager
def _staged(graph_path: str | os.PathLike, data: bytes) -> Iterator[Path]:
    """The graph bytes in a temporary beside `graph_path`, removed at exit unless `_commit` renamed it."""
    with scratch_path(graph_path) as tmp:
        tmp.write_bytes(data)
        yield tmp


def _commit(staged: Path, graph_path: str | os.PathLike, sidecar: dict[str, Any]) -> None:
    """Rename the staged graph onto `graph_path`, then write the sidecar atomically beside it."""
    graph_path = Path(graph_path)
    text = json.dumps(sidecar, indent=2) + "\n"
    with atomic_path(sidecar_path(graph_path)) as side_tmp:
        side_tmp.write_text(text, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staged, 0o666 & ~umask)
        os.replace(staged, graph_path)
    log.info("wrote %s and %s", graph_path, sidecar_path(graph_path).name)


def export_layers(config: MatchConfig | None = None) -> list[int]:
    """The layers a converter with these settings needs from the encoder graph: the synthesis
    layer and the matching layers."""
    config = config or MatchConfig()
    layers = sorted({WAVLM_LAYER, *(config.match_layers or [])})
    assert max(layers) == encoder_depth(config)
    return layers
