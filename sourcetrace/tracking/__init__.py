"""MLflow tracking: ``store`` (where runs go, reading and writing them; no Ray) and ``callback`` (the Tune
callback that logs one run per trial)."""
