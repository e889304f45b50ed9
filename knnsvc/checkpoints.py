"""Released checkpoints: the release table, download into the torch hub cache, safe strict loading.

Every function that takes a checkpoint accepts either a short name from `RELEASES` (downloaded once
into ``torch.hub.get_dir()/checkpoints``) or the path of a local file in the official format:

- WavLM: ``{'cfg': dict, 'model': state_dict}``
- vocoders: ``{'generator': state_dict}`` with legacy weight-norm keys (a bare state dict is
  accepted too); the architecture is read from the keys and shapes, never from the file name.

Files are read with ``torch.load(weights_only=True)`` only, so a downloaded file cannot run code.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from hifigan.config import HiFiGANConfig
from hifigan.generator import Vocoder, VocoderKind, detect_kind, load_generator
from knnsvc.config import DEFAULT_BLOCK_SECONDS, DEFAULT_F0, DEFAULT_VOCODER, DEFAULT_WAVLM, WAVLM_LAYER, MatchConfig
from knnsvc.download import DownloadError, download_file
from knnsvc.encoder import WavLMEncoder
from knnsvc.pipeline import KnnSvc
from knnsvc.pitch import F0Extractor, get_f0_extractor
from knnsvc.runtime import check_network_precision, first_line
from wavlm import WavLM
from wavlm import load_wavlm as build_wavlm
from wavlm.config import WAVLM_LARGE_CFG  # noqa: F401  (re-exported for callers of this module)

log = logging.getLogger(__name__)

_KNNVC_RELEASE = "https://github.com/bshall/knn-vc/releases/download/v0.1/"
_KNNSVC_RELEASE = "https://github.com/SmoothKen/knn-svc/releases/download/abracadabra/"


@dataclass(frozen=True)
class Release:
    """One published checkpoint file.

    Attributes:
        name: short name used on the command line and in torch.hub entries.
        url: where the file is published.
        role: "wavlm" or "vocoder".
        vocoder_kind: generator architecture of a vocoder file (None for WavLM).
        description: one line for `--list-checkpoints` and the README.
    """

    name: str
    url: str
    role: str
    vocoder_kind: VocoderKind | None
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            "wavlm-large",
            _KNNVC_RELEASE + "WavLM-Large.pt",
            "wavlm",
            None,
            "WavLM-Large encoder (1.26 GB), layer 6 features for matching and synthesis",
        ),
        Release(
            "knnsvc-singing",
            _KNNSVC_RELEASE + "g_00810000_opensinger_mix_harm_no_amp_0.552.pt",
            "vocoder",
            VocoderKind.HARMONIC,
            "kNN-SVC harmonic vocoder trained on OpenSinger (singing; the default)",
        ),
        Release(
            "knnsvc-speech",
            _KNNSVC_RELEASE + "g_00898000_mix_harm_no_amp_0.633333.pt",
            "vocoder",
            VocoderKind.HARMONIC,
            "kNN-SVC harmonic vocoder trained on LibriSpeech train-clean-100 (speech)",
        ),
        Release(
            "knnvc-prematched",
            _KNNVC_RELEASE + "prematch_g_02500000.pt",
            "vocoder",
            VocoderKind.KNNVC,
            "kNN-VC HiFi-GAN trained on prematched features (kNN-VC's default)",
        ),
        Release(
            "knnvc",
            _KNNVC_RELEASE + "g_02500000.pt",
            "vocoder",
            VocoderKind.KNNVC,
            "kNN-VC HiFi-GAN trained on raw WavLM features",
        ),
    )
}


_UNREADABLE = "not a readable PyTorch checkpoint (corrupt, truncated or another kind of file)"
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_ROLE_WORDS = {"wavlm": "a WavLM encoder", "vocoder": "a vocoder"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, fetched or used; the message is one line."""


def cache_dir() -> Path:
    """Folder that downloaded checkpoints are kept in: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def describe_releases() -> str:
    """The release table as text, one checkpoint per line."""
    width = max(len(name) for name in RELEASES)
    return "\n".join(
        f"{r.name:<{width}}  {r.role:<7}  {r.description}\n{'':<{width}}  {'':<7}  {r.url}"
        for r in RELEASES.values()
    )


def resolve_checkpoint(name_or_path: str | os.PathLike, role: str, progress: bool = True) -> Path:
    """The local file for a release name or a path, downloading a release on first use.

    Args:
        name_or_path: a name from `RELEASES` or the path of an existing file.
        role: "wavlm" or "vocoder": what the caller needs (a release of the other role is refused
            before anything is downloaded).
        progress: show a download progress bar on stderr.

    Raises:
        CheckpointError: unknown name, missing file, wrong role, or the download failed.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    release = RELEASES.get(text)
    if release is None:
        if path.is_dir():
            raise CheckpointError(f"{text}: is a folder, not a checkpoint file")
        if path.suffix or os.sep in text or "/" in text:
            raise CheckpointError(f"{text}: checkpoint file not found")
        known = ", ".join(RELEASES)
        raise CheckpointError(f"unknown checkpoint name '{text}' (known names: {known}; or pass a file path)")
    if release.role != role:
        raise CheckpointError(
            f"'{text}' is {_ROLE_WORDS[release.role]} checkpoint, but {_ROLE_WORDS[role]} checkpoint is needed here"
        )
    return _download(release, progress)


def _download(release: Release, progress: bool) -> Path:
    target = cache_dir() / release.filename
    if target.is_file():
        return target
    try:  # download_file logs the one "downloading URL to PATH" line
        download_file(release.url, target, progress=progress)
    except DownloadError as err:
        raise CheckpointError(
            f"cannot download '{release.name}' from {release.url} to {target} ({err.reason}): download it "
            "yourself and save it there, or pass the path of the downloaded file instead of the name"
        ) from None
    return target


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file on the CPU with ``weights_only=True``, memory-mapped when the file
    is in PyTorch's zip format (tensors are then read from disk only when used).

    Raises:
        CheckpointError: the file is not a readable PyTorch checkpoint, holds pickled Python
            objects (refused, never executed), or is not a dict.
    """
    path = os.fspath(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        log.debug("torch.load(%s) failed: %s", path, err)
        found = _REFUSED_GLOBAL.search(str(err))
        if found or _is_raw_pickle(path):
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path}: refused to load: the file holds pickled Python objects{what}, not only tensors and "
                "plain data, and loading it could run code"
            ) from None
        raise CheckpointError(f"{path}: {_UNREADABLE}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError, KeyError) as err:
        log.debug("torch.load(%s) failed: %s", path, err)
        raise CheckpointError(f"{path}: {_UNREADABLE}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint dict (found {type(obj).__name__})")
    return obj


def _is_raw_pickle(path: str) -> bool:
    """A plain Python pickle (protocol 2 or later), not PyTorch's zip format."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def load_wavlm(
    name_or_path: str | os.PathLike = DEFAULT_WAVLM,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_layers: int | None = None,
) -> WavLM:
    """Build WavLM from an official ``{'cfg', 'model'}`` checkpoint, strictly loaded, eval mode.

    No random initialisation: the model is built on the meta device and takes the (memory-mapped)
    checkpoint tensors. With `num_layers` (e.g. 6 for kNN-SVC's layer-6 features) the deeper
    blocks are dropped after the strict check, so their weights are never read or kept.

    Raises:
        CheckpointError: see `resolve_checkpoint`; also a vocoder file or a corrupt/foreign dict.
    """
    path = resolve_checkpoint(name_or_path, "wavlm", progress)
    ckpt = read_checkpoint(path)
    if "generator" in ckpt:
        raise CheckpointError(f"{path}: this is a vocoder checkpoint, not a WavLM encoder checkpoint")
    if not {"cfg", "model"} <= ckpt.keys():
        found = ", ".join(sorted(map(str, ckpt))[:6])
        raise CheckpointError(f"{path}: not a WavLM checkpoint (expected keys 'cfg' and 'model', found {found})")
    try:
        model = build_wavlm(ckpt, num_layers=num_layers)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot load WavLM ({first_line(err)})") from None
    return model.to(device).eval()


def load_vocoder(
    name_or_path: str | os.PathLike = DEFAULT_VOCODER,
    config_json: str | os.PathLike | HiFiGANConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[VocoderKind, Vocoder]:
    """Build the generator stored in a ``{'generator': state_dict}`` file, ready for inference.

    A self-describing file (``{'generator': ..., 'config': {'kind', 'sample_rate', 'hop_length',
    'architecture'}}``, written by training at other rates and for the Vocos kind) is rebuilt from
    its config. Otherwise the architecture (harmonic, f0-sine or kNN-VC) is detected from the
    state dict; widths and rates come from `config_json` (a file in the official ``config_v1_wavlm.json`` format, or a
    `HiFiGANConfig`) or, without one, are inferred from the tensor shapes over the official
    defaults. Weight norm is folded away.

    Returns:
        (kind, generator) with the generator in eval mode on `device`.

    Raises:
        CheckpointError: see `resolve_checkpoint`; also a WavLM file, a corrupt file, a config
            that does not fit the weights.
    """
    path = resolve_checkpoint(name_or_path, "vocoder", progress)
    ckpt = read_checkpoint(path)
    if {"cfg", "model"} <= ckpt.keys():
        raise CheckpointError(f"{path}: this is a WavLM encoder checkpoint, not a vocoder checkpoint")
    state = ckpt.get("generator", ckpt)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a vocoder checkpoint (no 'generator' state dict)")
    state = dict(state)
    consume_prefix_in_state_dict_if_present(state, "module.")
    config: HiFiGANConfig | None = None
    if isinstance(config_json, HiFiGANConfig):
        config = config_json
    elif config_json is not None:
        try:
            config = HiFiGANConfig.from_json(config_json)
        except (OSError, ValueError, TypeError) as err:
            raise CheckpointError(f"{config_json}: not a usable HiFi-GAN config ({first_line(err)})") from None
    metadata = ckpt.get("config") if "generator" in ckpt else None
    if metadata is not None:  # a self-describing file (other rates, the Vocos kind): its config rebuilds it
        stored: dict = {"generator": state, "config": metadata}
    else:
        stored = state
        try:
            detect_kind(state)
        except ValueError as err:
            raise CheckpointError(f"{path}: not a vocoder checkpoint ({first_line(err)})") from None
    try:
        kind, generator = load_generator(stored, config)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        where = f" with config {config_json}" if isinstance(config_json, (str, os.PathLike)) else ""
        raise CheckpointError(f"{path}: cannot load the vocoder{where} ({first_line(err)})") from None
    generator.remove_weight_norm()
    return kind, generator.to(device).eval()


def vocoder_dim(generator: Any) -> int | None:
    """The feature width a vocoder takes: `hubert_dim` of a HiFi-GAN kind, `input_dim` of a Vocos
    generator, `dim` of an exported graph; None when it does not say."""
    config = getattr(generator, "config", None)
    for value in (getattr(config, "hubert_dim", None), getattr(config, "input_dim", None)):
        if isinstance(value, int):
            return value
    value = getattr(generator, "dim", None)
    return value if isinstance(value, int) else None


def check_compatible(wavlm: WavLM | int, generator: Any, wavlm_name: object, vocoder_name: object) -> None:
    """Raise CheckpointError if the vocoder was not built for this encoder's feature width
    (`wavlm`: the model, or its feature width)."""
    expected = vocoder_dim(generator)
    produced = wavlm if isinstance(wavlm, int) else wavlm.dim
    if expected is not None and expected != produced:
        raise CheckpointError(
            f"{vocoder_name}: the vocoder takes {expected}-dim features but the WavLM {wavlm_name} "
            f"produces {produced}-dim features; use a matching pair"
        )


def encoder_depth(config: MatchConfig) -> int:
    """WavLM blocks a converter with these settings runs: the synthesis layer, or the deepest
    matching layer (only these blocks are loaded)."""
    return max([WAVLM_LAYER, *(config.match_layers or [])])


EncoderLike = str | os.PathLike | WavLM | WavLMEncoder
"""A WavLM for `build_converter`: a release name, a checkpoint path, or a model already built."""
VocoderLike = str | os.PathLike | tuple[VocoderKind, Vocoder]
"""A vocoder for `build_converter`: a release name, a checkpoint path, or ``(kind, generator)`` already
built (e.g. `load_vocoder`'s result, or random weights)."""


def build_converter(
    wavlm: EncoderLike = DEFAULT_WAVLM,
    vocoder: VocoderLike = DEFAULT_VOCODER,
    vocoder_config: str | os.PathLike | HiFiGANConfig | None = None,
    config: MatchConfig | None = None,
    f0: str = DEFAULT_F0,
    device: str | torch.device = "cpu",
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    progress: bool = True,
    workers: int | None = None,
    *,
    names: tuple[object, object] | None = None,
    network_precision: str = "float32",
) -> KnnSvc:
    """The one place a converter is built: encoder (only the blocks in use, `encoder_depth`),
    vocoder (architecture read from its weights), F0 extractor, and their compatibility check.

    Every front end builds its converter here: the commands, torch.hub (`knnsvc.hub.knn_svc`,
    also with random weights), the evaluation and the web demo (which keeps its loaded models and
    passes them in).

    Args:
        wavlm: release name or checkpoint path (loaded up to `encoder_depth` blocks), or a WavLM
            (or `WavLMEncoder`) already built, which must have at least that many blocks; or an
            exported graph (a path ending in ``.onnx``, its sidecar beside it, `knnsvc.onnx_export`),
            run by ONNX Runtime on the CPU (`knnsvc.onnx_runtime`; needs ``pip install knnsvc[export]``).
        vocoder: release name or checkpoint path, or ``(kind, generator)`` already built; or an
            exported graph (``.onnx``), as for `wavlm`.
        vocoder_config: HiFi-GAN config for a vocoder given by name or path (see `load_vocoder`);
            refused with a built vocoder.
        config: matching settings (default `MatchConfig()`).
        f0: pitch extractor name (`knnsvc.pitch.F0_EXTRACTORS`).
        device: where the models run (built models are moved there).
        block_seconds: F0 and vocoder block length (0 = whole recordings).
        progress: show download progress bars.
        workers: processes extracting F0 (None: the extractor's default); refused unless the
            pitch module supports it.
        names: (WavLM, vocoder) as messages should name them (default: the names or paths given,
            or "(given model)" / "(given vocoder)" for built ones).
        network_precision: what WavLM and the vocoder run in (`knnsvc.runtime.NETWORK_PRECISIONS`):
            float32 (the reference), or bfloat16/float16 under autocast; not with exported graphs.

    Raises:
        CheckpointError: a checkpoint cannot be found, fetched or used, a built encoder is too
            shallow, or the pair does not fit.
        ValueError, ImportError: an unknown or uninstalled pitch extractor, or `workers` that
            cannot be honoured.
    """
    config = config or MatchConfig()
    depth = encoder_depth(config)
    check_network_precision(network_precision)
    if network_precision != "float32" and (_is_graph(wavlm) or _is_graph(vocoder)):
        raise ValueError(f"network precision {network_precision} applies to PyTorch models; an exported graph runs "
                         "in the precision it was exported in (knnsvc-export --quantize int8)")
    extractor = _f0_extractor(f0, device, workers)
    wavlm_label: object = wavlm if isinstance(wavlm, (str, os.PathLike)) else "(given model)"
    vocoder_label: object = vocoder if isinstance(vocoder, (str, os.PathLike)) else "(given vocoder)"
    if names is not None:
        wavlm_label, vocoder_label = names
    if _is_graph(wavlm) or _is_graph(vocoder):
        return _build_onnx_converter(wavlm, vocoder, vocoder_config, config, extractor, device, block_seconds,
                                     progress, (wavlm_label, vocoder_label))
    if isinstance(wavlm, WavLMEncoder):
        wavlm = wavlm.wavlm
    if isinstance(wavlm, WavLM):
        if wavlm.num_layers < depth:
            raise CheckpointError(
                f"the given WavLM keeps {wavlm.num_layers} blocks, but these settings use layer {depth}"
            )
        encoder = wavlm.to(device).eval()
    else:
        encoder = load_wavlm(wavlm, device=device, progress=progress, num_layers=depth)
    if isinstance(vocoder, tuple):
        if vocoder_config is not None:
            raise ValueError("vocoder_config applies to a vocoder given by name or path, not to a built one")
        kind, generator = VocoderKind(vocoder[0]), vocoder[1].to(device).eval()
    else:
        kind, generator = load_vocoder(vocoder, vocoder_config, device=device, progress=progress)
    check_compatible(encoder, generator, wavlm_label, vocoder_label)
    return KnnSvc(WavLMEncoder(encoder, layer=WAVLM_LAYER, precision=network_precision), generator, kind,
                  config=config, block_seconds=block_seconds, f0=extractor)


def _is_graph(name_or_path: object) -> bool:
    """A checkpoint argument that names an exported ONNX graph (a path ending in ``.onnx``)."""
    return isinstance(name_or_path, (str, os.PathLike)) and os.fspath(name_or_path).lower().endswith(".onnx")


def _onnx_backend() -> ModuleType:
    """`knnsvc.onnx_runtime`, imported on first use; without onnxruntime one line says what to install."""
    try:
        onnx_runtime = importlib.import_module("knnsvc.onnx_runtime")
    except ImportError as err:
        if getattr(err, "name", None) in ("onnxruntime", "onnx"):
            raise CheckpointError(
                f"exported .onnx graphs need the {err.name} package: pip install knnsvc[export]") from None
        raise
    return onnx_runtime


def _build_onnx_converter(
    wavlm: EncoderLike,
    vocoder: VocoderLike,
    vocoder_config: str | os.PathLike | HiFiGANConfig | None,
    config: MatchConfig,
    extractor: F0Extractor,
    device: str | torch.device,
    block_seconds: float,
    progress: bool,
    labels: tuple[object, object],
) -> KnnSvc:
    """`build_converter` where the encoder, the vocoder or both are exported graphs (ONNX Runtime,
    on the CPU); the other one is built as usual. Each graph's sidecar is checked
    (`knnsvc.onnx_export.read_sidecar`) before the graph is loaded."""
    backend = _onnx_backend()
    depth = encoder_depth(config)
    encoder: nn.Module
    generator: Any
    kind: VocoderKind
    encoder_dim: int
    if _is_graph(wavlm):
        assert isinstance(wavlm, (str, os.PathLike))
        graph_encoder = backend.OnnxEncoder(Path(wavlm).expanduser(), match_layers=config.match_layers)
        encoder = graph_encoder
        encoder_dim = int(graph_encoder.dim)
    else:
        if isinstance(wavlm, WavLMEncoder):
            wavlm = wavlm.wavlm
        if isinstance(wavlm, WavLM):
            if wavlm.num_layers < depth:
                raise CheckpointError(
                    f"the given WavLM keeps {wavlm.num_layers} blocks, but these settings use layer {depth}")
            model = wavlm.to(device).eval()
        else:
            model = load_wavlm(wavlm, device=device, progress=progress, num_layers=depth)
        encoder = WavLMEncoder(model, layer=WAVLM_LAYER)
        encoder_dim = model.dim
    if _is_graph(vocoder):
        assert isinstance(vocoder, (str, os.PathLike))
        if vocoder_config is not None:
            raise CheckpointError(f"{vocoder}: --vocoder-config does not apply to an exported graph (its sidecar "
                                  "describes it)")
        generator = backend.OnnxVocoder(Path(vocoder).expanduser())
        kind = generator.kind
    elif isinstance(vocoder, tuple):
        if vocoder_config is not None:
            raise ValueError("vocoder_config applies to a vocoder given by name or path, not to a built one")
        kind, generator = VocoderKind(vocoder[0]), vocoder[1].to(device).eval()
    else:
        kind, generator = load_vocoder(vocoder, vocoder_config, device=device, progress=progress)
    check_compatible(encoder_dim, generator, labels[0], labels[1])
    # an exported encoder carries the PyTorch encoder's id (from its sidecar) as `encoder_id`, which
    # KnnSvc uses: pools cached with either backend serve both
    return KnnSvc(encoder, generator, kind, config=config,  # type: ignore[arg-type]
                  block_seconds=block_seconds, f0=extractor)


def _f0_extractor(name: str, device: str | torch.device, workers: int | None) -> F0Extractor:
    """`get_f0_extractor`, with `workers` passed on where the pitch module takes it."""
    if workers is None:
        return get_f0_extractor(name, device)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    if "workers" in inspect.signature(get_f0_extractor).parameters:
        return get_f0_extractor(name, device, workers=workers)
    if workers != 1:
        raise ValueError(f"workers={workers}: this version extracts F0 in one process only")
    return get_f0_extractor(name, device)
