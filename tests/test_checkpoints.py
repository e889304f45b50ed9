"""Release table, download-once caching, the offline message, safe and strict checkpoint loading."""

from __future__ import annotations

import functools
import http.server
import json
import pickle
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from hifigan.generator import VocoderKind
from knnsvc import checkpoints
from knnsvc.checkpoints import CheckpointError, Release

GOLDEN = Path(__file__).parent / "golden"
WAVLM = GOLDEN / "wavlm_tiny.pt"
VOCODERS = {
    VocoderKind.HARMONIC: GOLDEN / "vocoder_harmonic_tiny.pt",
    VocoderKind.SINE: GOLDEN / "vocoder_sine_tiny.pt",
    VocoderKind.KNNVC: GOLDEN / "vocoder_knnvc_tiny.pt",
}


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, so nothing leaks into (or is read from) the user's."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def golden_server():
    """An HTTP server on 127.0.0.1 serving tests/golden/ (a stand-in for the release host)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(GOLDEN))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def local_release(monkeypatch, golden_server) -> Release:
    """'wavlm-large' pointing at the tiny golden checkpoint on the local server."""
    release = Release("wavlm-large", golden_server + WAVLM.name, "wavlm", None, "tiny stand-in")
    monkeypatch.setitem(checkpoints.RELEASES, "wavlm-large", release)
    return release


def test_release_table_has_the_public_files():
    urls = {name: release.url for name, release in checkpoints.RELEASES.items()}
    knnvc = "https://github.com/bshall/knn-vc/releases/download/v0.1/"
    knnsvc = "https://github.com/SmoothKen/knn-svc/releases/download/abracadabra/"
    assert urls == {
        "wavlm-large": knnvc + "WavLM-Large.pt",
        "knnsvc-singing": knnsvc + "g_00810000_opensinger_mix_harm_no_amp_0.552.pt",
        "knnsvc-speech": knnsvc + "g_00898000_mix_harm_no_amp_0.633333.pt",
        "knnvc-prematched": knnvc + "prematch_g_02500000.pt",
        "knnvc": knnvc + "g_02500000.pt",
    }
    assert checkpoints.DEFAULT_VOCODER == "knnsvc-singing" and checkpoints.DEFAULT_WAVLM == "wavlm-large"
    assert {r.vocoder_kind for r in checkpoints.RELEASES.values() if r.role == "vocoder"} == {
        VocoderKind.HARMONIC, VocoderKind.KNNVC}
    assert all(r.description for r in checkpoints.RELEASES.values())


def test_tiny_wavlm_loads_strictly_in_eval_mode():
    model = checkpoints.load_wavlm(WAVLM)
    state = torch.load(WAVLM, weights_only=True)["model"]
    assert not model.training
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k].float(), v.float()) for k, v in state.items())


@pytest.mark.parametrize("kind", list(VOCODERS))
def test_vocoders_load_with_kind_detected_and_weight_norm_folded(kind):
    detected, generator = checkpoints.load_vocoder(VOCODERS[kind], GOLDEN / "vocoder_tiny_config.json"
                                                   if kind != VocoderKind.KNNVC else None)
    assert detected == kind
    assert not generator.training
    assert not any(key.endswith(("weight_g", "weight_v")) for key in generator.state_dict())


def test_config_json_that_does_not_fit_is_one_clear_line():
    with pytest.raises(CheckpointError) as info:
        checkpoints.load_vocoder(VOCODERS[VocoderKind.HARMONIC], GOLDEN / "vocoder_knnvc_tiny_config.json")
    message = str(info.value)
    assert "\n" not in message and "vocoder_knnvc_tiny_config.json" in message and "shape" in message


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(CheckpointError) as info:
        checkpoints.load_vocoder("knnsvc-opera")
    message = str(info.value)
    assert "unknown checkpoint name 'knnsvc-opera'" in message
    assert all(name in message for name in checkpoints.RELEASES)


def test_wrong_role_is_refused_before_any_download(hub_dir, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(CheckpointError, match="'knnsvc-singing' is a vocoder checkpoint"):
        checkpoints.load_wavlm("knnsvc-singing")
    with pytest.raises(CheckpointError, match="'wavlm-large' is a WavLM encoder checkpoint"):
        checkpoints.load_vocoder("wavlm-large")


def test_wrong_kind_of_file():
    with pytest.raises(CheckpointError, match="vocoder checkpoint, not a WavLM"):
        checkpoints.load_wavlm(VOCODERS[VocoderKind.SINE])
    with pytest.raises(CheckpointError, match="WavLM encoder checkpoint, not a vocoder"):
        checkpoints.load_vocoder(WAVLM)
    with pytest.raises(CheckpointError, match="not a vocoder checkpoint"):
        checkpoints.load_vocoder(GOLDEN / "golden_pipeline.pt")


def test_corrupt_and_unsafe_files(tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(VOCODERS[VocoderKind.SINE].read_bytes()[:4000])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for path in (truncated, text):
        with pytest.raises(CheckpointError) as info:
            checkpoints.load_vocoder(path)
        expected = "not a readable PyTorch checkpoint (corrupt, truncated or another kind of file)"
        assert str(info.value) == f"{path}: {expected}"

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"generator": {}, "payload": Release("x", "u", "vocoder", None, "d")}, unsafe)
    with pytest.raises(CheckpointError, match="refused to load: the file holds pickled Python objects"):
        checkpoints.load_vocoder(unsafe)
    executable = tmp_path / "executable.pt"  # a pickle that would run a command if unpickled
    executable.write_bytes(b"cposix\nsystem\n(S'echo pwned'\ntR.")
    raw = tmp_path / "raw.pt"  # a plain pickle of an object, not PyTorch's format
    raw.write_bytes(pickle.dumps({"generator": Release("x", "u", "vocoder", None, "d")}, protocol=4))
    for path in (executable, raw):
        with pytest.raises(CheckpointError, match="refused to load: the file holds pickled Python objects"):
            checkpoints.load_vocoder(path)


def test_missing_path():
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        checkpoints.load_wavlm("/no/such/WavLM-Large.pt")


def test_release_is_downloaded_once_into_the_hub_cache(hub_dir, local_release, monkeypatch):
    calls = []
    real_download = checkpoints.download_file

    def counting(url, destination, **kwargs):
        calls.append((url, destination))
        return real_download(url, destination, **kwargs)

    monkeypatch.setattr(checkpoints, "download_file", counting)
    first = checkpoints.load_wavlm("wavlm-large", progress=False)
    second = checkpoints.load_wavlm("wavlm-large", progress=False)
    cached = hub_dir / "checkpoints" / "wavlm_tiny.pt"
    assert calls == [(local_release.url, cached)]
    assert cached.read_bytes() == WAVLM.read_bytes()
    assert torch.equal(first.mask_emb, second.mask_emb)


def test_offline_message_says_what_to_download_and_where(hub_dir, monkeypatch):
    """No route to the release host: one line naming the URL and the destination, within seconds."""
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = Release("knnsvc-singing", f"http://127.0.0.1:{port}/g_00810000.pt", "vocoder",
                          VocoderKind.HARMONIC, "unreachable")
    monkeypatch.setitem(checkpoints.RELEASES, "knnsvc-singing", unreachable)
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        checkpoints.load_vocoder("knnsvc-singing", progress=False)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert unreachable.url in message
    assert str(hub_dir / "checkpoints" / unreachable.filename) in message
    assert "refused" in message and "pass the path" in message
    assert not (hub_dir / "checkpoints" / unreachable.filename).exists()


def test_failed_real_download_leaves_no_partial_file(hub_dir, monkeypatch, golden_server):
    missing = Release("knnvc", golden_server + "gone.pt", "vocoder", VocoderKind.KNNVC, "missing")
    monkeypatch.setitem(checkpoints.RELEASES, "knnvc", missing)
    with pytest.raises(CheckpointError, match="cannot download 'knnvc'"):
        checkpoints.load_vocoder("knnvc", progress=False)
    leftovers = list((hub_dir / "checkpoints").glob("*")) if (hub_dir / "checkpoints").exists() else []
    assert leftovers == []


def test_describe_releases_lists_names_and_urls():
    text = checkpoints.describe_releases()
    for release in checkpoints.RELEASES.values():
        assert release.name in text and release.url in text


# ------------------------------------------------------------------------ the one converter builder
KNNVC_TINY32 = GOLDEN / "vocoder_knnvc_tiny32.pt"
KNNVC_TINY32_CONFIG = GOLDEN / "vocoder_knnvc_tiny32_config.json"
PAIRS = {
    VocoderKind.HARMONIC: (VOCODERS[VocoderKind.HARMONIC], GOLDEN / "vocoder_tiny_config.json"),
    VocoderKind.SINE: (VOCODERS[VocoderKind.SINE], GOLDEN / "vocoder_tiny_config.json"),
    VocoderKind.KNNVC: (KNNVC_TINY32, KNNVC_TINY32_CONFIG),
}


def _vowel(seconds: float, f0_hz: float) -> torch.Tensor:
    t = torch.arange(round(seconds * 16000), dtype=torch.float64) / 16000
    phase = 2 * torch.pi * torch.cumsum(f0_hz * (1 + 0.02 * torch.sin(2 * torch.pi * 5 * t)), 0) / 16000
    return sum(0.3 / k * torch.sin(k * phase) for k in range(1, 8)).float()


@pytest.mark.parametrize("kind", list(PAIRS))
def test_every_vocoder_kind_has_a_tiny_checkpoint_that_pairs_with_the_tiny_wavlm(kind):
    """The offline route (tiny WavLM + a tiny vocoder of each kind) builds and converts."""
    vocoder, config = PAIRS[kind]
    converter = checkpoints.build_converter(WAVLM, vocoder, config, f0="harvest", device="cpu", progress=False)
    assert converter.kind == kind
    out = converter.convert(_vowel(1.0, 220.0), converter.build_pool([_vowel(2.0, 180.0)]))
    assert out.shape == (16000,) and torch.isfinite(out).all() and out.abs().max() > 0


def test_the_tiny_knnvc_vocoder_is_what_its_script_makes_and_the_64_dim_one_does_not_pair():
    import runpy

    made = runpy.run_path(str(GOLDEN / "make_vocoder_knnvc_tiny32.py"))
    state = torch.load(KNNVC_TINY32, weights_only=True)["generator"]
    expected = made["tiny32_state"]()
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in state)
    assert json.loads(KNNVC_TINY32_CONFIG.read_text()) == made["tiny32_config"]()
    with pytest.raises(CheckpointError, match="64-dim features but the WavLM .* produces 32-dim"):
        checkpoints.build_converter(WAVLM, VOCODERS[VocoderKind.KNNVC], progress=False)


def test_builder_takes_loaded_models_and_applies_the_depth_rule():
    config = checkpoints.MatchConfig(match_layers=[8, 9])
    assert checkpoints.encoder_depth(config) == 9
    assert checkpoints.encoder_depth(checkpoints.MatchConfig()) == 6
    by_name = checkpoints.build_converter(WAVLM, PAIRS[VocoderKind.HARMONIC][0], PAIRS[VocoderKind.HARMONIC][1],
                                          config, progress=False)
    assert by_name.encoder.wavlm.num_layers == 9
    wavlm = checkpoints.load_wavlm(WAVLM, num_layers=9)
    vocoder = checkpoints.load_vocoder(*PAIRS[VocoderKind.SINE])
    built = checkpoints.build_converter(wavlm, vocoder, config=config, progress=False)
    assert built.encoder.wavlm is wavlm and built.vocoder is vocoder[1] and built.kind == VocoderKind.SINE
    with pytest.raises(CheckpointError, match="keeps 6 blocks, but these settings use layer 9"):
        checkpoints.build_converter(checkpoints.load_wavlm(WAVLM, num_layers=6), vocoder, config=config)
    with pytest.raises(ValueError, match="vocoder_config applies to a vocoder given by name or path"):
        checkpoints.build_converter(wavlm, vocoder, GOLDEN / "vocoder_tiny_config.json")
    knnvc64 = checkpoints.load_vocoder(VOCODERS[VocoderKind.KNNVC])
    with pytest.raises(CheckpointError, match="use a matching pair"):
        checkpoints.build_converter(wavlm, knnvc64, config=config)


def test_a_vocos_of_another_feature_width_is_refused_when_built_not_at_its_first_block(tmp_path):
    from hifigan.generator import build_generator, generator_file
    from hifigan.vocos import vocos_config

    wavlm = checkpoints.load_wavlm(WAVLM)
    for width, fits in ((wavlm.dim, True), (wavlm.dim + 8, False)):
        vocos = build_generator(VocoderKind.VOCOS, vocos_config(24_000, input_dim=width, dim=32,
                                                                 intermediate_dim=64, num_layers=1))
        path = tmp_path / f"vocos{width}.pt"
        torch.save(generator_file(vocos), path)
        if fits:
            assert checkpoints.build_converter(wavlm, path, progress=False).sample_rate == 24_000
        else:
            with pytest.raises(CheckpointError, match=f"takes {width}-dim features .* produces {wavlm.dim}-dim"):
                checkpoints.build_converter(wavlm, path, progress=False)


def test_builder_passes_workers_to_the_pitch_module_only_where_it_takes_them(monkeypatch):
    import inspect

    from knnsvc import pitch

    vocoder, config = PAIRS[VocoderKind.HARMONIC]
    with pytest.raises(ValueError, match="workers must be a whole number >= 1"):
        checkpoints.build_converter(WAVLM, vocoder, config, workers=0)
    if "workers" in inspect.signature(pitch.get_f0_extractor).parameters:
        seen = []
        real = pitch.get_f0_extractor

        def spy(name, device="cpu", workers=None):
            seen.append(workers)
            return real(name, device, workers=workers)

        monkeypatch.setattr(checkpoints, "get_f0_extractor", spy)
        checkpoints.build_converter(WAVLM, vocoder, config, workers=2, progress=False)
        assert seen == [2]
    else:
        with pytest.raises(ValueError, match="workers=2"):
            checkpoints.build_converter(WAVLM, vocoder, config, workers=2, progress=False)


@pytest.mark.parametrize("text, what", [("[1, 2]", "array"), ("3", "number"), ('"x"', "string"), ("null", "null")])
def test_vocoder_config_that_is_json_but_not_an_object_is_one_line(tmp_path, text, what):
    config = tmp_path / "config.json"
    config.write_text(text)
    with pytest.raises(CheckpointError) as info:
        checkpoints.load_vocoder(VOCODERS[VocoderKind.HARMONIC], config)
    message = str(info.value)
    assert "\n" not in message and str(config) in message
    assert f"expected a JSON object of HiFi-GAN settings, got a JSON {what}" in message
