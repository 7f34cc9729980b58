"""Per-condition EERs: a condition without target pairs is left out instead of aborting evaluation."""

import numpy as np
import pandas as pd

from sourcetrace.evaluation.conditions import split_metrics


def test_condition_with_one_clip_per_system_is_skipped_not_fatal():
    rng = np.random.default_rng(0)
    # cond_a: 3 systems x 3 clips (scoreable); cond_b: 2 systems, one clip each (no target pair);
    # cond_c: one system, 3 clips (no non-target pair).
    systems = ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3 + ["s4", "s5"] + ["s6"] * 3
    conditions = ["cond_a"] * 9 + ["cond_b"] * 2 + ["cond_c"] * 3
    table = pd.DataFrame({"system": systems, "condition": conditions})
    emb = rng.normal(size=(len(table), 8)).astype(np.float32)
    out = split_metrics("dev", emb, table)
    assert "dev_eer.cond_a" in out and 0.0 <= out["dev_eer.cond_a"] <= 100.0
    assert "dev_eer.cond_b" not in out and "dev_eer.cond_c" not in out
    assert 0.0 <= out["dev_eer"] <= 100.0
