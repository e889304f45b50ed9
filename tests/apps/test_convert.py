"""`python -m knnsvc.convert` end to end on the golden tiny checkpoints, plus every bad-input path."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc import synthetic
from knnsvc.apps import convert
from knnsvc.pipeline import DEFAULT_BLOCK_SECONDS, KnnSvc, MatchConfig

GOLDEN = Path(__file__).parents[1] / "golden"
WAVLM = str(GOLDEN / "wavlm_tiny.pt")
HARMONIC = str(GOLDEN / "vocoder_harmonic_tiny.pt")
SINE = str(GOLDEN / "vocoder_sine_tiny.pt")
KNNVC = str(GOLDEN / "vocoder_knnvc_tiny.pt")
TINY_CONFIG = str(GOLDEN / "vocoder_tiny_config.json")
SR = 16000


def tiny_args(*extra: str) -> list[str]:
    return ["--wavlm", WAVLM, "--vocoder", HARMONIC, "--vocoder-config", TINY_CONFIG, "-q", *extra]


def snr_db(estimate: np.ndarray, target: np.ndarray) -> float:
    return 10 * math.log10(float((target**2).sum()) / max(float(((estimate - target) ** 2).sum()), 1e-30))


def sung_vowel(seconds: float, f0_hz: float = 220.0, seed: int = 0) -> np.ndarray:
    """`knnsvc.synthetic.sung_vowel` as the numpy array these tests write to files."""
    return synthetic.sung_vowel(seconds, f0_hz, seed=seed).numpy()


@pytest.fixture(scope="module")
def golden_files(golden, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("golden_audio")
    paths = {"src": folder / "src.wav", "ref": folder / "ref.wav", "cache": folder / "pool_cache"}
    sf.write(paths["src"], golden["src_wav"].numpy(), SR, subtype="FLOAT")
    sf.write(paths["ref"], golden["ref_wav"].numpy(), SR, subtype="FLOAT")
    return paths


@pytest.fixture
def small(tmp_path: Path) -> dict[str, Path]:
    """A 1 s source and a 1 s reference (50 frames >= 32 candidates): fast runs."""
    paths = {"src": tmp_path / "in" / "src.wav", "ref": tmp_path / "singer" / "ref.wav", "out": tmp_path / "out"}
    for key, f0, seed in (("src", 262.0, 1), ("ref", 196.0, 2)):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        sf.write(paths[key], sung_vowel(1.0, f0, seed), SR)
    return paths


@pytest.fixture
def count_encodes(monkeypatch) -> list[int]:
    """Counts reference files encoded (cache misses) across CLI runs."""
    calls = [0]
    original = KnnSvc.reference_pool

    def counting(self, wav_16k, name="", **options):
        calls[0] += 1
        return original(self, wav_16k, name, **options)

    monkeypatch.setattr(KnnSvc, "reference_pool", counting)
    return calls


def error_lines(captured: str) -> list[str]:
    return [line for line in captured.splitlines() if line.startswith("ERROR")]


# --------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize(
    ("name", "flags", "vocoder", "golden_key"),
    [
        ("post_opt_0.2", ["--post-opt", "0.2"], HARMONIC, "y_harmonic"),
        ("no_post_opt", ["--no-post-opt"], HARMONIC, "y_harmonic"),
        ("no_post_opt", [], SINE, "y_sine"),
    ],
)
def test_cli_reproduces_golden_conversion(golden, golden_files, tmp_path, name, flags, vocoder, golden_key):
    out = tmp_path / "out.wav"
    args = [str(golden_files["src"]), str(golden_files["ref"]), "-o", str(out), "--wavlm", WAVLM,
            "--vocoder", vocoder, "--vocoder-config", TINY_CONFIG, "--precision", "float64",
            "--pool-cache", str(golden_files["cache"]), "-q", *flags]
    assert convert.main(args) == 0
    written, rate = sf.read(out, dtype="float64")
    expected = golden["conversions"][name][golden_key].double().numpy()
    assert rate == SR and sf.info(out).subtype == "PCM_32"
    assert written.shape == expected.shape
    assert snr_db(written, expected) >= 40.0
    # the three runs share one pool cache entry
    assert len(list(golden_files["cache"].glob("*.pt"))) == 1


def test_pool_cache_hits_and_invalidates(small, tmp_path, count_encodes):
    cache = tmp_path / "cache"
    run = lambda out, *extra: convert.main(  # noqa: E731
        [str(small["src"]), str(small["ref"]), "-o", str(small["out"] / out), "--pool-cache", str(cache),
         *tiny_args("--no-post-opt", *extra)])
    assert run("a.wav") == 0 and count_encodes[0] == 1
    assert run("b.wav") == 0 and count_encodes[0] == 1  # hit
    assert run("c.wav", "--topk", "2") == 0 and count_encodes[0] == 1  # matching settings do not enter
    assert np.allclose(sf.read(small["out"] / "a.wav")[0], sf.read(small["out"] / "b.wav")[0])

    sf.write(small["ref"], sung_vowel(1.0, 200.0, seed=3), SR)  # new audio bytes
    assert run("d.wav") == 0 and count_encodes[0] == 2

    other_wavlm = tmp_path / "wavlm_other.pt"  # different encoder weights
    ckpt = torch.load(WAVLM, weights_only=True)
    ckpt["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, other_wavlm)
    assert run("e.wav", "--wavlm", str(other_wavlm)) == 0 and count_encodes[0] == 3
    assert len(list(cache.glob("*.pt"))) == 3


# --------------------------------------------------------------------------- batches and outputs
def test_folder_batch_mirrors_tree_and_survives_bad_files(small, tmp_path, capsys):
    src = tmp_path / "batch"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "good.wav", sung_vowel(0.6, 300.0, 4), SR)
    sf.write(src / "sub" / "good2.flac", sung_vowel(0.6, 250.0, 5), SR)
    (src / "text.wav").write_text("this is not audio")
    sf.write(src / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(src / "silent.wav", np.zeros(SR, np.float32), SR)
    sf.write(src / "noise.wav", (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32), SR)
    sf.write(src / "tiny.wav", sung_vowel(0.01), SR)
    (src / "notes.txt").write_text("ignored: not an audio suffix")
    out = tmp_path / "converted"

    status = convert.main([str(src), str(small["ref"]), "-o", str(out), *tiny_args()])

    assert status == 1
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert produced == ["good.wav", "sub/good2.wav"]
    assert sf.info(out / "good.wav").frames == (round(0.6 * SR) // 320) * 320
    errors = error_lines(capsys.readouterr().err)
    for bad in ("text.wav", "empty.wav", "silent.wav", "noise.wav", "tiny.wav"):
        matching = [line for line in errors if str(src / bad) in line]
        assert len(matching) == 1, (bad, errors)
    assert any("no voiced frames" in line and "noise.wav" in line for line in errors)
    assert any("silent" in line and "silent.wav" in line for line in errors)


def test_default_output_names_never_write_into_the_input_folder(small, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    jobs = convert.plan_jobs(small["src"], small["ref"], None)
    assert [j.output for j in jobs] == [work / "src_to_ref.wav"]
    jobs = convert.plan_jobs(small["src"].parent, small["ref"].parent, None)
    assert [j.output for j in jobs] == [work / "in_to_singer" / "src.wav"]
    assert convert.plan_jobs(small["src"], small["ref"], tmp_path / "x.flac")[0].output == tmp_path / "x.flac"
    assert convert.plan_jobs(small["src"], small["ref"], work)[0].output == work / "src_to_ref.wav"
    assert convert.plan_jobs(small["src"], small["ref"], Path("new_dir/"))[0].output.name == "src_to_ref.wav"


def test_never_overwrites_without_flag(small, capsys):
    """An existing output is skipped (reported, not an error: a rerun finishes a batch)."""
    target = small["out"] / "result.wav"
    target.parent.mkdir()
    target.write_bytes(b"keep me")
    args = [str(small["src"]), str(small["ref"]), "-o", str(target), *tiny_args("--no-post-opt")]
    assert convert.main(args) == 0
    assert target.read_bytes() == b"keep me"
    err = capsys.readouterr().err
    assert error_lines(err) == []
    [line] = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert "skipped" in line and "already exists" in line and "--overwrite" in line
    assert convert.main([*args, "--overwrite"]) == 0
    assert sf.info(target).frames == 50 * 320
    assert [p.name for p in target.parent.iterdir()] == ["result.wav"]  # no temporary leftovers


def test_refuses_to_replace_an_input(small, capsys):
    args = [str(small["src"]), str(small["ref"]), "-o", str(small["src"]), "--overwrite", *tiny_args()]
    before = small["src"].read_bytes()
    assert convert.main(args) == 1
    assert small["src"].read_bytes() == before
    assert "would replace an input" in error_lines(capsys.readouterr().err)[0]


def test_options_reach_the_converter(small, monkeypatch):
    seen = {}

    def fake_convert_file(converter, pool, source, output, options, progress):
        seen.update(config=converter.config, loudness=options.loudness, kind=converter.kind,
                    block_seconds=converter.block_seconds, f0=converter.f0.name)
        return SimpleNamespace(describe=lambda uses_pitch: "fake")

    monkeypatch.setattr(convert, "convert_file", fake_convert_file)
    args = [str(small["src"]), str(small["ref"]), "-o", str(small["out"] / "x.wav"), *tiny_args(
        "--pitch-shift", "-3.5", "--topk", "3", "--precision", "float32", "--loudness", "-20", "--post-opt", "0.5",
        "--index-rate", "0.75", "--protect", "0.2", "--rms-mix", "0.5", "--block-seconds", "12", "--f0", "dio")]
    assert convert.main(args) == 0
    config = seen["config"]
    assert (config.pitch_shift, config.topk, config.precision, config.concat_weight, config.optimise_weights) == (
        -3.5, 3, "float32", 0.5, True)
    assert (config.index_rate, config.protect, config.rms_mix) == (0.75, 0.2, 0.5)
    assert (seen["loudness"], seen["block_seconds"], seen["f0"]) == (-20.0, 12.0, "dio")
    assert convert.main([*args[:4], *tiny_args("--pitch-shift", "auto-octave")]) == 0
    assert seen["config"].pitch_shift == "auto-octave"
    defaults = MatchConfig()
    assert convert.main([*args[:4], *tiny_args()]) == 0
    assert seen["config"] == defaults and seen["block_seconds"] == DEFAULT_BLOCK_SECONDS
    assert convert.main([*args[:4], *tiny_args("--no-post-opt", "--pitch-shift", "none")]) == 0
    assert seen["config"].concat_weight is None and not seen["config"].optimise_weights
    assert seen["config"].pitch_shift is None


def test_loudness_option_sets_output_loudness(small):
    pyloudnorm = pytest.importorskip("pyloudnorm")
    out = small["out"] / "loud.wav"
    args = [str(small["src"]), str(small["ref"]), "-o", str(out), *tiny_args("--no-post-opt", "--loudness", "-23")]
    assert convert.main(args) == 0
    wav, rate = sf.read(out)
    measured = pyloudnorm.Meter(rate).integrated_loudness(wav)
    assert abs(measured - -23) < 0.5 or np.abs(wav).max() >= 0.999  # peak limiting may cap it


# --------------------------------------------------------------------------- bad references and checkpoints
def _single_error(capsys) -> str:
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("make_ref", "problem"),
    [
        (lambda p: sf.write(p, sung_vowel(0.5), SR), "too short"),
        (lambda p: sf.write(p, (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32), SR),
         "no voiced frames"),
        (lambda p: sf.write(p, np.zeros(SR, np.float32), SR), "silent"),
        (lambda p: p.write_text("not audio"), "not a readable audio file"),
    ],
    ids=["shorter-than-candidates", "all-unvoiced", "silent", "not-audio"],
)
def test_bad_reference_fails_cleanly(small, tmp_path, capsys, make_ref, problem):
    ref = tmp_path / "bad_ref.wav"
    make_ref(ref)
    out = small["out"] / "x.wav"
    assert convert.main([str(small["src"]), str(ref), "-o", str(out), *tiny_args()]) == 1
    line = _single_error(capsys)
    assert problem in line and str(ref) in line
    assert not small["out"].exists()


def test_bad_file_in_reference_folder_is_left_out_and_reported(small, capsys):
    bad = small["ref"].parent / "broken.ogg"
    bad.write_bytes(b"OggS but not really")
    out = small["out"] / "x.wav"
    assert convert.main([str(small["src"]), str(small["ref"].parent), "-o", str(out), *tiny_args()]) == 1
    assert sf.info(out).frames == 50 * 320
    errors = error_lines(capsys.readouterr().err)
    assert len([line for line in errors if str(bad) in line and "left out of the reference" in line]) == 1


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--vocoder", "no-such-vocoder"], "unknown checkpoint name 'no-such-vocoder'"),
        (["--vocoder", WAVLM], "WavLM encoder checkpoint, not a vocoder"),
        (["--wavlm", HARMONIC], "vocoder checkpoint, not a WavLM"),
        (["--wavlm", "knnsvc-singing"], "is a vocoder checkpoint"),
        (["--vocoder", "/nowhere/g_000.pt"], "checkpoint file not found"),
        (["--vocoder", KNNVC, "--vocoder-config", str(GOLDEN / "vocoder_knnvc_tiny_config.json")],
         "takes 64-dim features but the WavLM"),
    ],
)
def test_bad_checkpoint_fails_with_one_line(small, capsys, flags, problem):
    out = small["out"] / "x.wav"
    assert convert.main([str(small["src"]), str(small["ref"]), "-o", str(out), *tiny_args(*flags)]) == 1
    assert problem in _single_error(capsys)
    assert not out.exists()


def test_missing_inputs_and_usage(small, tmp_path, capsys):
    assert convert.main([str(tmp_path / "nope.wav"), str(small["ref"]), *tiny_args()]) == 1
    assert "nope.wav: no such file or folder" in _single_error(capsys)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert convert.main([str(small["src"]), str(empty), *tiny_args()]) == 1
    assert "no audio files" in _single_error(capsys)
    usage_errors = (["--pitch-shift", "up"], ["--topk", "40"], ["--topk", "0"], ["--post-opt", "0.1", "--no-post-opt"],
                    ["--pitch-shift", "nan"], ["--pitch-shift", "inf"], ["--pitch-shift", "1000"], ["--post-opt", "-1"],
                    ["--post-opt", "nan"], ["--loudness", "inf"], ["--loudness", "5"], ["--index-rate", "1.5"],
                    ["--protect", "0.7"], ["--rms-mix", "-0.1"], ["--block-seconds", "-3"], ["--f0", "crepe"])
    for bad_usage in usage_errors:
        with pytest.raises(SystemExit) as exit_info:
            convert.main([str(small["src"]), str(small["ref"]), *bad_usage])
        assert exit_info.value.code == 2
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_info:
            convert.main([str(small["src"]), str(small["ref"]), "--device", "cuda"])
        assert exit_info.value.code == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_knnvc_vocoder_needs_no_voicing(small, tmp_path):
    """kNN-VC vocoders ignore pitch, so an unvoiced source and reference are fine for them."""
    cfg = torch.load(WAVLM, weights_only=True)["cfg"]
    cfg = {**cfg, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128}
    from knnsvc.hub import wavlm_large

    wavlm_64 = tmp_path / "wavlm_64.pt"
    torch.save({"cfg": cfg, "model": wavlm_large(pretrained=False, config=cfg, device="cpu").state_dict()}, wavlm_64)
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.1 * np.random.default_rng(2).standard_normal(SR)).astype(np.float32), SR)
    out = tmp_path / "out.wav"
    args = [str(noise), str(noise), "-o", str(out), "--wavlm", str(wavlm_64), "--vocoder", KNNVC,
            "--vocoder-config", str(GOLDEN / "vocoder_knnvc_tiny_config.json"), "-q"]
    assert convert.main(args) == 0
    assert sf.info(out).frames == 50 * 320


def test_list_checkpoints(capsys):
    assert convert.main(["--list-checkpoints"]) == 0
    out = capsys.readouterr().out
    for name in ("wavlm-large", "knnsvc-singing", "knnsvc-speech", "knnvc-prematched", "knnvc"):
        assert name in out
    assert "g_00810000_opensinger_mix_harm_no_amp_0.552.pt" in out


def test_module_entry_point_runs(small):
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "knnsvc.convert", "--list-checkpoints"], capture_output=True,
                          text=True, env=env, check=False)
    assert done.returncode == 0 and "knnsvc-singing" in done.stdout


def test_readme_offline_example_converts_the_shipped_recordings(tmp_path):
    """README command 1's offline variant: the example recordings with the tiny checkpoints."""
    examples = Path(__file__).parents[2] / "examples"
    out = tmp_path / "converted.wav"
    assert convert.main([str(examples / "source.wav"), str(examples / "target_singer"), "-o", str(out),
                         "--wavlm", WAVLM, "--vocoder", HARMONIC, "-q"]) == 0
    assert sf.info(out).frames == sf.info(examples / "source.wav").frames // 320 * 320
