"""torch.hub entry points (re-exported by ``hubconf.py``); they work without torch.hub too.

    >>> knn_svc = torch.hub.load("<owner>/knnsvc", "knn_svc", trust_repo=True)
    >>> pool = knn_svc.build_pool([load_audio("singer.wav")])
    >>> wav_16k = knn_svc.convert(load_audio("source.wav"), pool)

Every checkpoint argument takes a release name (see `knnsvc.checkpoints.RELEASES`, downloaded
once into the torch hub cache) or a local file path. ``pretrained=False`` builds the same
architecture with random weights, offline: full size by default, or any size from a config
(``wavlm_config`` = a WavLM ``cfg`` dict, ``vocoder_config`` = a JSON path or dict, see below).

Output rate: a converter writes at its vocoder's rate (`KnnSvc.sample_rate`); the input stays
16 kHz. A pretrained vocoder file says its own rate (the released ones: 16 kHz; a self-describing
file from training at 24 or 44.1 kHz, or of the Vocos kind, carries its config). For random
weights, ``vocoder_config`` chooses it:

- HiFi-GAN kinds (harmonic, sine, knnvc): a dict or JSON in the official ``config_v1_wavlm.json``
  layout; default 16 kHz (the official config). ``{"sampling_rate": 24000}`` (or 44100) without
  ``upsample_rates`` takes that rate's upsampling stack from `hifigan.presets.hifigan_config`;
  the other keys override it (e.g. widths for a tiny model).
- vocos: a dict or JSON of `hifigan.vocos.VocosConfig` fields, or a VocosConfig; default
  ``vocos_config(24000)``. ``{"sample_rate": 44100}`` without ``hop_length`` takes that rate's hop
  (``sample_rate / 50``, `hifigan.vocos.vocos_config`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hifigan.config import HiFiGANConfig
from hifigan.generator import Vocoder, VocoderKind, build_generator
from hifigan.presets import hifigan_config, hop_for_rate
from hifigan.vocos import VocosConfig, vocos_config
from knnsvc import checkpoints
from knnsvc.checkpoints import RELEASES
from knnsvc.config import DEFAULT_BLOCK_SECONDS, DEFAULT_F0, DEFAULT_VOCODER, DEFAULT_WAVLM, MatchConfig
from knnsvc.knnvc import KnnVc
from knnsvc.pipeline import KnnSvc
from knnsvc.runtime import first_line, resolve_device
from wavlm import WavLM, WavLMConfig
from wavlm.config import WAVLM_LARGE_CFG

__all__ = ["hifigan_wavlm", "knn_svc", "knn_vc", "wavlm_large"]

ConfigLike = str | os.PathLike | Mapping[str, Any] | HiFiGANConfig | VocosConfig
"""A vocoder architecture: a JSON path, a dict, or a config object (see the module docstring)."""


def wavlm_large(
    pretrained: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike = DEFAULT_WAVLM,
    config: Mapping[str, Any] | WavLMConfig | None = None,
    seed: int = 0,
    num_layers: int | None = None,
) -> WavLM:
    """WavLM-Large (kNN-VC's ``wavlm_large`` entry), in eval mode.

    Args:
        pretrained: load `checkpoint`; False: random weights built from `config`
            (default: the WavLM-Large architecture).
        progress: show a download progress bar.
        device: None = CUDA if available, else CPU.
        checkpoint: release name or path of a ``{'cfg', 'model'}`` file.
        config: architecture for ``pretrained=False`` (a checkpoint ``cfg`` dict or WavLMConfig).
        seed: random initialisation seed for ``pretrained=False``.
        num_layers: keep only the first transformer blocks (default: all of them).
    """
    device = resolve_device(device)
    if pretrained:
        return checkpoints.load_wavlm(checkpoint, device=device, progress=progress, num_layers=num_layers)
    _refuse_path(checkpoint, "checkpoint")
    if config is None:
        config = WavLMConfig.from_dict(WAVLM_LARGE_CFG)
    elif not isinstance(config, WavLMConfig):
        config = WavLMConfig.from_dict(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WavLM(config)
    if num_layers is not None:
        model.truncate(num_layers)
    return model.to(device).eval()


def hifigan_wavlm(
    pretrained: bool = True,
    progress: bool = True,
    prematched: bool = True,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike | None = None,
    config: ConfigLike | None = None,
    seed: int = 0,
) -> tuple[Vocoder, HiFiGANConfig]:
    """kNN-VC's HiFi-GAN (``hifigan_wavlm`` entry): ``(generator, config)``, weight norm removed.

    Args:
        pretrained: load `checkpoint`; False: random weights (architecture from `config`).
        prematched: default checkpoint "knnvc-prematched" (True) or "knnvc" (False).
        device: None = CUDA if available, else CPU.
        checkpoint: release name or path of a ``{'generator': ...}`` kNN-VC vocoder file.
        config: HiFi-GAN config (JSON path, dict or HiFiGANConfig); None = official values, or
            for a checkpoint the widths read from its shapes.
        seed: random initialisation seed for ``pretrained=False``.
    """
    device = resolve_device(device)
    if checkpoint is None:
        checkpoint = "knnvc-prematched" if prematched else "knnvc"
    kind, generator = _vocoder(pretrained, checkpoint, config, device, progress, seed)
    if kind != VocoderKind.KNNVC:
        raise checkpoints.CheckpointError(
            f"{checkpoint}: a {kind.value} vocoder, but hifigan_wavlm needs a kNN-VC vocoder"
        )
    return generator, generator.config


def knn_vc(
    pretrained: bool = True,
    progress: bool = True,
    prematched: bool = True,
    device: str | torch.device | None = None,
    wavlm: str | os.PathLike = DEFAULT_WAVLM,
    vocoder: str | os.PathLike | None = None,
    vocoder_config: ConfigLike | None = None,
    wavlm_config: Mapping[str, Any] | WavLMConfig | None = None,
    seed: int = 0,
) -> KnnVc:
    """kNN-VC (``knn_vc`` entry): an object with kNN-VC's ``get_features``, ``get_matching_set``,
    ``match`` and ``vocode``, so that code written for bshall/knn-vc runs unchanged.

    Args:
        pretrained: load the checkpoints; False: random weights (see the module docstring).
        prematched: default vocoder "knnvc-prematched" (True) or "knnvc" (False).
        device: None = CUDA if available, else CPU.
        wavlm, vocoder: release names or paths (vocoder None: chosen by `prematched`).
        vocoder_config, wavlm_config: architectures (mainly for ``pretrained=False``).
        seed: random initialisation seed for ``pretrained=False``.
    """
    device = resolve_device(device)
    encoder = wavlm_large(pretrained, progress, device, wavlm, wavlm_config, seed)
    generator, config = hifigan_wavlm(pretrained, progress, prematched, device, vocoder, vocoder_config, seed)
    checkpoints.check_compatible(encoder, generator, wavlm, vocoder)
    return KnnVc(encoder, generator, config, device)


def knn_svc(
    pretrained: bool = True,
    progress: bool = True,
    vocoder: str | os.PathLike = DEFAULT_VOCODER,
    wavlm: str | os.PathLike = DEFAULT_WAVLM,
    vocoder_config: ConfigLike | None = None,
    device: str | torch.device = "cpu",
    wavlm_config: Mapping[str, Any] | WavLMConfig | None = None,
    seed: int = 0,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    f0: str = DEFAULT_F0,
    **match_options: Any,
) -> KnnSvc:
    """kNN-SVC converter (``knn_svc`` entry), built by `knnsvc.checkpoints.build_converter` like the
    commands' converters.

    Args:
        pretrained: load the checkpoints; False: random weights (see the module docstring).
        progress: show download progress bars.
        vocoder: release name or path; "knnsvc-singing" (default), "knnsvc-speech", a kNN-VC /
            f0-sine vocoder (architecture detected from the weights), or a self-describing file
            (another output rate, or the Vocos kind: rebuilt from the config it holds). With
            ``pretrained=False`` a release name or a kind ("harmonic", "sine", "knnvc", "vocos")
            picks the architecture.
        wavlm: release name or path of the WavLM checkpoint.
        vocoder_config: the vocoder's architecture (see the module docstring; JSON path, dict,
            HiFiGANConfig or, for vocos, VocosConfig); with ``pretrained=False`` it also sets the
            output rate (``{"sampling_rate": 24000}``, vocos ``{"sample_rate": 44100}``). Default:
            official values at 16 kHz (vocos: ``vocos_config(24000)``), or for a checkpoint the
            widths read from its shapes (a self-describing file: its own config).
        device: where the converter runs.
        wavlm_config: WavLM architecture for ``pretrained=False`` (default: WavLM-Large).
        seed: random initialisation seed for ``pretrained=False``.
        block_seconds: F0 and vocoder block length (0 = whole recordings; see `KnnSvc`).
        f0: pitch extractor name (`knnsvc.pitch.F0_EXTRACTORS`; default `knnsvc.config.DEFAULT_F0`).
        **match_options: `knnsvc.config.MatchConfig` fields (e.g. ``concat_weight=None,
            optimise_weights=False`` for "no post-opt", ``pitch_shift=-3.0``, ``precision``,
            ``index_rate``, ``protect``, ``rms_mix``).

    Returns:
        A `KnnSvc`: ``build_pool(wavs)`` then ``convert(wav_16k, pool)``, which returns audio at
        ``converter.sample_rate`` (the vocoder's). Only the WavLM blocks the converter uses are kept
        in memory.

    Raises:
        ValueError: a match option out of range (`MatchConfig`), a file path with ``pretrained=False``.
        TypeError: an unknown match option.
        CheckpointError: see `knnsvc.checkpoints.build_converter`; also a `vocoder_config` that does
            not describe the vocoder's kind (one line).
    """
    device = resolve_device(device)
    config = MatchConfig(**match_options)
    if pretrained:  # a JSON path goes through as is, for load_vocoder's one-line errors
        loaded_config = vocoder_config if isinstance(vocoder_config, (str, os.PathLike)) else _hifigan_config(
            vocoder_config)
        return checkpoints.build_converter(wavlm, vocoder, loaded_config, config, f0, device, block_seconds,
                                           progress)
    encoder = wavlm_large(False, progress, device, wavlm, wavlm_config, seed,
                          num_layers=checkpoints.encoder_depth(config))
    generator = _vocoder(False, vocoder, vocoder_config, device, progress, seed)
    return checkpoints.build_converter(encoder, generator, None, config, f0, device, block_seconds, progress)


def _vocoder(
    pretrained: bool,
    name_or_path: str | os.PathLike,
    config: ConfigLike | None,
    device: torch.device,
    progress: bool,
    seed: int,
) -> tuple[VocoderKind, Vocoder]:
    """A vocoder ready for inference: loaded, or random with the architecture `name_or_path` names
    (and `config` describes: see the module docstring)."""
    if pretrained:  # a JSON path goes through as is, for load_vocoder's one-line errors
        config = config if isinstance(config, (str, os.PathLike)) else _hifigan_config(config)
        return checkpoints.load_vocoder(name_or_path, config, device=device, progress=progress)
    text = os.fspath(name_or_path)
    release = RELEASES.get(text)
    if release is not None and release.vocoder_kind is not None:
        kind = release.vocoder_kind
    elif text in {k.value for k in VocoderKind}:
        kind = VocoderKind(text)
    else:
        _refuse_path(name_or_path, "vocoder")
        known = ", ".join([n for n, r in RELEASES.items() if r.role == "vocoder"] + [k.value for k in VocoderKind])
        raise checkpoints.CheckpointError(f"unknown vocoder '{text}' (known: {known})")
    architecture = _random_config(kind, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator(kind, architecture)
    generator.remove_weight_norm()
    return kind, generator.to(device).eval()


def _hifigan_config(config: ConfigLike | None) -> HiFiGANConfig | None:
    """The HiFi-GAN config `config` describes, as given (a pretrained file's widths: no preset filled in)."""
    if config is None or isinstance(config, HiFiGANConfig):
        return config
    if isinstance(config, VocosConfig):
        raise checkpoints.CheckpointError("vocoder_config: a VocosConfig, but a HiFi-GAN config is needed here")
    try:
        if isinstance(config, Mapping):
            return HiFiGANConfig.from_dict(dict(config))
        return HiFiGANConfig.from_json(config)
    except (OSError, ValueError, TypeError) as err:
        raise checkpoints.CheckpointError(f"{_where(config)}: not a usable HiFi-GAN config ({first_line(err)})") \
            from None


def _random_config(kind: VocoderKind, config: ConfigLike | None) -> HiFiGANConfig | VocosConfig:
    """The architecture of a random `kind` vocoder: `config` (see the module docstring), with the
    preset of its output rate filled in where it names a rate but not the upsampling (or hop)."""
    if kind is VocoderKind.VOCOS:
        if isinstance(config, VocosConfig):
            return config
        if config is None:
            return vocos_config(24_000)
        if isinstance(config, HiFiGANConfig):
            raise checkpoints.CheckpointError("vocoder_config: a HiFiGANConfig, but the vocos vocoder takes a "
                                              "VocosConfig (or a dict of its fields)")
        try:
            values = _config_values(config)
            if isinstance(values, dict) and "hop_length" not in values:
                values["hop_length"] = hop_for_rate(int(values.get("sample_rate", VocosConfig.sample_rate)))
            return VocosConfig.from_dict(values)
        except (OSError, ValueError, TypeError) as err:
            raise checkpoints.CheckpointError(f"{_where(config)}: not a usable Vocos config ({first_line(err)})") \
                from None
    if isinstance(config, VocosConfig):
        raise checkpoints.CheckpointError(f"vocoder_config: a VocosConfig, but the {kind.value} vocoder takes a "
                                          "HiFi-GAN config")
    if config is None or isinstance(config, HiFiGANConfig):
        return config if config is not None else HiFiGANConfig()
    try:
        values = _config_values(config)
        if isinstance(values, dict) and "sample_rate" in values and "sampling_rate" not in values:
            raise ValueError("a HiFi-GAN config names its output rate 'sampling_rate', not 'sample_rate'")
        if isinstance(values, dict) and "sampling_rate" in values and "upsample_rates" not in values:
            preset = hifigan_config(int(values["sampling_rate"]))
            values = {"upsample_rates": preset.upsample_rates,
                      "upsample_kernel_sizes": preset.upsample_kernel_sizes, **values}
        return HiFiGANConfig.from_dict(values)
    except (OSError, ValueError, TypeError) as err:
        raise checkpoints.CheckpointError(f"{_where(config)}: not a usable HiFi-GAN config ({first_line(err)})") \
            from None


def _config_values(config: str | os.PathLike | Mapping[str, Any]) -> Any:
    """A copy of the dict `config`, or the JSON value in the file `config` (the config classes' `from_dict`
    refuse anything but an object)."""
    if isinstance(config, Mapping):
        return dict(config)
    with open(config, encoding="utf-8") as file:
        return json.load(file)


def _where(config: object) -> str:
    """How a message names `config`: its path, or ``vocoder_config``."""
    return os.fspath(config) if isinstance(config, (str, os.PathLike)) else "vocoder_config"


def _refuse_path(value: str | os.PathLike, what: str) -> None:
    """pretrained=False builds random weights: a file path there is almost certainly a mistake."""
    if value in RELEASES:
        return
    if Path(os.fspath(value)).expanduser().exists():
        raise ValueError(
            f"{what}={os.fspath(value)!r} is a file, but pretrained=False builds random weights; "
            "use pretrained=True to load it"
        )
