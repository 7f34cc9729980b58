"""The one hand-over rule (``sweep/handover.py``): what the comparison describes is what the export ships."""

import json

import numpy as np
import pandas as pd

from sourcetrace.sweep.comparison import compare_best
from sourcetrace.sweep.handover import FUSION_DIR, handed_over


def _trials(tmp_path):
    """Trial a's best evaluation (dev 10 %) lost its checkpoint (Tune pruned it); its epoch 1 and trial b's best
    (dev 11 %) kept theirs."""
    (tmp_path / "a1").mkdir(exist_ok=True)
    (tmp_path / "b2").mkdir(exist_ok=True)
    return pd.DataFrame(
        [
            {"trial_name": "a", "epoch": 1, "dev_eer": 12.0, "test_eer": 20.0, "checkpoint": str(tmp_path / "a1")},
            {"trial_name": "a", "epoch": 2, "dev_eer": 10.0, "test_eer": 5.0, "checkpoint": None},
            {"trial_name": "b", "epoch": 2, "dev_eer": 11.0, "test_eer": 9.0, "checkpoint": str(tmp_path / "b2")},
        ]
    ).assign(best=[False, True, True], run_id=[np.nan, np.nan, "run-b"])


def test_an_evaluation_without_its_checkpoint_is_neither_handed_over_nor_described(tmp_path):
    chosen = handed_over(tmp_path, _trials(tmp_path))
    assert (chosen.folder, chosen.name, chosen.run_id, chosen.kind) == (str(tmp_path / "b2"), "b", "run-b", "trial")
    assert chosen.metrics == {"dev_eer": 11.0, "test_eer": 9.0}
    baseline = {"metrics": {"dev_eer": 12.0, "test_eer": 10.0}}
    table = compare_best(chosen, baseline)
    assert set(table["trial_name"]) == {"b"} and set(table["checkpoint"]) == {str(tmp_path / "b2")}
    assert table.set_index("split")["model_eer"].to_dict() == {"dev": 11.0, "test": 9.0}  # not the pruned 5.0


def test_a_measured_fusion_is_handed_over_when_it_beats_its_best_member_on_dev(tmp_path):
    folder = tmp_path / FUSION_DIR
    folder.mkdir()
    record = {"format": "sourcetrace-fusion", "members": [{"checkpoint": "a1", "weight": 0.5}] * 2, "name": "f"}
    (folder / "fusion.json").write_text(json.dumps(record))
    assert handed_over(tmp_path, _trials(tmp_path)).name == "b"  # killed before it was scored
    (folder / "fusion.json").write_text(json.dumps(record | {"metrics": {"dev_eer": 9.5}, "run_id": "run-f"}))
    chosen = handed_over(tmp_path, _trials(tmp_path))
    assert (chosen.folder, chosen.kind, chosen.run_id, chosen.what) == (
        str(folder),
        "fusion",
        "run-f",
        "f, dev EER 9.50%",
    )
    assert handed_over(tmp_path / "none", _trials(tmp_path).iloc[:0]) is None
