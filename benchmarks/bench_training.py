"""Speed of vocoder-training work: prematching throughput and one full-size HiFi-GAN update.

    python benchmarks/bench_training.py [--device cpu|cuda] [--batch-size 2] [--steps 3]
        [--wavlm PATH] [--seconds 20] [--skip-prematch] [--skip-train]

Prematching runs WavLM-Large (random weights of the real architecture, or ``--wavlm`` a checkpoint)
on a synthetic one-singer corpus and reports seconds of audio prematched per wall-clock second,
with the time per stage. Training builds the full-size harmonic generator (22.9 M parameters),
MPD and MSD and times complete updates (discriminator + generator step) on random 7040-sample
segments. Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from hifigan.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from hifigan.generator import VocoderKind, build_generator
from hifigan.mel import LogMelSpectrogram
from knnsvc.checkpoints import WAVLM_LARGE_CFG, load_wavlm
from knnsvc.encoder import WavLMEncoder
from knnsvc.runtime import resolve_device
from knnsvc.synthetic import write_corpus
from knnsvc.training.dataset import SEGMENT_SIZE
from knnsvc.training.gan import GanStep, build_optimizers
from knnsvc.training.prematch import PrematchConfig, Prematcher
from knnsvc.training.trainer import DataConfig, TrainConfig
from wavlm import WavLM, WavLMConfig


def bench_prematch(device: torch.device, wavlm: str | None, seconds: float, utterances: int) -> None:
    if wavlm:
        model = load_wavlm(wavlm, device=device)
        label = wavlm
    else:
        torch.manual_seed(0)
        model = WavLM(WavLMConfig.from_dict(WAVLM_LARGE_CFG)).to(device).eval()
        label = "WavLM-Large architecture, random weights"
    encoder = WavLMEncoder(model)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_corpus(corpus, n_speakers=1, n_utterances=utterances, seconds=seconds / utterances, nested=False)
        config = PrematchConfig(
            corpus_dir=str(corpus),
            out_dir=str(Path(tmp) / "features"),
            wavlm=label,
            device=str(device),
            progress=False,
        )
        prematcher = Prematcher(config, encoder)
        start = time.perf_counter()
        summary = prematcher.run()
        wall = time.perf_counter() - start
    stages = ", ".join(f"{name} {value:.1f} s" for name, value in prematcher.svc.timings.items())
    print(
        f"prematch [{label}] on {device}: {summary.seconds_of_audio:.1f} s of audio in {wall:.1f} s "
        f"= {summary.seconds_of_audio / wall:.2f} s of audio per second ({utterances} utterances)"
    )
    print(f"  stages: {stages}")


def bench_train_step(
    device: torch.device, batch_size: int, steps: int, kind: VocoderKind, autocast: bool
) -> None:
    torch.manual_seed(0)
    generator = build_generator(kind).to(device)
    mpd, msd = MultiPeriodDiscriminator().to(device), MultiScaleDiscriminator().to(device)
    config = TrainConfig(out_dir="unused", data=DataConfig(corpus_dir="unused", features_dir="unused"))
    optim_g, optim_d = build_optimizers(
        generator,
        mpd,
        msd,
        learning_rate=config.learning_rate,
        betas=(config.adam_b1, config.adam_b2),
        weight_decay=config.weight_decay,
    )
    log_mel = LogMelSpectrogram(config.mel).to(device)
    dtype = torch.bfloat16 if autocast else None
    step = GanStep(
        generator,
        mpd,
        msd,
        optim_g,
        optim_d,
        torch.amp.GradScaler(device.type, enabled=False),
        log_mel,
        device,
        dtype,
    )
    frames = SEGMENT_SIZE // 320
    wav = torch.rand(batch_size, SEGMENT_SIZE) * 0.2 - 0.1
    batch = {
        "feats": torch.randn(batch_size, frames, 1024),
        "wav": wav,
        "f0_hz": torch.full((batch_size, frames), 220.0),
        "amps": torch.rand(batch_size, frames, 49) * 0.05,
        "log_mel": log_mel(wav.to(device)).cpu(),
    }
    step(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / steps
    n_params = sum(p.numel() for p in generator.parameters())
    precision = "bf16 autocast" if autocast else "float32"
    print(
        f"train step [{kind.value} generator {n_params / 1e6:.1f} M params + MPD + MSD, batch {batch_size} x "
        f"{SEGMENT_SIZE} samples, {precision}] on {device}: {per_step:.2f} s per update "
        f"({per_step / batch_size:.2f} s per segment, {steps} timed updates, threads {torch.get_num_threads()})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--wavlm", help="WavLM checkpoint (default: random WavLM-Large weights)")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio prematched (default 20 s)")
    parser.add_argument("--utterances", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--generator", default="harmonic", choices=[k.value for k in VocoderKind])
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast for the training step")
    parser.add_argument("--skip-prematch", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    if not args.skip_prematch:
        bench_prematch(device, args.wavlm, args.seconds, args.utterances)
    if not args.skip_train:
        bench_train_step(device, args.batch_size, args.steps, VocoderKind(args.generator), args.autocast)


if __name__ == "__main__":
    main()
