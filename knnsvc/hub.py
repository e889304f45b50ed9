"""torch.hub entry points (re-exported by ``hubconf.py``); they work without torch.hub too.

    >>> knn_svc = torch.hub.load("<owner>/knnsvc", "knn_svc", trust_repo=True)
    >>> pool = knn_svc.build_pool([load_audio("singer.wav")])
    >>> wav_16k = knn_svc.convert(load_audio("source.wav"), pool)

Every checkpoint argument takes a release name (see `knnsvc.checkpoints.RELEASES`, downloaded
once into the torch hub cache) or a local file path. ``pretrained=False`` builds the same
architecture with random weights, offline: full size by default, or any size from a config
(``wavlm_config`` = a WavLM ``cfg`` dict, ``vocoder_config`` = a HiFi-GAN JSON path or dict).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hifigan.config import HiFiGANConfig
from hifigan.generator import Vocoder, VocoderKind, build_generator
from knnsvc import checkpoints
from knnsvc.checkpoints import RELEASES
from knnsvc.config import DEFAULT_BLOCK_SECONDS, DEFAULT_F0, DEFAULT_VOCODER, DEFAULT_WAVLM, MatchConfig
from knnsvc.knnvc import KnnVc
from knnsvc.pipeline import KnnSvc
from knnsvc.runtime import first_line, resolve_device
from wavlm import WavLM, WavLMConfig
from wavlm.config import WAVLM_LARGE_CFG

__all__ = ["hifigan_wavlm", "knn_svc", "knn_vc", "wavlm_large"]

ConfigLike = str | os.PathLike | Mapping[str, Any] | HiFiGANConfig


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
        vocoder: release name or path; "knnsvc-singing" (default), "knnsvc-speech", or a kNN-VC /
            f0-sine vocoder (architecture detected from the weights). With ``pretrained=False`` a
            release name or a kind ("harmonic", "sine", "knnvc") picks the architecture.
        wavlm: release name or path of the WavLM checkpoint.
        vocoder_config: HiFi-GAN config (JSON path, dict or HiFiGANConfig); default: official
            values, or for a checkpoint the widths read from its shapes.
        device: where the converter runs.
        wavlm_config: WavLM architecture for ``pretrained=False`` (default: WavLM-Large).
        seed: random initialisation seed for ``pretrained=False``.
        block_seconds: F0 and vocoder block length (0 = whole recordings; see `KnnSvc`).
        f0: pitch extractor name (`knnsvc.pitch.F0_EXTRACTORS`; default `knnsvc.config.DEFAULT_F0`).
        **match_options: `knnsvc.config.MatchConfig` fields (e.g. ``concat_weight=None,
            optimise_weights=False`` for "no post-opt", ``pitch_shift=-3.0``, ``precision``,
            ``index_rate``, ``protect``, ``rms_mix``).

    Returns:
        A `KnnSvc`: ``build_pool(wavs)`` then ``convert(wav_16k, pool)``. Only the WavLM blocks
        the converter uses are kept in memory.

    Raises:
        ValueError: a match option out of range (`MatchConfig`), a file path with ``pretrained=False``.
        TypeError: an unknown match option.
        CheckpointError: see `knnsvc.checkpoints.build_converter`.
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
    """A vocoder ready for inference: loaded, or random with the architecture `name_or_path` names."""
    if pretrained:  # a JSON path goes through as is, for load_vocoder's one-line errors
        config = config if isinstance(config, (str, os.PathLike)) else _hifigan_config(config)
        return checkpoints.load_vocoder(name_or_path, config, device=device, progress=progress)
    hifigan_config = _hifigan_config(config)
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator(kind, hifigan_config)
    generator.remove_weight_norm()
    return kind, generator.to(device).eval()


def _hifigan_config(config: ConfigLike | None) -> HiFiGANConfig | None:
    if config is None or isinstance(config, HiFiGANConfig):
        return config
    try:
        if isinstance(config, Mapping):
            return HiFiGANConfig.from_dict(dict(config))
        return HiFiGANConfig.from_json(config)
    except (OSError, ValueError, TypeError) as err:
        where = os.fspath(config) if isinstance(config, (str, os.PathLike)) else "vocoder_config"
        raise checkpoints.CheckpointError(f"{where}: not a usable HiFi-GAN config ({first_line(err)})") from None


def _refuse_path(value: str | os.PathLike, what: str) -> None:
    """pretrained=False builds random weights: a file path there is almost certainly a mistake."""
    if value in RELEASES:
        return
    if Path(os.fspath(value)).expanduser().exists():
        raise ValueError(
            f"{what}={os.fspath(value)!r} is a file, but pretrained=False builds random weights; "
            "use pretrained=True to load it"
        )
