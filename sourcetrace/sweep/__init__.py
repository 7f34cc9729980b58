"""Sweeps: ``spec`` (the sweep-file schema, ``TrialSpec``, validation before launch) and ``run`` (Ray Tune)."""
