"""Sweeps: ``spec`` (the sweep-file schema, ``TrialSpec``, validation before launch), ``run`` (Ray Tune),
``record`` (what a re-run or ``--resume`` reuses) and ``status`` (what became of each trial)."""

from sourcetrace.storage import RECORD  # a sweep folder's record, beside Tune's files

__all__ = ["RECORD"]
