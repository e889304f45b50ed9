"""Convert a batch of recordings, sharded over workers (Hydra app, conf/convert.yaml).

    python experiments/convert.py source=SONGS_DIR reference=SINGER_DIR output=OUT_DIR \
        wavlm=NAME_OR_CKPT vocoder=NAME_OR_CKPT [device=cuda] [pool_cache=DIR]

    # 4 shards on this machine (joblib workers), then one manifest for the whole batch:
    python experiments/convert.py -m hydra/launcher=joblib hydra.launcher.n_jobs=4 \
        num_shards=4 shard_index=0,1,2,3 source=... reference=... output=OUT_DIR
    knnsvc-merge OUT_DIR.manifest.shard-*-of-4.json -o OUT_DIR.manifest.json

    # the same as a SLURM job array (pip install hydra-submitit-launcher; conf/hydra/launcher/slurm.yaml):
    python experiments/convert.py -m hydra/launcher=slurm num_shards=64 'shard_index=range(64)' ...

Each job runs ``knnsvc-convert SOURCE REFERENCE -o OUTPUT --num-shards N --shard-index I --manifest
MANIFEST`` in its process: shard I converts positions I, I + N, ... of the sorted batch, skips
outputs already there (a pre-empted job is simply run again) and writes its own manifest
(``<manifest stem>.shard-I-of-N.json``); the outputs are byte for byte those of one process. All
shards may share one pool cache (entries are written atomically). The schema is `ConvertAppConfig`,
registered as `convert_schema`; conf/convert.yaml is a delta over it, so an unknown key fails when
the config is composed. This file only turns the config into the command's arguments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from knnsvc.apps import convert
from knnsvc.config import DEFAULT_BLOCK_SECONDS, DEFAULT_F0, DEFAULT_VOCODER, DEFAULT_WAVLM, MatchConfig

_MATCH = MatchConfig()


@dataclass
class ConvertAppConfig:
    """One shard of a batch conversion (the schema of conf/convert.yaml).

    Attributes:
        source, reference, output: knnsvc-convert's SRC, REF and -o (a folder for a folder of sources).
        manifest: the run's manifest path; shard I of N writes ``<stem>.shard-I-of-N.json`` beside it.
        num_shards, shard_index: this job converts shard `shard_index` of `num_shards`.
        post_opt: the concatenation weight, or null for no post-optimisation (``--no-post-opt``).
        threads: torch threads of this job (null: torch's default; set it to cores / jobs per machine).
        extra_args: any other knnsvc-convert options, verbatim (e.g. ["--rms-mix", "0.5"]).
    """

    source: str
    reference: str
    output: str
    manifest: str = "${output}.manifest.json"
    num_shards: int = 1
    shard_index: int = 0
    wavlm: str = DEFAULT_WAVLM
    vocoder: str = DEFAULT_VOCODER
    vocoder_config: str | None = None
    device: str = "auto"
    f0: str = DEFAULT_F0
    block_seconds: float = DEFAULT_BLOCK_SECONDS
    workers: int | None = None
    threads: int | None = None
    pool_cache: str | None = None
    topk: int = _MATCH.topk
    post_opt: float | None = _MATCH.concat_weight
    pitch_shift: str = str(_MATCH.pitch_shift)
    precision: str = _MATCH.precision
    overwrite: bool = False
    quiet: bool = True
    extra_args: list[str] = field(default_factory=list)


ConfigStore.instance().store(name="convert_schema", node=ConvertAppConfig)


def command_line(app: ConvertAppConfig) -> list[str]:
    """The knnsvc-convert arguments of one shard."""
    argv = [app.source, app.reference, "-o", app.output, "--num-shards", str(app.num_shards),
            "--shard-index", str(app.shard_index), "--manifest", app.manifest, "--wavlm", app.wavlm,
            "--vocoder", app.vocoder, "--device", app.device, "--f0", app.f0, "--block-seconds", str(app.block_seconds),
            "--topk", str(app.topk), "--pitch-shift", app.pitch_shift, "--precision", app.precision]
    argv += ["--no-post-opt"] if app.post_opt is None else ["--post-opt", str(app.post_opt)]
    for flag, value in (("--vocoder-config", app.vocoder_config), ("--workers", app.workers),
                        ("--pool-cache", app.pool_cache)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--overwrite"] * app.overwrite + ["-q"] * app.quiet
    return argv + list(app.extra_args)


@hydra.main(config_path="../conf", config_name="convert", version_base="1.3")
def main(cfg: DictConfig) -> int:
    """Run one shard; a failed shard ends the job with its exit status (a multirun reports it)."""
    app: ConvertAppConfig = OmegaConf.to_object(cfg)
    logging.getLogger("knnsvc").propagate = False  # the command logs its own lines; Hydra's handler would repeat them
    if app.threads is not None:
        torch.set_num_threads(app.threads)
    status = convert.main(command_line(app))
    if status != 0:
        message = f"shard {app.shard_index} of {app.num_shards}: knnsvc-convert ended with exit status {status}"
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise RuntimeError(message)
        raise SystemExit(status)
    return status


if __name__ == "__main__":
    main()
