"""Vocoder training, above the converter: prematching, corpus and split lists, dataset, GAN step,
checkpoints, the trainer.

Modules, bottom to top (each imports only those before it, and the layers below):

- ``features.py``     the prematched feature-file format (no WavLM, no matching)
- ``corpus.py``       corpus scan into pool groups, split lists (CSV), ``make_splits``
- ``dataset.py``      ``VocoderDataset`` and ``EpochSampler`` (no WavLM, no matching)
- ``prematch.py``     ``Prematcher``: runs the converter's matching over a corpus
- ``gan.py``          one HiFi-GAN update, optimisers, autocast
- ``checkpoints.py``  official ``g_``/``do_`` files, resume state, RNG state, best generator
- ``distributed.py``  ``torchrun`` process-group helpers
- ``trainer.py``      ``TrainConfig``, ``Trainer``, ``train()``

Nothing is imported here, so loading training data never imports WavLM or the converter.
"""
