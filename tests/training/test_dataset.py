"""Split lists, the prematched dataset, the resumable sampler and the Hydra configs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from knnsvc.training.corpus import PoolUnit, SplitEntry, make_splits, read_split_csv, write_split_csv
from knnsvc.training.dataset import EpochSampler, HarmonicInput, VocoderDataset
from knnsvc.training.features import PrematchedFeatures
from knnsvc.training.gan import AutocastDtype
from tests.training.corpus import make_corpus, prematched_corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prematched(tmp_path_factory):
    return prematched_corpus(tmp_path_factory)


def entries_of(corpus: Path) -> list[SplitEntry]:
    train, valid = make_splits(corpus, valid_fraction=0.0)
    return train + valid


def test_items_are_aligned_segments(prematched):
    corpus, features = prematched
    dataset = VocoderDataset(entries_of(corpus), corpus, features, segment_size=3200, seed=3)
    item = dataset[(0, 0)]
    assert item["feats"].shape == (10, 32) and item["feats"].dtype == torch.float32
    assert item["wav"].shape == (3200,) and item["f0_hz"].shape == (10,)
    assert item["amps"].shape == (10, 49) and item["log_mel"].shape == (80, 10)
    # the crop is a function of (seed, epoch, index): repeatable, and different in another epoch
    assert torch.equal(dataset[(0, 0)]["wav"], item["wav"])
    starts = {int(dataset[(0, epoch)]["wav"].abs().argmax()) for epoch in range(6)}
    assert len(starts) > 1

    wav, stored = dataset.load(0)
    offset = next(
        s for s in range(0, wav.numel() - 3200 + 1, 320) if torch.equal(wav[s : s + 3200], item["wav"])
    )
    frame = offset // 320
    torch.testing.assert_close(item["feats"], stored.feats[frame : frame + 10].float())
    torch.testing.assert_close(item["f0_hz"], stored.f0_hz[frame : frame + 10])
    torch.testing.assert_close(item["amps"], stored.amps[frame : frame + 10])  # HarmonicInput.MATCHED

    full = VocoderDataset(entries_of(corpus), corpus, features, segment_size=None)[0]
    assert full["wav"].numel() == full["feats"].shape[0] * 320 == stored.num_frames * 320


def test_random_candidate_harmonic_input(prematched):
    corpus, features = prematched
    dataset = VocoderDataset(
        entries_of(corpus), corpus, features, segment_size=None, harmonic_input=HarmonicInput.RANDOM_CANDIDATE
    )
    item = dataset[(1, 0)]
    stored = PrematchedFeatures.load(features / dataset.items[1].entry.feat_path)
    options = stored.candidate_amps.float() * stored.amp_ratio[..., None]  # (T, K, H)
    matches = (options - item["amps"][:, None, :]).abs().amax(dim=2) < 1e-6  # (T, K)
    assert bool(matches.any(dim=1).all()), "every frame must be one candidate x its amplitude ratio"
    assert len({int(i) for i in matches.float().argmax(dim=1)}) > 1


def test_bad_list_entries_are_skipped_or_stop(prematched, tmp_path, caplog):
    corpus, features = prematched
    work_corpus, work_features = tmp_path / "corpus", tmp_path / "features"
    shutil.copytree(corpus, work_corpus)
    shutil.copytree(features, work_features)
    good = entries_of(work_corpus)
    sf.write(work_corpus / "singer0" / "short.wav", np.zeros(3000, dtype=np.float32), 16000)
    (work_corpus / "singer0" / "broken.wav").write_bytes(b"RIFF broken")
    shutil.copy(work_features / good[0].feat_path, work_features / "singer0" / "short.pt")
    shutil.copy(work_features / good[0].feat_path, work_features / "singer0" / "broken.pt")
    bad = [
        SplitEntry("singer0/short.wav", "singer0/short.pt"),
        SplitEntry("singer0/broken.wav", "singer0/broken.pt"),
        SplitEntry("singer0/missing.wav", "singer0/missing.pt"),
        SplitEntry(good[0].audio_path, "singer0/no_features.pt"),
    ]
    with caplog.at_level("WARNING"):
        dataset = VocoderDataset(
            good + bad, work_corpus, work_features, segment_size=7040, name="training list"
        )
    assert len(dataset) == len(good)
    assert "shorter than one training segment" in caplog.text and "short.wav" in caplog.text
    assert "not a readable audio file" in caplog.text and "broken.wav" in caplog.text
    assert "audio file not found" in caplog.text and "feature file not found" in caplog.text
    assert "4 of" in caplog.text

    with pytest.raises(ValueError, match="short.wav.*shorter than one training segment"):
        VocoderDataset(good + bad, work_corpus, work_features, on_bad_file="error")
    with pytest.raises(ValueError, match="none of the 4 listed files is usable"):
        VocoderDataset(bad, work_corpus, work_features)

    sf.write(work_corpus / good[0].audio_path, np.zeros(24000, dtype=np.float32), 16000)  # re-recorded
    mixed_up = VocoderDataset(good[:1], work_corpus, work_features)
    with pytest.raises(ValueError, match="belongs to another recording"):
        mixed_up[0]


def test_sampler_is_seeded_per_epoch_sharded_and_resumable():
    sampler = EpochSampler(10, seed=5)
    epoch0 = [i for i, _ in sampler]
    sampler.set_epoch(1)
    epoch1 = [i for i, _ in sampler]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0 != epoch1
    assert {e for _, e in sampler} == {1}
    sampler.set_epoch(1, start=4)
    assert [i for i, _ in sampler] == epoch1[4:] and len(sampler) == 6
    ranks = [EpochSampler(10, seed=5, rank=r, world_size=3) for r in range(3)]
    shards = [[i for i, _ in s] for s in ranks]
    assert all(len(s) == 3 for s in shards) and len(set(sum(shards, []))) == 9
    assert sum(shards, []) != [] and set(sum(shards, [])) <= set(epoch0)


def test_split_lists(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_speakers=4, n_utterances=5, seconds=0.1, nested=True)
    train, valid = make_splits(corpus, valid_fraction=0.2, seed=11)
    assert (train, valid) == make_splits(corpus, valid_fraction=0.2, seed=11)
    assert len(valid) == 4 and len(train) == 16 and not set(train) & set(valid)
    assert make_splits(corpus, valid_fraction=0.2, seed=12)[1] != valid
    assert valid[0].feat_path == str(Path(valid[0].audio_path).with_suffix(".pt"))
    train_s, valid_s = make_splits(corpus, valid_fraction=0.25, seed=11, by="speaker")
    speakers = lambda rows: {Path(r.audio_path).parts[0] for r in rows}  # noqa: E731
    assert len(speakers(valid_s)) == 1 and not speakers(train_s) & speakers(valid_s)

    path = write_split_csv(tmp_path / "lists" / "train.csv", train)
    assert path.read_text().splitlines()[0] == "audio_path,feat_path"
    assert read_split_csv(path) == train
    (tmp_path / "bad.csv").write_text("wav,feat\na.wav,a.pt\n")
    with pytest.raises(ValueError, match="first line must be 'audio_path,feat_path'"):
        read_split_csv(tmp_path / "bad.csv")
    (tmp_path / "abs.csv").write_text("audio_path,feat_path\n/abs/a.wav,a.pt\n")
    with pytest.raises(ValueError, match="must be relative"):
        read_split_csv(tmp_path / "abs.csv")


def test_make_splits_script(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_speakers=2, n_utterances=3, seconds=0.1, nested=False)
    monkeypatch.syspath_prepend(str(REPO / "data_splits"))
    import make_splits as script

    assert script.main([str(corpus), "--out-dir", str(tmp_path / "lists"), "--valid-fraction", "0.3"]) == 0
    first = (tmp_path / "lists" / "valid.csv").read_text()
    assert script.main([str(corpus), "--out-dir", str(tmp_path / "lists"), "--valid-fraction", "0.3"]) == 0
    assert (tmp_path / "lists" / "valid.csv").read_text() == first and len(first.splitlines()) == 3
    assert script.main([str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("generator", ["harmonic", "sine", "knnvc"])
@pytest.mark.parametrize("data", ["auto", "csv"])
def test_every_train_config_composes_into_dataclasses(generator, data, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    sys.modules.pop("train", None)
    import train as app

    overrides = ["data.corpus_dir=c", "data.features_dir=f", "out_dir=o", f"generator={generator}", f"data={data}"]
    if data == "csv":
        overrides += ["data.train_csv=t.csv", "data.valid_csv=v.csv"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = app.to_config(
            compose("train", overrides=overrides + ["autocast=true", "autocast_dtype=float16"])
        )
    assert config.generator.value == generator and config.out_dir == "o"
    assert config.data.corpus_dir == "c" and config.data.harmonic_input is HarmonicInput.MATCHED
    assert config.autocast is True and config.autocast_dtype is AutocastDtype.FLOAT16
    assert (config.learning_rate, config.adam_b1, config.adam_b2, config.lr_decay) == (2e-4, 0.8, 0.99, 0.999)
    assert (config.batch_size, config.data.segment_size) == (16, 7040)
    if data == "csv":
        assert config.data.train_csv == "t.csv"
    sys.modules.pop("train", None)


def test_prematch_config_composes(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    sys.modules.pop("prematch", None)
    import prematch as app

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = app.to_config(
            compose("prematch", overrides=["corpus_dir=c", "out_dir=o", "pool_unit=chapter"])
        )
    assert (
        config.pool_unit is PoolUnit.CHAPTER and config.wavlm == "wavlm-large" and config.match.n_candidates == 32
    )
    assert config.match.pitch_shift is None and config.match.precision == "float32"  # prematching's defaults
    sys.modules.pop("prematch", None)
