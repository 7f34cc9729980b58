"""Portable bundles: one folder that traces clips on any machine, with no training data.

``bundle.json`` (format and version, known systems, embedding size), ``config.json``,
``weights.safetensors``, the open-set scorer of the training systems (``scorer.npz`` +
``scorer.json``), the calibrated "unknown" threshold with its operating point in words
(``threshold.json``), the enrolled systems (``enrolled.json``) and ``model_card.md`` /
``model_card.json``. Modules: ``files`` (format, atomic writes, lock), ``embedder`` (network and crops),
``model`` (``SourceTracer``), ``export`` (checkpoint -> bundle, model resolution), ``card``, ``onnx_export``.
"""
