"""The analysis notebook executes headless, from its own folder as Jupyter opens it, on a report the report
module writes from a synthetic Tune experiment folder; without a report it says which folder it looked in."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from test_report import AAM, GE2E, C, make_experiment

from sourcetrace.evaluation.baseline import BASELINE_FILE
from sourcetrace.findings.checks import findings_table
from sourcetrace.sweep.report import write_reports

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")

ANALYSIS = Path(__file__).parent.parent / "analysis"


def execute(monkeypatch, **environ):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(ANALYSIS / "table1.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": ANALYSIS}})
    client.execute()
    return nb


def outputs(nb) -> str:
    return "\n".join(
        str(o.get("data", {}).get("text/html") or o.get("data", {}).get("text/plain") or o.get("text", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


def html(nb) -> list[str]:
    return [o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]


def bold_cells(styled_html: str) -> set[str]:
    """The ``rowI_colJ`` cells a pandas Styler's CSS makes bold."""
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", styled_html.split("</style>")[0])
    return {cell for sel, body in rules if "font-weight: bold" in body for cell in re.findall(r"row\d+_col\d+", sel)}


@pytest.fixture
def report(tmp_path):
    exp = make_experiment(
        tmp_path,
        [
            ("a0", AAM | {"train.seed": 0}, "TERMINATED", [(1, None), (2, 12.0), (3, None), (4, 10.0)], None),
            ("a1", AAM | {"train.seed": 1}, "TERMINATED", [(1, None), (2, 11.0), (3, None), (4, 14.0)], None),
            ("g0", GE2E, "TERMINATED", [(1, None), (2, 9.0), (3, None), (4, 8.0)], None),
            ("g1", GE2E | {"model.embedding_dim": 50}, "ERROR", [(1, None)], "TrainingError: non-finite loss"),
        ],
    )
    metrics = {"dev_eer": 18.5, "test_eer": 4.25, f"dev_eer.{C}": 17.0, f"test_eer.{C}": 3.5}
    (exp / BASELINE_FILE).write_text(json.dumps({"name": "mfcc_stats", "metrics": metrics}))
    write_reports(exp, tmp_path / "report")
    return tmp_path / "report"


def test_notebook_runs_from_its_folder_on_a_report(report, tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    findings_table(pd.read_parquet(report / "trials.parquet")).to_parquet(report / "findings.parquet")
    nb = execute(monkeypatch, SOURCETRACE_REPORT=str(report), SOURCETRACE_FIGURES=str(figures))
    text = outputs(nb)
    # Table 1: mean ± CI over the two AAM seeds (best dev evaluations 10 and 11), best of each column bold.
    assert "10.50 ± 6.35" in text and "8.00" in text and "failed" in text
    # Rows: aamsoftmax, ge2e, baseline (last); columns dev@10, dev@50, dev@—, test@10, test@50, test@—. The
    # baseline has no embedding size: its values sit in the "—" columns only, never in a size column. The best
    # of each column: ge2e's dev@10 and test@10; nothing has a dim-50 EER (that trial failed).
    table1 = next(h for h in html(nb) if "Table 1: EER %" in h)
    assert bold_cells(table1) == {"row1_col0", "row1_col3", "row2_col2", "row2_col5"}
    assert table1.count("18.50") == 1 and table1.count("4.25") == 1
    assert "18.50" in table1 and "font-style: italic;" in table1  # the baseline's row
    assert f"{C}: EER %" in text and "17.00" in text  # per-condition table with the baseline's cell
    assert "paper_eer" in text and "this sweep" in text  # the paper's GE2E cell at 10-d, from this sweep
    # Runs are named from the keys the sweep varied (as their MLflow runs are): the failed trial's row.
    assert "ge2e/balanced/d50/s0" in text
    assert "no training-loss curves" in text  # the report was written apart from its experiment (--out)
    for name in ("learning_curves.png", "eer_vs_dim.png", "dev_vs_test.png"):
        assert (figures / name).stat().st_size > 1000
    assert not (report / "figures").exists()  # nothing written into the report
    assert "(a) metric-learning losses (GE2E, Angular Prototypical) beat classification losses" in text
    assert "untested here (needs XLS-R weights" in text and "paired t" not in text  # one seed: no pairs


def test_notebook_finds_the_repository_and_names_the_report_it_lacks(monkeypatch):
    demo = ANALYSIS.parent / "ray_results" / "demo" / "report"
    if (demo / "trials.parquet").is_file():
        pytest.skip(f"{demo} exists here (make demo ran): the notebook would read it")
    monkeypatch.delenv("SOURCETRACE_REPORT", raising=False)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as err:
        execute(monkeypatch, SOURCETRACE_FIGURES="")
    assert f"no sweep report in {demo} " in str(err.value)  # the repository's demo report, found from analysis/
    assert "SOURCETRACE_REPORT" in str(err.value)
