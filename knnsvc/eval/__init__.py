"""Evaluation protocol: one module per metric family, each a function plus a batch runner.

    speaker.py          speaker similarity (cosine) and per-target-speaker EER (spec §13.1)
    intelligibility.py  WER / CER with a pluggable ASR and the reference's text normalisation
    pitch_accuracy.py   F0 RMSE (cents), voicing error, F0 correlation vs the key-shifted source
    quality.py          non-intrusive MOS prediction (DNSMOS)
    speed.py            per-stage seconds, real-time factor, peak RSS / CUDA memory
    report.py           metrics.json, per-utterance CSV, the paper's Table 1 as Markdown
    dataset.py          speaker-folder sets, the reference's pair lists, per-item problem reports
    suite.py            runs the metric families over converted files (the registry `METRICS`)
    experiment.py       one evaluation run: cached conversions, metrics, reports, figures
                        (the figures are drawn by `knnsvc.plots`, shared with the web demo)
    sweep.py            gathers a sweep's runs into one table and metric-vs-setting curves
    score.py            `python -m knnsvc.eval.score`: the `knnsvc-score` command (`knnsvc.apps.score`)

Heavy packages (resemblyzer, faster-whisper, speechmos, matplotlib) are imported only when the
metric that needs them is computed, so ``import knnsvc.eval`` stays cheap.
"""

METRIC_KEYS = (
    "sim",
    "eer",
    "wer",
    "cer",
    "f0_rmse_cents",
    "vuv_error",
    "f0_corr",
    "dnsmos",
    "rtf",
    "peak_rss_gb",
)
"""Keys every summary (``metrics.json``, the score command's JSON) carries; None = not computable."""
