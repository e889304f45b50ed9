"""torch.hub entry points of knnsvc: ``torch.hub.load("<owner>/knnsvc", "knn_svc")``.

The factories live in `knnsvc.hub` (usable without torch.hub); see their docstrings.
"""

dependencies = ["torch", "numpy", "scipy", "soundfile", "soxr", "pyworld", "tqdm", "pyloudnorm"]

from knnsvc.hub import hifigan_wavlm, knn_svc, knn_vc, wavlm_large  # noqa: E402,F401
