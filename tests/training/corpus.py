"""The training tests' shared data: a tiny synthetic singing corpus (`knnsvc.synthetic.write_corpus`) and
its prematched features, made once per session with the tiny golden WavLM.
"""

from __future__ import annotations

from pathlib import Path

from knnsvc.synthetic import write_corpus as make_corpus  # noqa: F401  (the tests' name for it)

WAVLM_TINY = Path(__file__).parents[1] / "golden" / "wavlm_tiny.pt"
VOCODER_TINY_CONFIG = Path(__file__).parents[1] / "golden" / "vocoder_tiny_config.json"
_PREMATCHED: dict[str, Path] = {}


def tiny_encoder():
    """The tiny WavLM of the goldens as a layer-6 encoder on the CPU."""
    from knnsvc.checkpoints import load_wavlm
    from knnsvc.encoder import WavLMEncoder

    return WavLMEncoder(load_wavlm(str(WAVLM_TINY), device="cpu"))


def prematched_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus_dir, features_dir) of a 3-singer x 3-utterance corpus, prematched once per session.

    Shared between test modules: treat both folders as read-only.
    """
    if "root" not in _PREMATCHED:
        from knnsvc.training.prematch import PrematchConfig, Prematcher

        root = tmp_path_factory.mktemp("prematched")
        make_corpus(root / "corpus", n_speakers=3, n_utterances=3, seconds=1.2)
        config = PrematchConfig(
            corpus_dir=str(root / "corpus"),
            out_dir=str(root / "features"),
            wavlm=str(WAVLM_TINY),
            device="cpu",
            progress=False,
        )
        Prematcher(config, tiny_encoder()).run()
        _PREMATCHED["root"] = root
    root = _PREMATCHED["root"]
    return root / "corpus", root / "features"
