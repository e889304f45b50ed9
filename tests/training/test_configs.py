"""Configs: the dataclasses are the Hydra schema (typos fail at composition), official vocoder JSON
files round-trip, a run's config.json is in the official format, older checkpoints still resume."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from hifigan.config import HiFiGANConfig
from knnsvc.training.checkpoints import check_resumable
from knnsvc.training.trainer import UNCHECKED_OFFICIAL_KEYS, DataConfig, TrainConfig, official_training_values

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
TRAIN_PATHS = ["data.corpus_dir=c", "data.features_dir=f", "out_dir=o"]


@pytest.fixture(scope="module")
def official() -> dict:
    """The official kNN-SVC ``config_v1_wavlm.json`` (as recorded in the golden manifests)."""
    return json.loads((GOLDEN / "manifests.json").read_text())["vocoder_config_knnsvc"]


def load_app(name: str):
    """An experiments/ app as a module (importing it registers its schema with Hydra)."""
    spec = importlib.util.spec_from_file_location(f"{name}_app", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_with(config_dir: Path, name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(name, overrides=overrides)


# -- Hydra schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learning_rat=0.001", "Key 'learning_rat' not in 'TrainConfig'"),
        ("data.segment_sise=3200", "Key 'segment_sise' not in 'DataConfig'"),
        ("mel.n_mel=40", "Key 'n_mel' not in 'MelConfig'"),
        ("batch_size=sixteen", "batch_size"),
    ],
)
def test_a_typo_in_a_train_override_fails_at_composition(override, message):
    load_app("train")
    with pytest.raises(ConfigCompositionException) as error:
        compose_with(REPO / "conf", "train", TRAIN_PATHS + [override])
    assert message in f"{error.value} {error.value.__cause__}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("n_candidates=16", "Key 'n_candidates' not in 'PrematchConfig'"),  # it lives under match
        ("match.topkk=2", "Key 'topkk' not in 'MatchConfig'"),
        ("overwrit=true", "Key 'overwrit' not in 'PrematchConfig'"),
    ],
)
def test_a_typo_in_a_prematch_override_fails_at_composition(override, message):
    load_app("prematch")
    with pytest.raises(ConfigCompositionException) as error:
        compose_with(REPO / "conf", "prematch", ["corpus_dir=c", "out_dir=o", override])
    assert message in f"{error.value} {error.value.__cause__}"


def test_the_yaml_files_are_deltas_over_the_schema(tmp_path):
    app = load_app("train")
    config = app.to_config(compose_with(REPO / "conf", "train", TRAIN_PATHS + ["mel.fmax_hz=7000"]))
    assert config.mel.fmax_hz == 7000.0 and config.mel.n_mels == 80  # the frozen MelConfig stays overridable
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    with open(conf / "data" / "auto.yaml", "a", encoding="utf-8") as handle:
        handle.write("segment_sise: 3200\n")
    with pytest.raises(ConfigCompositionException) as error:
        compose_with(conf, "train", TRAIN_PATHS)
    assert "segment_sise" in f"{error.value} {error.value.__cause__}"


def test_evaluate_ablations_compose_without_a_search_path():
    app = load_app("evaluate")
    cfg = compose_with(REPO / "conf", "evaluate", ["sources_dir=s", "targets_dir=t", "out_dir=o", "ablations=knnvc"])
    settings = app.settings_from_config(cfg, Path("o"))
    assert settings.system == "kNN-VC" and settings.expect_vocoder_kind == "knnvc"
    assert settings.vocoder == "knnvc-prematched" and settings.match.pitch_shift is None
    assert settings.plot_examples == 2 and settings.match.precision == "float64"
    with pytest.raises(ConfigCompositionException) as error:
        compose_with(REPO / "conf", "evaluate", ["sources_dir=s", "targets_dir=t", "out_dir=o", "asr.beam=20"])
    assert "Key 'beam' not in 'AsrConfig'" in f"{error.value} {error.value.__cause__}"


# -- official vocoder config -------------------------------------------------------------------------


def test_an_official_config_json_round_trips_through_hifigan_config(official, tmp_path):
    source = tmp_path / "config_v1_wavlm.json"
    source.write_text(json.dumps(official, indent=1))
    config = HiFiGANConfig.from_json(source)
    assert not hasattr(config, "batch_size") and config.extra["batch_size"] == 16  # kept, not a field
    assert set(config.architecture_dict()) == {
        "resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
        "resblock_kernel_sizes", "resblock_dilation_sizes", "n_harmonic", "with_amp_ratio", "with_harm",
        "hubert_dim", "hifi_dim",
    }  # fmt: skip
    assert config.architecture_dict() == HiFiGANConfig().architecture_dict()
    assert list(config.to_dict().items()) == list(official.items())  # same keys, values and order
    copy = tmp_path / "copy.json"
    config.to_json(copy)
    assert list(json.loads(copy.read_text()).items()) == list(official.items())

    knnvc = json.loads((GOLDEN / "vocoder_knnvc_tiny_config.json").read_text())  # no excitation-branch keys
    written = HiFiGANConfig.from_dict(knnvc).to_dict()
    assert [(key, written[key]) for key in written if key in knnvc] == list(knnvc.items())
    assert HiFiGANConfig.from_dict(written) == HiFiGANConfig.from_dict(knnvc)


def test_a_default_run_writes_the_official_training_values(official):
    config = TrainConfig(out_dir="o", data=DataConfig(corpus_dir="c", features_dir="f"))
    used = official_training_values(config, world_size=1, device=torch.device("cpu"))
    checked = {key: value for key, value in used.items() if key not in UNCHECKED_OFFICIAL_KEYS}
    assert checked == {key: official[key] for key in checked}
    written = HiFiGANConfig.from_dict({**HiFiGANConfig().to_dict(), **used}).to_dict()
    assert list(written) == [key for key in official if key in written]  # the official key order
    assert set(official) - set(written) == {
        "special_comment", "dspgan_upsample_rates", "dspgan_upsample_kernel_sizes",
        "hubert_dim_", "hubert_dim__", "hubert_dim_old", "num_freq",
    }  # fmt: skip


def test_checkpoints_with_the_old_vocoder_dict_still_resume(official, tmp_path):
    config = TrainConfig(out_dir="o", data=DataConfig(corpus_dir="c", features_dir="f")).to_dict()
    old_state = {"train_config": dict(config), "vocoder": {**official, "batch_size": 2, "learning_rate": 1e-3}}
    check_resumable(old_state, tmp_path / "do_00000010.pt", config, HiFiGANConfig())
    narrow = HiFiGANConfig(upsample_initial_channel=256)
    with pytest.raises(ValueError, match="another vocoder architecture.*upsample_initial_channel"):
        check_resumable(old_state, tmp_path / "do_00000010.pt", config, narrow)
    with pytest.raises(ValueError, match="generator='harmonic'.*generator='sine'"):
        check_resumable(old_state, tmp_path / "do_00000010.pt", {**config, "generator": "sine"}, HiFiGANConfig())
