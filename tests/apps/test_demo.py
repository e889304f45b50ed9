"""`knnsvc-demo` on the golden tiny checkpoints: the engine, the served API, and the page in Chromium.

The server runs as the user starts it (``python -m knnsvc.demo`` in a subprocess, on a free
localhost port); the API is called with `gradio_client`, and the page is driven in Debian's headless
Chromium through Selenium with the system chromedriver (no driver download).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc import checkpoints
from knnsvc.apps import demo
from knnsvc.apps.demo import Controls, DemoEngine
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.pipeline import KnnSvc
from tests.conftest import sung_vowel

GOLDEN = Path(__file__).parents[1] / "golden"
WAVLM = str(GOLDEN / "wavlm_tiny.pt")
HARMONIC = str(GOLDEN / "vocoder_harmonic_tiny.pt")
TINY_CONFIG = GOLDEN / "vocoder_tiny_config.json"
SOURCE_SECONDS = 1.53  # not a whole number of frames: the output is 320 * (L // 320) samples
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
SERVER_START_SECONDS = 180


def expected_samples(path: Path) -> int:
    """320 samples per WavLM frame of the source (one 30 s chunk: L // 320 frames)."""
    return sf.info(str(path)).frames // HOP_LENGTH * HOP_LENGTH


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    """A sung source, a 2 s reference, a too-short reference, an unvoiced source, a non-audio file."""
    folder = tmp_path_factory.mktemp("demo_audio")
    rng = np.random.default_rng(5)
    clips = {
        "source": sung_vowel(SOURCE_SECONDS, 262.0, seed=1).numpy(),
        "reference": sung_vowel(2.0, 196.0, seed=2).numpy(),
        "short": sung_vowel(0.4, 196.0, seed=3).numpy(),
        "noise": (0.3 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32),
    }
    paths = {}
    for name, wav in clips.items():
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], wav, SAMPLE_RATE)
    paths["text"] = folder / "notes.wav"
    paths["text"].write_text("not audio")
    return paths


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> DemoEngine:
    work = tmp_path_factory.mktemp("demo_work")
    return DemoEngine(WAVLM, HARMONIC, TINY_CONFIG, torch.device("cpu"), work)


# ----------------------------------------------------------------------------------- engine
def test_controls_give_the_cli_settings():
    controls = Controls(vocoder=HARMONIC)
    config = controls.match_config()
    assert (config.pitch_shift, config.concat_weight, config.optimise_weights, config.topk) == ("auto", 0.2, True, 4)
    assert Controls(vocoder=HARMONIC, pitch_mode="semitones", semitones=-3).pitch_shift() == -3.0
    assert Controls(vocoder=HARMONIC, pitch_mode="auto-octave").pitch_shift() == "auto-octave"
    assert Controls(vocoder=HARMONIC, pitch_mode="none").pitch_shift() is None
    off = Controls(vocoder=HARMONIC, post_opt=False, topk=8.0).match_config()
    assert (off.concat_weight, off.optimise_weights, off.topk) == (None, False, 8)
    with pytest.raises(ValueError, match="pitch shift mode"):
        Controls(vocoder=HARMONIC, pitch_mode="up").pitch_shift()
    with pytest.raises(ValueError, match="whole number"):
        Controls(vocoder=HARMONIC, topk=2.5).match_config()
    with pytest.raises(ValueError, match="topk"):
        Controls(vocoder=HARMONIC, topk=40).match_config()


def test_vocoder_choices_offer_the_releases_and_the_command_line_checkpoint(engine):
    values = [value for _, value in engine.vocoder_choices()]
    assert values[0] == HARMONIC
    assert {"knnsvc-singing", "knnsvc-speech", "knnvc-prematched", "knnvc"} <= set(values)
    assert "wavlm-large" not in values


@pytest.mark.slow
def test_engine_converts_and_reuses_models_and_pools(engine, audio, tmp_path, monkeypatch):
    engine.converter(Controls(vocoder=HARMONIC))  # as main() does at start
    monkeypatch.setattr(checkpoints, "load_wavlm", lambda *a, **k: pytest.fail("the encoder was loaded twice"))
    monkeypatch.setattr(checkpoints, "load_vocoder", lambda *a, **k: pytest.fail("the vocoder was loaded twice"))
    encoded: list[str] = []
    original = KnnSvc.reference_pool

    def counting(self, wav_16k, name="", **options):
        encoded.append(name)
        return original(self, wav_16k, name, **options)

    monkeypatch.setattr(KnnSvc, "reference_pool", counting)
    singer = tmp_path / "first_upload" / "singer.wav"  # audio no other test uses: not in the cache yet
    singer.parent.mkdir()
    sf.write(singer, sung_vowel(2.0, 196.0, seed=11).numpy(), SAMPLE_RATE)

    result = engine.convert(audio["source"], [singer], Controls(vocoder=HARMONIC))
    wav, rate = sf.read(result.wav_path, dtype="float32")
    info = sf.info(str(result.wav_path))
    assert rate == SAMPLE_RATE and result.wav_path.suffix == ".wav" and (info.format, info.subtype) == ("WAV", "PCM_16")
    assert wav.shape == (expected_samples(audio["source"]),) == (HOP_LENGTH * result.num_frames,)
    assert result.f0_plot.read_bytes()[:8] == result.provenance_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"pitch shift {result.semitones:+.2f} semitones" in result.summary and " converted in " in result.summary
    assert result.semitones == pytest.approx(12 * np.log2(196 / 262), abs=0.3)

    again = tmp_path / "second_upload" / "singer.wav"  # the same recording uploaded again
    again.parent.mkdir()
    shutil.copy(singer, again)
    fixed = engine.convert(audio["source"], [again], Controls(vocoder=HARMONIC, pitch_mode="semitones", semitones=3,
                                                              output_f0=False))
    assert fixed.semitones == 3.0 and "pitch shift +3.00 semitones" in fixed.summary
    assert encoded == [str(singer)], "the second upload was encoded again"


@pytest.mark.parametrize(
    ("source", "references", "controls", "message"),
    [
        (None, ["reference"], {}, "no source"),
        ("source", [], {}, "no reference"),
        ("source", ["short"], {}, r"too short: 0\.40 s \(20 frames\)"),
        ("source", ["text"], {}, "^notes.wav: "),
        ("text", ["reference"], {}, "^notes.wav: "),
        ("noise", ["reference"], {}, "^noise.wav: no voiced frame"),
        ("source", ["noise"], {}, "reference has no voiced frame"),
        ("source", ["reference"], {"topk": 0}, "topk"),
        ("source", ["reference"], {"f0": "crepe"}, "unknown F0 extractor"),
        ("source", ["reference"], {"vocoder": "missing.pt"}, "missing.pt: checkpoint file not found"),
    ],
)
def test_engine_refuses_bad_input_in_one_line(engine, audio, source, references, controls, message):
    with pytest.raises(ValueError, match=message) as err:
        engine.convert(audio[source] if source else None, [audio[r] for r in references],
                       Controls(**{"vocoder": HARMONIC, **controls}))
    assert "\n" not in str(err.value)


def test_an_unvoiced_source_converts_without_automatic_shift(engine, audio):
    result = engine.convert(audio["noise"], [audio["reference"]], Controls(vocoder=HARMONIC, pitch_mode="none"))
    assert sf.info(str(result.wav_path)).frames == expected_samples(audio["noise"])
    assert result.semitones == 0.0


@pytest.mark.slow
def test_command_line_refuses_bad_options_checkpoints_and_ports(tmp_path, caplog):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--port", "70000"])
    assert exit_info.value.code == 2
    assert demo.main(["--wavlm", str(tmp_path / "nothing.pt"), "--vocoder", HARMONIC]) == 1
    assert "nothing.pt: checkpoint file not found" in caplog.text
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert demo.main(["--port", str(port), "--wavlm", WAVLM, "--vocoder", HARMONIC, "--vocoder-config",
                          str(TINY_CONFIG), "--device", "cpu"]) == 1
    assert f"cannot serve on 127.0.0.1:{port}" in caplog.text


def test_semitone_range_is_the_command_line_range():
    from knnsvc.config import MAX_SHIFT_SEMITONES

    assert Controls(vocoder=HARMONIC, pitch_mode="semitones", semitones=-48).pitch_shift() == -48.0
    assert Controls(vocoder=HARMONIC, pitch_mode="semitones", semitones=MAX_SHIFT_SEMITONES).pitch_shift() == 48.0
    with pytest.raises(ValueError, match="within ±48"):
        Controls(vocoder=HARMONIC, pitch_mode="semitones", semitones=48.5).pitch_shift()
    pytest.importorskip("gradio")
    app = demo.build_app(DemoEngine(WAVLM, HARMONIC, TINY_CONFIG, torch.device("cpu"), Path("unused")))
    sliders = [block for block in app.blocks.values() if getattr(block, "elem_id", None) == "semitones"]
    assert [(s.minimum, s.maximum) for s in sliders] == [(-MAX_SHIFT_SEMITONES, MAX_SHIFT_SEMITONES)]


@pytest.mark.parametrize("block_seconds", [0.5, 1e306, -1, float("nan")])
def test_block_seconds_outside_the_command_line_range_is_refused(engine, audio, block_seconds):
    with pytest.raises(ValueError, match="block seconds must be 0 .*or in \\[1, 3600\\]") as err:
        engine.convert(audio["source"], [audio["reference"]], Controls(vocoder=HARMONIC, block_seconds=block_seconds))
    assert "\n" not in str(err.value)


def test_uploads_longer_than_the_cap_are_refused_quickly_before_any_model_loads(audio, tmp_path):
    """--max-duration: a long PCM upload is refused from its header, a long FLAC as soon as decoding
    passes the cap, and a 2 KB WAV whose header claims 1 Hz (1000 s of "audio") at once: one line each,
    before any model is loaded (the engine's checkpoints do not even exist)."""
    engine = DemoEngine(str(tmp_path / "no_wavlm.pt"), str(tmp_path / "no_vocoder.pt"), None, torch.device("cpu"),
                        tmp_path / "work", max_seconds=2.0)
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, sung_vowel(3.0, 220.0, seed=4).numpy(), SAMPLE_RATE)
    long_flac = tmp_path / "long.flac"
    sf.write(long_flac, sung_vowel(3.0, 220.0, seed=4).numpy(), SAMPLE_RATE)
    forged = tmp_path / "forged.wav"
    sf.write(forged, np.zeros(1000, dtype=np.int16), 8000, subtype="PCM_16")
    header = bytearray(forged.read_bytes())
    header[24:28] = (1).to_bytes(4, "little")  # sample rate 1 Hz
    header[28:32] = (2).to_bytes(4, "little")  # byte rate to match
    forged.write_bytes(bytes(header))
    cases = [(long_wav, [audio["reference"]], "long.wav: 3.0 s long, longer than the limit of 2 s"),
             (audio["source"], [long_flac], "long.flac: at least"),
             (forged, [audio["reference"]], "forged.wav: the header gives a sample rate of 1 Hz")]
    for source, references, message in cases:
        start = time.monotonic()
        with pytest.raises(ValueError) as err:
            engine.convert(source, references, Controls(vocoder=HARMONIC))
        assert time.monotonic() - start < 2.0
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "work" / "results").exists() or not any((tmp_path / "work" / "results").iterdir())


def test_engine_builds_with_the_one_builder_and_converts_with_the_one_file_conversion(audio, tmp_path, monkeypatch):
    calls: list[str] = []
    real_build, real_convert = checkpoints.build_converter, demo.convert_file
    monkeypatch.setattr(checkpoints, "build_converter", lambda *a, **k: calls.append("build") or real_build(*a, **k))
    monkeypatch.setattr(demo, "convert_file", lambda *a, **k: calls.append("convert") or real_convert(*a, **k))
    engine = DemoEngine(WAVLM, HARMONIC, TINY_CONFIG, torch.device("cpu"), tmp_path / "work")
    result = engine.convert(audio["source"], [audio["reference"]],
                            Controls(vocoder=str(GOLDEN / "vocoder_sine_tiny.pt"), pitch_mode="none",
                                     output_f0=False))
    assert calls == ["build", "convert"] and result.wav_path.is_file()
    with pytest.raises(ValueError, match="vocoder_knnvc_tiny.pt: the vocoder takes 64-dim features but the WavLM "
                                         ".*wavlm_tiny.pt produces 32-dim"):
        engine.convert(audio["source"], [audio["reference"]],
                       Controls(vocoder=str(GOLDEN / "vocoder_knnvc_tiny.pt"), pitch_mode="none"))


@pytest.mark.parametrize("device", ["mps", "meta", "xpu", "gpu"])
def test_unsupported_device_is_a_one_line_usage_error_before_anything_loads(device, capsys, monkeypatch):
    monkeypatch.setattr(checkpoints, "load_wavlm", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--device", device])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (f"knnsvc-demo: error: argument --device: unsupported device "
                                           f"'{device}' (use auto, cpu, cuda or cuda:N)")


def test_missing_gradio_is_reported_before_any_model_loads_or_downloads(monkeypatch, caplog):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real_find_spec(name, *a))
    for name in ("load_wavlm", "load_vocoder", "download_file", "build_converter"):
        monkeypatch.setattr(checkpoints, name, lambda *a, **k: pytest.fail("a model was loaded or downloaded"))
    assert demo.main(["--device", "cpu"]) == 1  # the default checkpoints: 1.26 GB to download otherwise
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ['the web demo: this needs the gradio package: pip install -e ".[demo]"']


def test_the_demo_imports_no_other_application_and_not_the_evaluation():
    code = ("import sys, knnsvc.apps.demo; print(sorted(m for m in sys.modules "
            "if m.startswith(('knnsvc.eval', 'knnsvc.apps.')) "
            "and m not in ('knnsvc.apps.common', 'knnsvc.apps.demo')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """``python -m knnsvc.demo`` on the tiny checkpoints, as a user starts it; yields its URL."""
    folder = tmp_path_factory.mktemp("demo_server")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(folder / "gradio")}
    log_path = folder / "server.log"
    command = [sys.executable, "-m", "knnsvc.demo", "--port", str(port), "--host", "127.0.0.1", "--wavlm", WAVLM,
               "--vocoder", HARMONIC, "--vocoder-config", str(TINY_CONFIG), "--device", "cpu",
               "--pool-cache", str(folder / "pools")]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   cwd=Path(__file__).parents[2])
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_SECONDS
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the demo exited with status {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not answer on {url} within {SERVER_START_SECONDS} s:\n"
                            f"{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"the demo did not stop cleanly on SIGTERM:\n{log_path.read_text()}"
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def convert_arguments(source: Path, references: list[Path], **changes: object) -> dict[str, object]:
    """The /convert endpoint's inputs, by name, with the page's defaults."""
    from gradio_client import handle_file

    defaults = Controls(vocoder=HARMONIC)
    arguments = {
        "source": handle_file(str(source)), "references": [handle_file(str(p)) for p in references],
        "vocoder": HARMONIC, "pitch_mode": defaults.pitch_mode, "semitones": defaults.semitones, "f0": defaults.f0,
        "post_opt": defaults.post_opt, "concat_weight": defaults.concat_weight, "topk": defaults.topk,
        "index_rate": defaults.index_rate, "protect": defaults.protect, "rms_mix": defaults.rms_mix,
        "block_seconds": defaults.block_seconds, "output_f0": defaults.output_f0,
    }
    arguments.update(changes)
    return arguments


@pytest.mark.slow
def test_api_converts_with_the_gradio_client(server, audio, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
    wav_path, f0_png, provenance_png, summary = client.predict(
        **convert_arguments(audio["source"], [audio["reference"]], pitch_mode="auto-semitone", rms_mix=0.5),
        api_name="/convert",
    )
    wav, rate = sf.read(wav_path, dtype="float32")
    assert rate == SAMPLE_RATE
    assert wav.shape == (expected_samples(audio["source"]),)
    assert np.abs(wav).max() > 0
    assert Path(f0_png).read_bytes()[:4] == Path(provenance_png).read_bytes()[:4] == b"\x89PNG"
    assert "pitch shift -5.00 semitones" in summary  # 262 Hz onto 196 Hz, rounded to whole semitones

    with pytest.raises(AppError, match="too short") as err:  # the controls left out take the page's defaults
        client.predict(source=handle_file(str(audio["source"])), references=[handle_file(str(audio["short"]))],
                       api_name="/convert")
    assert "Traceback" not in str(err.value)


# ----------------------------------------------------------------------------------- browser
@pytest.fixture
def browser(tmp_path) -> Iterator[object]:
    """Debian's headless Chromium, driven by the system chromedriver."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"the browser test needs Debian's chromium and chromedriver: {CHROMIUM_INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


TOAST = "[data-testid=toast-body]"
"""Gradio's message boxes (errors raised as gr.Error)."""

RESULT_AUDIO_JS = """
const audio = document.querySelector('#result audio');
if (!audio || !audio.currentSrc || !isFinite(audio.duration)) return null;
return {src: audio.currentSrc, duration: audio.duration};
"""


@pytest.mark.slow
def test_page_converts_in_a_real_browser(server, audio, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))  # Svelte re-renders
    browser.get(server)
    wait.until(lambda driver: driver.title == demo.PAGE_TITLE)
    wait.until(expected_conditions.element_to_be_clickable((By.ID, "convert")))
    assert "kNN-SVC singing voice conversion" in browser.find_element(By.ID, "heading").text
    for element in ("source", "references", "vocoder", "pitch-mode", "f0", "topk", "index-rate", "protect",
                    "rms-mix", "block-seconds", "result", "f0-plot", "provenance-plot"):
        assert browser.find_elements(By.ID, element), f"the page has no #{element}"

    def error_shown(text: str) -> str:
        """Wait for an error message in the page holding `text`, close it, and return it."""

        def close(driver) -> str | None:
            for toast in driver.find_elements(By.CSS_SELECTOR, TOAST):
                message = toast.text
                if text in message:
                    toast.find_element(By.CSS_SELECTOR, "[data-testid=toast-close]").click()
                    return message
            return None

        message = wait.until(close)
        wait.until(lambda driver: all(text not in t.text for t in driver.find_elements(By.CSS_SELECTOR, TOAST)))
        return message

    browser.find_element(By.ID, "convert").click()
    assert "upload or record" in error_shown("no source")

    browser.find_element(By.CSS_SELECTOR, "#source input[type=file]").send_keys(str(audio["source"]))
    browser.find_element(By.CSS_SELECTOR, "#references input[type=file]").send_keys(str(audio["short"]))
    uploaded = "#source a[href*='file='], #references a[href*='file=']"
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, uploaded)) == 2)
    browser.find_element(By.ID, "convert").click()
    assert "at least 0.64 s" in error_shown("the reference is too short")
    assert "Traceback" not in browser.page_source

    def semitones_shown() -> bool:  # read in one script: the slider is re-rendered as it is shown
        return browser.execute_script("return document.getElementById('semitones')?.checkVisibility() ?? false")

    assert not semitones_shown()
    radio = "//*[@id='pitch-mode']//label[normalize-space()='{}']"
    browser.find_element(By.XPATH, radio.format("semitones")).click()
    wait.until(lambda driver: semitones_shown())
    browser.find_element(By.XPATH, radio.format("auto")).click()
    wait.until(lambda driver: not semitones_shown())

    # the real conversion: replace the reference, convert, and wait for the player
    browser.find_element(By.CSS_SELECTOR, "#references button[aria-label=Clear]").click()
    wait.until(lambda driver: not driver.find_elements(By.CSS_SELECTOR, "#references a[href*='file=']"))
    browser.find_element(By.CSS_SELECTOR, "#references input[type=file]").send_keys(str(audio["reference"]))
    wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#references a[href*='file=']"))
    browser.find_element(By.ID, "convert").click()
    player = wait.until(lambda driver: driver.execute_script(RESULT_AUDIO_JS))
    assert player["src"].startswith(server) and player["src"].endswith(".wav")
    assert player["duration"] == pytest.approx(expected_samples(audio["source"]) / SAMPLE_RATE, abs=1e-3)
    summary = wait.until(lambda driver: driver.find_element(By.CSS_SELECTOR, "#summary textarea").get_attribute(
        "value"))
    assert "pitch shift -5.03 semitones" in summary and " converted in " in summary
    images = browser.execute_script(
        "return ['#f0-plot img', '#provenance-plot img'].map(s => document.querySelector(s)?.naturalWidth || 0)")
    assert min(images) > 0, "a plot is missing"

    screenshot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
