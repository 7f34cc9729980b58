"""The paper's Table-1 findings checked on a finished sweep: 95 % intervals over seeds, tests and verdicts.

``stats``: paired / Welch t tests and the verdict rules; ``checks``: the four findings as comparisons of a
sweep's trials; ``output``: ``sourcetrace findings SWEEP_RUN --out DIR`` (parquet, markdown, figure).
"""
