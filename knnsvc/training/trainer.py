"""HiFi-GAN vocoder training (spec §9.5, §10.3), as a library: typed configs in, checkpoints out.

The defaults of :class:`TrainConfig` / :class:`DataConfig` are the official kNN-SVC settings:
AdamW for both networks (lr 2e-4, betas 0.8/0.99, weight decay 0.01), learning rates decayed by
0.999 per epoch, batch 16 of 7040-sample segments, the official log-mel loss. One update is
:class:`knnsvc.training.gan.GanStep`; the files are described in ``knnsvc/training/checkpoints.py``.

``out_dir/config.json`` is the run's vocoder config in the official ``config_v1_wavlm.json``
layout: the architecture plus the training and mel-loss values this run used, so the official
code and ``python -m knnsvc.convert --vocoder-config`` read it. Training settings found in a given
``vocoder_config`` file are not used (a warning names those that differ from the run's).

A run pointed at an ``out_dir`` with checkpoints resumes from the newest pair (same batches,
same crops, same parameters as an uninterrupted run). SIGINT/SIGTERM finish the current step,
write a checkpoint and return.

Output rate: ``sample_rate`` (16 kHz, 24 kHz, 44.1 kHz, ...) is the rate the generator writes,
the corpus is read at and the mel loss and the discriminators run at; the features stay the 16 kHz
prematched ones (50 frames per second). Without a ``vocoder_config`` the architecture is the
full-size one at that rate (``hifigan.presets.hifigan_config``, ``hifigan.vocos.vocos_config``).
Generator files of the released 16 kHz HiFi-GAN kinds keep the official layout; other rates and
the Vocos kind are written self-describing (``hifigan.generator.generator_file``).

Multi-GPU: launch with ``torchrun --nproc_per_node=N``; each process trains on 1/N of every batch
(DistributedDataParallel, NCCL on GPUs, gloo on CPUs). Without ``torchrun`` it is one process.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from hifigan.config import HiFiGANConfig
from hifigan.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from hifigan.excitation import HOP_LENGTH, SAMPLE_RATE
from hifigan.generator import VocoderKind, build_generator, generator_metadata
from hifigan.losses import mel_l1
from hifigan.mel import LogMelSpectrogram, MelConfig
from hifigan.presets import hifigan_config, hop_for_rate
from hifigan.vocos import VocosConfig, vocos_config
from knnsvc.runtime import resolve_device
from knnsvc.training import checkpoints
from knnsvc.training.corpus import SplitEntry, make_splits, read_split_csv, write_split_csv
from knnsvc.training.dataset import SEGMENT_SIZE, BadFilePolicy, EpochSampler, HarmonicInput, VocoderDataset
from knnsvc.training.distributed import backend_for, local_rank, setup_distributed
from knnsvc.training.gan import AutocastDtype, GanStep, autocast_context, build_optimizers, generate

log = logging.getLogger(__name__)

UNCHECKED_OFFICIAL_KEYS = ("num_gpus", "num_workers", "dist_config")
"""Official training keys that describe the machine, not the result: never warned about."""


@dataclass
class DataConfig:
    """Where the training and validation items come from (the ``data`` node of ``conf/train.yaml``).

    Attributes:
        corpus_dir: corpus root (audio).
        features_dir: prematched feature root.
        train_csv, valid_csv: split lists (``audio_path,feat_path``). When both are None the lists
            are made from the corpus with :func:`knnsvc.training.corpus.make_splits` (``valid_fraction``,
            ``split_by``, ``split_seed``) and written to ``out_dir/splits/``; a resumed run reuses
            the lists written there.
        split_by: ``utterance`` or ``speaker`` (speaker-disjoint validation).
        harmonic_input: ``matched`` (inference-consistent) or ``random_candidate`` (reference);
            see :class:`knnsvc.training.dataset.HarmonicInput`.
        segment_size: training segment in samples at the output rate (a multiple of the hop: 320 at
            16 kHz, 480 at 24 kHz, 882 at 44.1 kHz).
        num_workers: data-loader worker processes per rank.
        valid_max_items: validate on at most this many items of the list (None = all).
        on_bad_file: ``skip`` (warn and leave out) or ``error`` (stop); see
            :class:`knnsvc.training.dataset.BadFilePolicy`.
    """

    corpus_dir: str
    features_dir: str
    train_csv: str | None = None
    valid_csv: str | None = None
    valid_fraction: float = 0.05
    split_by: str = "utterance"
    split_seed: int = 1234
    harmonic_input: str = HarmonicInput.MATCHED.value
    segment_size: int = SEGMENT_SIZE
    num_workers: int = 2
    valid_max_items: int | None = 50
    on_bad_file: str = BadFilePolicy.SKIP.value

    def __post_init__(self) -> None:
        self.harmonic_input = HarmonicInput(self.harmonic_input)
        self.on_bad_file = BadFilePolicy(self.on_bad_file)
        if (self.train_csv is None) != (self.valid_csv is None):
            raise ValueError(
                "give both train_csv and valid_csv, or neither (then lists are made from the corpus)"
            )


@dataclass
class TrainConfig:
    """A training run (the schema of ``conf/train.yaml``). Defaults are the official kNN-SVC settings.

    Choice fields are typed ``str`` for Hydra (which would read an enum field by member *name*)
    and hold the enum member after construction.

    Attributes:
        out_dir: checkpoints, TensorBoard logs (``out_dir/logs``), split lists, configs.
        data: see :class:`DataConfig`.
        generator: ``harmonic`` (kNN-SVC), ``sine`` (kNN-SVC w/o AS), ``knnvc`` or ``vocos`` (the
            fast harmonic iSTFT vocoder, :mod:`hifigan.vocos`); see :class:`hifigan.generator.VocoderKind`.
        sample_rate: output rate in Hz: the generator's, the corpus is read at it, the mel loss and
            the discriminators run at it (``mel.sample_rate`` and ``mel.hop_length`` must match;
            ``conf/rate/*.yaml`` set them together).
        vocoder_config: JSON with the architecture: official HiFi-GAN layout, or a
            ``VocosConfig.to_json`` file for ``vocos`` (None = the full size at ``sample_rate``).
        init_generator: a ``g_*.pt`` to start the generator from (fine-tuning); ignored on resume.
        device: "auto", "cpu", "cuda" (under torchrun each rank takes cuda:LOCAL_RANK).
        batch_size: global batch, split evenly across ranks.
        learning_rate, adam_b1, adam_b2, weight_decay, lr_decay: AdamW and the per-epoch decay.
        seed: model initialisation and data order.
        max_steps: stop after this many updates. max_epochs: or after this many epochs.
        autocast: run forward passes under autocast in ``autocast_dtype`` (``bfloat16`` or
            ``float16``; false = float32).
        checkpoint_interval, validation_interval, log_interval: in updates (0 = only at the end
            for checkpoints/validation).
        keep_checkpoints: newest checkpoint pairs kept in out_dir.
        num_audio_samples: validation items written to TensorBoard as audio.
        discriminator_width: channel multiplier of MPD/MSD (1.0 = official; smaller for tests).
        mel: the log-mel front end of the mel loss and the validation metric.
        resume: continue from the newest checkpoint in out_dir; false refuses to touch an
            out_dir that has checkpoints.
        progress: progress bar on rank 0.
    """

    out_dir: str
    data: DataConfig
    generator: str = VocoderKind.HARMONIC.value
    sample_rate: int = SAMPLE_RATE
    vocoder_config: str | None = None
    init_generator: str | None = None
    device: str = "auto"
    batch_size: int = 16
    learning_rate: float = 2e-4
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    weight_decay: float = 0.01
    lr_decay: float = 0.999
    seed: int = 1234
    max_steps: int = 1_000_000
    max_epochs: int | None = None
    autocast: bool = False
    autocast_dtype: str = AutocastDtype.BFLOAT16.value
    checkpoint_interval: int = 5000
    validation_interval: int = 1000
    log_interval: int = 25
    keep_checkpoints: int = 2
    num_audio_samples: int = 4
    discriminator_width: float = 1.0
    mel: MelConfig = field(default_factory=MelConfig)
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        if isinstance(self.mel, dict):
            self.mel = MelConfig(**self.mel)
        self.generator = VocoderKind(self.generator)
        self.autocast_dtype = AutocastDtype(self.autocast_dtype)
        for name in ("autocast", "resume", "progress"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
        for name in ("batch_size", "max_steps", "log_interval", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        hop = HOP_LENGTH if self.sample_rate == SAMPLE_RATE else hop_for_rate(self.sample_rate)
        if (self.mel.sample_rate, self.mel.hop_length) != (self.sample_rate, hop):
            raise ValueError(
                f"sample_rate={self.sample_rate} needs mel.sample_rate={self.sample_rate} and mel.hop_length={hop}, "
                f"got {self.mel.sample_rate} and {self.mel.hop_length}; choose the rate with rate=16k|24k|44k "
                "(conf/rate/) or hifigan.presets.mel_config"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (enums as strings), for JSON and checkpoints."""
        return _plain(dataclasses.asdict(self))


def official_training_values(config: TrainConfig, world_size: int, device: torch.device) -> dict[str, Any]:
    """The training and mel-loss keys of an official ``config_v1_wavlm.json``, as this run uses them."""
    mel = config.mel
    return {
        "num_gpus": world_size if device.type == "cuda" else 0,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "adam_b1": config.adam_b1,
        "adam_b2": config.adam_b2,
        "lr_decay": config.lr_decay,
        "seed": config.seed,
        "segment_size": config.data.segment_size,
        "num_mels": mel.n_mels,
        "n_fft": mel.n_fft,
        "hop_size": mel.hop_length,
        "win_size": mel.win_length,
        "sampling_rate": mel.sample_rate,
        "fmin": _json_number(mel.fmin_hz),
        "fmax": _json_number(mel.fmax_hz),
        "fmax_for_loss": None if mel.fmax_hz == mel.sample_rate / 2 else _json_number(mel.fmax_hz),
        "num_workers": config.data.num_workers,
        "dist_config": {"dist_backend": backend_for(device), "dist_url": "env://", "world_size": world_size},
    }


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    steps: int
    epoch: int
    best_valid_mel_l1: float | None
    last_checkpoint: str | None
    best_generator: str | None
    interrupted: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    """Logged training scalars, one dict per ``log_interval`` (keys as in TensorBoard)."""


class Trainer:
    """Builds the models, data and optimisers of a :class:`TrainConfig` and runs the loop."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device, local_rank())
        self.dist = setup_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.out_dir = Path(config.out_dir)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()

        if config.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by {self.dist.world_size} processes"
            )
        self.batch_per_rank = config.batch_size // self.dist.world_size

        self.vocoder_config: HiFiGANConfig | VocosConfig = self._vocoder_config()
        self.run_vocoder_config: HiFiGANConfig | VocosConfig = self._run_vocoder_config()
        self.mel_config = config.mel

        torch.manual_seed(config.seed)
        self.generator = build_generator(config.generator, self.run_vocoder_config).to(self.device)
        self.mpd = MultiPeriodDiscriminator(width=config.discriminator_width).to(self.device)
        self.msd = MultiScaleDiscriminator(width=config.discriminator_width).to(self.device)
        self.log_mel = LogMelSpectrogram(self.mel_config).to(self.device)
        self.optim_g, self.optim_d = build_optimizers(
            self.generator,
            self.mpd,
            self.msd,
            learning_rate=config.learning_rate,
            betas=(config.adam_b1, config.adam_b2),
            weight_decay=config.weight_decay,
        )
        self.scheduler_g = torch.optim.lr_scheduler.ExponentialLR(self.optim_g, gamma=config.lr_decay)
        self.scheduler_d = torch.optim.lr_scheduler.ExponentialLR(self.optim_d, gamma=config.lr_decay)
        autocast_dtype = AutocastDtype(config.autocast_dtype)
        self.autocast_dtype = autocast_dtype.torch_dtype if config.autocast else None
        use_scaler = config.autocast and autocast_dtype.needs_grad_scaler
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

        self.steps = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.best_valid = math.inf
        self.history: list[dict[str, float]] = []
        self._stop_requested = False
        self._running: dict[str, torch.Tensor] | None = None
        self._running_count = 0
        self._last_log_time = time.perf_counter()
        self._ground_truth_logged = False
        self._last_saved_step = -1
        self.last_checkpoint: Path | None = None
        self.best_generator: Path | None = None

        resumed = self._maybe_resume()
        if not resumed and config.init_generator:
            self._load_init_generator(config.init_generator)

        self.train_set, self.valid_set = self._build_datasets()
        self.sampler = EpochSampler(
            len(self.train_set), seed=config.seed, rank=self.dist.rank, world_size=self.dist.world_size
        )
        if len(self.train_set) // self.dist.world_size < self.batch_per_rank:
            raise ValueError(
                f"the training list has {len(self.train_set)} usable items, fewer than one batch "
                f"({config.batch_size}); lower batch_size or add data"
            )

        if self.dist.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator_ddp: nn.Module = DistributedDataParallel(self.generator, device_ids=device_ids)
            self.mpd_ddp: nn.Module = DistributedDataParallel(self.mpd, device_ids=device_ids)
            self.msd_ddp: nn.Module = DistributedDataParallel(self.msd, device_ids=device_ids)
        else:
            self.generator_ddp, self.mpd_ddp, self.msd_ddp = self.generator, self.mpd, self.msd
        self.gan_step = GanStep(
            self.generator_ddp,
            self.mpd_ddp,
            self.msd_ddp,
            self.optim_g,
            self.optim_d,
            self.scaler,
            self.log_mel,
            self.device,
            self.autocast_dtype,
        )

        self.writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.out_dir / "logs"), purge_step=self.steps or None)
            self.run_vocoder_config.to_json(self.out_dir / "config.json")
            checkpoints.write_json(self.out_dir / "train_config.json", config.to_dict())

    def _vocoder_config(self) -> HiFiGANConfig | VocosConfig:
        """The architecture: the ``vocoder_config`` file, or the full size at the run's output rate."""
        path, rate = self.config.vocoder_config, self.config.sample_rate
        if VocoderKind(self.config.generator) is VocoderKind.VOCOS:
            vocos = VocosConfig.from_json(path) if path else vocos_config(rate)
            if vocos.sample_rate != rate:
                raise ValueError(
                    f"{path}: the vocos architecture is for {vocos.sample_rate} Hz, this run trains at {rate} Hz"
                )
            return vocos
        return HiFiGANConfig.from_json(path) if path else hifigan_config(rate)

    def _run_vocoder_config(self) -> HiFiGANConfig | VocosConfig:
        """The architecture plus this run's training and mel values (``config.json``, official layout).

        A Vocos architecture is returned as it is (its file holds no training values).
        """
        if isinstance(self.vocoder_config, VocosConfig):
            return self.vocoder_config
        used = official_training_values(self.config, self.dist.world_size, self.device)
        given = self.vocoder_config.extra
        ignored = [
            f"{key}={given[key]!r} (used: {used[key]!r})"
            for key in used
            if key in given and key not in UNCHECKED_OFFICIAL_KEYS and given[key] != used[key]
        ]
        if ignored and self.dist.is_main:
            log.warning(
                "%s: training settings in the vocoder config are not used (they come from the training "
                "config): %s",
                self.config.vocoder_config,
                ", ".join(ignored),
            )
        return HiFiGANConfig.from_dict({**self.vocoder_config.to_dict(), **used})

    # ------------------------------------------------------------------------------- data
    def _build_datasets(self) -> tuple[VocoderDataset, VocoderDataset | None]:
        cfg = self.config.data
        if cfg.train_csv is not None:
            assert cfg.valid_csv is not None  # DataConfig: both lists or neither
            train_entries = read_split_csv(cfg.train_csv)
            valid_entries = read_split_csv(cfg.valid_csv)
        else:
            train_entries, valid_entries = self._auto_splits()
        dataset = functools.partial(
            VocoderDataset,
            corpus_dir=cfg.corpus_dir,
            features_dir=cfg.features_dir,
            harmonic_input=cfg.harmonic_input,
            on_bad_file=cfg.on_bad_file,
            mel_config=self.mel_config,
            seed=self.config.seed,
            sample_rate=self.config.sample_rate,
        )
        train_set = dataset(train_entries, segment_size=cfg.segment_size, name="training list")
        if cfg.valid_max_items is not None:
            valid_entries = valid_entries[: cfg.valid_max_items]
        valid_set = None
        if valid_entries:
            valid_set = dataset(valid_entries, segment_size=None, name="validation list")
        else:
            log.warning("no validation list: the best-validation checkpoint is not tracked")
        log.info(
            "training on %d items, validating on %d",
            len(train_set),
            0 if valid_set is None else len(valid_set),
        )
        return train_set, valid_set

    def _auto_splits(self) -> tuple[list[SplitEntry], list[SplitEntry]]:
        """Split lists of this run: made from the prematched corpus once, then reused."""
        cfg = self.config.data
        split_dir = self.out_dir / "splits"
        train_csv, valid_csv = split_dir / "train.csv", split_dir / "valid.csv"
        if self.dist.is_main and not train_csv.is_file():
            train, valid = make_splits(cfg.corpus_dir, cfg.valid_fraction, cfg.split_seed, cfg.split_by)
            features_dir = Path(cfg.features_dir)
            missing = [e.audio_path for e in train + valid if not (features_dir / e.feat_path).is_file()]
            if missing:
                log.warning(
                    "%d audio file(s) have no prematched features and are left out of the lists: %s",
                    len(missing),
                    ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""),
                )
                unusable = set(missing)
                train = [e for e in train if e.audio_path not in unusable]
                valid = [e for e in valid if e.audio_path not in unusable]
            write_split_csv(train_csv, train)
            write_split_csv(valid_csv, valid)
            log.info("wrote split lists %s (%d) and %s (%d)", train_csv, len(train), valid_csv, len(valid))
        self.dist.barrier()
        return read_split_csv(train_csv), read_split_csv(valid_csv)

    def _loader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_per_rank,
            sampler=self.sampler,
            num_workers=self.config.data.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_ignore_stop_signals,
        )

    # ------------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        """Train until ``max_steps``/``max_epochs`` or a stop signal; always ends with a checkpoint."""
        cfg = self.config
        interrupted = False
        self._last_log_time = time.perf_counter()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.steps,
            unit="step",
            disable=not (cfg.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        with self._signal_handlers():
            while self.steps < cfg.max_steps and (cfg.max_epochs is None or self.epoch < cfg.max_epochs):
                self.sampler.set_epoch(self.epoch, start=self.batches_in_epoch * self.batch_per_rank)
                for batch in self._loader():
                    self._accumulate(self.gan_step(batch))
                    self.steps += 1
                    self.batches_in_epoch += 1
                    bar.update(1)
                    if self.steps % cfg.log_interval == 0:
                        self._log_scalars(bar)
                    if cfg.validation_interval and self.steps % cfg.validation_interval == 0:
                        self.validate()
                    if cfg.checkpoint_interval and self.steps % cfg.checkpoint_interval == 0:
                        self.save_checkpoint()
                    if self.dist.any(self._stop_requested):
                        interrupted = True
                        break
                    if self.steps >= cfg.max_steps:
                        break
                if interrupted or self.steps >= cfg.max_steps:
                    if not interrupted and self.batches_in_epoch == self._batches_per_epoch():
                        self._end_epoch()
                    break
                self._end_epoch()
        bar.close()
        if not interrupted and cfg.validation_interval and self.steps % cfg.validation_interval:
            self.validate()
        if self._last_saved_step != self.steps:
            self.save_checkpoint()
        if self.writer is not None:
            self.writer.flush()
        return TrainResult(
            steps=self.steps,
            epoch=self.epoch,
            best_valid_mel_l1=None if math.isinf(self.best_valid) else self.best_valid,
            last_checkpoint=None if self.last_checkpoint is None else str(self.last_checkpoint),
            best_generator=None if self.best_generator is None else str(self.best_generator),
            interrupted=interrupted,
            history=self.history,
        )

    def _batches_per_epoch(self) -> int:
        return (len(self.train_set) // self.dist.world_size) // self.batch_per_rank

    def _end_epoch(self) -> None:
        self.scheduler_g.step()
        self.scheduler_d.step()
        self.epoch += 1
        self.batches_in_epoch = 0

    def _accumulate(self, values: dict[str, torch.Tensor]) -> None:
        if self._running is None:
            self._running, self._running_count = {}, 0
        for key, value in values.items():
            self._running[key] = self._running.get(key, 0.0) + value
        self._running_count += 1

    def _log_scalars(self, bar: tqdm) -> None:
        if self._running is None:
            return
        now = time.perf_counter()
        elapsed, self._last_log_time = now - self._last_log_time, now
        scalars = {key: float(value) / self._running_count for key, value in self._running.items()}
        scalars["train/steps_per_second"] = self._running_count / max(elapsed, 1e-9)
        scalars["train/learning_rate"] = self.optim_g.param_groups[0]["lr"]
        scalars["train/epoch"] = float(self.epoch)
        self._running = None
        self.history.append({"step": float(self.steps), **scalars})
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, self.steps)
        bar.set_postfix(
            g=f"{scalars['train/loss_g']:.2f}",
            d=f"{scalars['train/loss_d']:.2f}",
            mel=f"{scalars['train/mel_l1']:.3f}",
        )

    # ------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean log-mel L1 over the validation list (rank 0); updates the best checkpoint."""
        if self.valid_set is None:
            return None
        error = None
        if self.dist.is_main:
            self.generator.eval()
            errors = []
            for index in range(len(self.valid_set)):
                item = self.valid_set[index]
                batch = {key: value[None] for key, value in item.items() if isinstance(value, torch.Tensor)}
                with autocast_context(self.device, self.autocast_dtype):
                    wav_generated = generate(self.generator, batch, self.device)
                wav_generated = wav_generated[:, 0].float()  # (1, L)
                log_mel_real = batch["log_mel"].to(self.device)
                errors.append(float(mel_l1(log_mel_real, self.log_mel(wav_generated))))
                if index < self.config.num_audio_samples and self.writer is not None:
                    if not self._ground_truth_logged:
                        self.writer.add_audio(
                            f"ground_truth/{index}",
                            item["wav"][None],
                            self.steps,
                            self.mel_config.sample_rate,
                        )
                    self.writer.add_audio(
                        f"generated/{index}", wav_generated.cpu(), self.steps, self.mel_config.sample_rate
                    )
            self._ground_truth_logged = True
            self.generator.train()
            error = sum(errors) / len(errors)
            if self.writer is not None:
                self.writer.add_scalar("validation/mel_l1", error, self.steps)
            log.info(
                "step %d: validation mel L1 %.4f (best %.4f)", self.steps, error, min(error, self.best_valid)
            )
            if error < self.best_valid:
                self.best_valid = error
                self.best_generator = checkpoints.save_best_generator(
                    self.out_dir,
                    self.steps,
                    self.generator.state_dict(),
                    self.best_valid,
                    generator_config=generator_metadata(self.generator),
                )
        self.best_valid = self.dist.broadcast_float(self.best_valid)
        return error

    # ------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write ``g_XXXXXXXX.pt`` and ``do_XXXXXXXX.pt`` (rank 0) and prune old pairs."""
        self._last_saved_step = self.steps
        if not self.dist.is_main:
            self.dist.barrier()
            return None
        state = {
            "mpd": self.mpd.state_dict(),
            "msd": self.msd.state_dict(),
            "optim_g": self.optim_g.state_dict(),
            "optim_d": self.optim_d.state_dict(),
            "steps": self.steps,
            "epoch": self.epoch,
            "scheduler_g": self.scheduler_g.state_dict(),
            "scheduler_d": self.scheduler_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "batches_in_epoch": self.batches_in_epoch,
            "world_size": self.dist.world_size,
            "best_valid_mel_l1": self.best_valid,
            "rng": checkpoints.rng_state(),
            "train_config": self.config.to_dict(),
            "vocoder": self.run_vocoder_config.to_dict(),
        }
        g_path = checkpoints.save_checkpoint(
            self.out_dir,
            self.steps,
            self.generator.state_dict(),
            state,
            self.config.keep_checkpoints,
            generator_config=generator_metadata(self.generator),
        )
        self.last_checkpoint = g_path
        log.info("saved %s and %s", g_path.name, checkpoints.state_path(self.out_dir, self.steps).name)
        self.dist.barrier()
        return g_path

    def _maybe_resume(self) -> bool:
        steps = checkpoints.checkpoint_steps(self.out_dir)
        if not steps:
            return False
        step = steps[-1]
        do_path = checkpoints.state_path(self.out_dir, step)
        if not self.config.resume:
            raise ValueError(
                f"{self.out_dir} already holds checkpoints (newest {do_path.name}); "
                "pass resume=true to continue them or choose another out_dir"
            )
        generator_state, state = checkpoints.load_checkpoint(self.out_dir, step)
        checkpoints.check_resumable(state, do_path, self.config.to_dict(), self.run_vocoder_config)
        self.generator.load_state_dict(generator_state, strict=True)
        self.mpd.load_state_dict(state["mpd"], strict=True)
        self.msd.load_state_dict(state["msd"], strict=True)
        self.optim_g.load_state_dict(state["optim_g"])
        self.optim_d.load_state_dict(state["optim_d"])
        self.steps = int(state["steps"])
        self.epoch = int(state["epoch"])
        if "scheduler_g" in state:
            self.scheduler_g.load_state_dict(state["scheduler_g"])
            self.scheduler_d.load_state_dict(state["scheduler_d"])
        else:  # an official do_ file: rebuild the per-epoch decay
            for scheduler in (self.scheduler_g, self.scheduler_d):
                scheduler.last_epoch = self.epoch
        if "scaler" in state and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.batches_in_epoch = int(state.get("batches_in_epoch", 0))
        if int(state.get("world_size", self.dist.world_size)) != self.dist.world_size:
            log.warning(
                "resuming a run of %d processes with %d: the rest of epoch %d is restarted from its beginning",
                state["world_size"],
                self.dist.world_size,
                self.epoch,
            )
            self.batches_in_epoch = 0
        self.best_valid = float(state.get("best_valid_mel_l1", math.inf))
        if "rng" in state:
            checkpoints.set_rng_state(state["rng"])
        self._last_saved_step = self.steps
        self.last_checkpoint = checkpoints.generator_path(self.out_dir, step)
        self.best_generator = checkpoints.best_generator(self.out_dir)
        log.info("resumed from %s at step %d, epoch %d", do_path.name, self.steps, self.epoch)
        return True

    def _load_init_generator(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("generator", state)
        try:
            self.generator.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"init_generator {path} does not fit the {VocoderKind(self.config.generator).value} generator: {err}"
            ) from None
        log.info("generator initialised from %s", path)

    # ------------------------------------------------------------------------------- plumbing
    @contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        def request_stop(signum: int, frame: Any) -> None:
            log.warning("received signal %d: stopping after this step and writing a checkpoint", signum)
            self._stop_requested = True

        previous = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, request_stop)
        except ValueError:  # not the main thread: leave signals alone
            previous = {}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def close(self) -> None:
        """Close the TensorBoard writer and the process group this trainer created."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.dist.close()


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a vocoder as configured; see the module docstring."""
    trainer = Trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which stops cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _json_number(value: float) -> int | float:
    """Whole numbers as int, as the official config writes ``fmin: 0``, ``fmax: 8000``."""
    return int(value) if float(value).is_integer() else value


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
