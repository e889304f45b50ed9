"""Prematching (training/prematch.py): contents, pools, resume after interruption, bad input, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc.matching import cosine_topk
from knnsvc.training.corpus import PoolUnit, scan_corpus
from knnsvc.training.features import PrematchedFeatures, feature_relpath
from knnsvc.training.prematch import PrematchConfig, Prematcher, prematch_match_config
from tests.training.corpus import WAVLM_TINY, make_corpus, tiny_encoder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """2 singers x 3 utterances of 0.8 s (40 frames), in two chapter folders per singer."""
    make_corpus(tmp_path / "corpus", n_speakers=2, n_utterances=3, seconds=0.8, seed=7)
    return tmp_path / "corpus"


def config(corpus: Path, out: Path, **overrides) -> PrematchConfig:
    return PrematchConfig(
        corpus_dir=str(corpus),
        out_dir=str(out),
        wavlm=str(WAVLM_TINY),
        device="cpu",
        progress=False,
        **overrides,
    )


class CountingPrematcher(Prematcher):
    """Records the utterances it matches and the pool files each one was matched against."""

    def __init__(self, *args, interrupt_after: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.matched: list[int] = []
        self.pools: list[list[str]] = []
        self.interrupt_after = interrupt_after

    def _match(self, own, pool, others):
        if self.interrupt_after is not None and len(self.matched) == self.interrupt_after:
            raise KeyboardInterrupt
        self.matched.append(own.num_samples)
        self.pools.append([Path(name).name for name in pool.names])
        self.pools[-1].insert(0, Path(own.pool.names[0]).name)
        self.pools[-1].append(Path(own.pool.names[0]).parent.parent.name)
        return super()._match(own, pool, others)


def test_features_match_the_specification(corpus, tmp_path, encoder):
    out = tmp_path / "features"
    summary = Prematcher(config(corpus, out), encoder).run()
    assert (summary.written, summary.existing, summary.skipped) == (6, 0, 0)

    wav = torch.from_numpy(sf.read(corpus / "singer0/take0/utt0.wav", dtype="float32")[0])
    features = PrematchedFeatures.load(out / "singer0/take0/utt0.pt")
    n_frames = wav.numel() // 320
    assert features.num_samples == wav.numel()
    assert features.feats.shape == (n_frames, encoder.dim) and features.feats.dtype == torch.float16
    assert features.f0_hz.shape == (n_frames,) and bool((features.f0_hz > 0).any())
    assert features.amps.shape == (n_frames, 49)
    assert features.candidate_amps.shape == (n_frames, 4, 49)
    assert features.amp_ratio.shape == (n_frames, 4) and bool((features.amp_ratio > 0).all())

    # feats = mean of the 4 cosine-nearest frames of the singer's *other* utterances
    own = encoder(wav)
    others = [
        encoder(torch.from_numpy(sf.read(corpus / rel, dtype="float32")[0]))
        for rel in ("singer0/take0/utt2.wav", "singer0/take1/utt1.wav")
    ]
    pool = torch.cat(others)
    expected = pool[cosine_topk(own, pool, 32)[:, :4]].mean(dim=1)
    torch.testing.assert_close(features.feats.float(), expected, atol=2e-3, rtol=2e-3)

    manifest = json.loads((out / "prematch_manifest.json").read_text())
    assert manifest["settings"]["pool_unit"] == "speaker"
    assert manifest["settings"]["own_utterance"].startswith("excluded")
    assert manifest["files"]["singer0/take0/utt0.wav"] == {
        "feat_path": "singer0/take0/utt0.pt",
        "status": "written",
        "frames": n_frames,
        "pool_frames": pool.shape[0],
    }
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("unit", [PoolUnit.SPEAKER, PoolUnit.CHAPTER])
def test_pool_excludes_the_utterance_and_follows_the_pool_unit(corpus, tmp_path, encoder, unit):
    settings = config(corpus, tmp_path / "f", pool_unit=unit, match=prematch_match_config(n_candidates=16))
    prematcher = CountingPrematcher(settings, encoder)
    prematcher.run()
    files = {p.relative_to(corpus) for p in corpus.rglob("*.wav")}
    for own_name, *pool_names, _speaker in prematcher.pools:
        assert own_name not in pool_names
        if unit is PoolUnit.SPEAKER:
            assert len(pool_names) == 2  # the other two utterances of the singer, across folders
    if unit is PoolUnit.CHAPTER:  # take0 holds utt0 and utt2: each is matched against the other only
        assert sorted(len(p) - 2 for p in prematcher.pools) == [1, 1, 1, 1]
        assert len(files) - len(prematcher.pools) == 2  # take1 holds one file per singer: skipped


def test_interrupted_run_resumes_without_recomputing(corpus, tmp_path, encoder):
    out = tmp_path / "features"
    first = CountingPrematcher(config(corpus, out), encoder, interrupt_after=4)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    written = sorted(out.rglob("*.pt"))
    assert len(written) == 4
    assert not list(out.rglob("*.tmp")), "an interrupted run must not leave partial files"
    stamps = {p: p.stat().st_mtime_ns for p in written}

    second = CountingPrematcher(config(corpus, out), encoder)
    summary = second.run()
    assert (summary.written, summary.existing) == (2, 4)
    assert len(second.matched) == 2
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    manifest = json.loads((out / "prematch_manifest.json").read_text())
    assert len(manifest["files"]) == 6 and {e["status"] for e in manifest["files"].values()} == {"written"}

    with pytest.raises(ValueError, match="other settings.*pool_unit"):
        Prematcher(config(corpus, out, pool_unit="chapter"), encoder).run()


def test_bad_corpus_input_is_reported(tmp_path, encoder, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        Prematcher(config(empty, tmp_path / "o1"), encoder).run()
    with pytest.raises(ValueError, match="not a folder"):
        Prematcher(config(tmp_path / "missing", tmp_path / "o1"), encoder).run()

    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_speakers=1, n_utterances=3, seconds=0.8, nested=False)
    (corpus / "singer0" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(corpus / "singer0" / "tiny.wav", np.full(200, 0.1, dtype=np.float32), 16000)
    make_corpus(
        corpus / "lonely", n_speakers=1, n_utterances=1, seconds=0.8, nested=False
    )  # lonely/singer0/utt0
    sf.write(corpus / "loose.wav", np.zeros(16000, dtype=np.float32), 16000)

    with caplog.at_level("WARNING"):
        summary = Prematcher(config(corpus, tmp_path / "o2"), encoder).run()
    assert summary.written == 3
    reasons = summary.skipped_files
    assert set(reasons) == {"singer0/broken.wav", "singer0/tiny.wav", "lonely/singer0/utt0.wav"}
    assert "not a readable audio file" in reasons["singer0/broken.wav"]
    assert "too short" in reasons["singer0/tiny.wav"]
    assert "no other utterance" in reasons["lonely/singer0/utt0.wav"]
    manifest = json.loads((tmp_path / "o2" / "prematch_manifest.json").read_text())
    assert manifest["files"]["singer0/broken.wav"]["status"] == "skipped"
    assert "loose.wav" in caplog.text and "no speaker folder" in caplog.text
    assert "broken.wav" in caplog.text

    (corpus / "singer0" / "utt1.flac").write_bytes((corpus / "singer0" / "utt1.wav").read_bytes())
    with pytest.raises(ValueError, match="share a feature file"):
        scan_corpus(corpus)


def test_feature_file_checks(tmp_path):
    assert feature_relpath("spk/ch/a.flac") == Path("spk/ch/a.pt")
    bad = tmp_path / "x.pt"
    torch.save({"feats": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match="not a prematched feature file"):
        PrematchedFeatures.load(bad)
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable feature file"):
        PrematchedFeatures.load(bad)
    with pytest.raises(TypeError, match="overwrite must be true or false"):
        PrematchConfig(corpus_dir="a", out_dir="b", wavlm="c", overwrite="False")


@pytest.mark.slow
def test_cli_multirun_shards_with_joblib(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_speakers=2, n_utterances=2, seconds=0.8, nested=False)
    out = tmp_path / "features"
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        str(REPO / "experiments" / "prematch.py"),
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "num_shards=2",
        "shard_index=0,1",
        f"corpus_dir={corpus}",
        f"out_dir={out}",
        f"wavlm={WAVLM_TINY}",
        "device=cpu",
        "progress=false",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(out.rglob("*.pt"))) == 4
    manifests = sorted(p.name for p in out.glob("prematch_manifest.shard-*.json"))
    assert manifests == ["prematch_manifest.shard-0-of-2.json", "prematch_manifest.shard-1-of-2.json"]
