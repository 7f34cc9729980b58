"""README's and benchmarks/README.md's measured tables come from committed files under analysis/results/.

Each study folder holds what the command wrote (``metrics.json`` of ``sourcetrace evaluate``: the numbers,
the command, the commit, the machine); these tests read the tables back from the two READMEs and check
every cell against those files, so a number cannot drift from the run that produced it.
"""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "analysis" / "results"
DEMO = "demo"  # README's demo table: the model `make demo` hands over, seed 0
# train.seed -> study folder of the previous protocol (dev without unseen relatives; the fusion always handed over)
SEEDS = {s: f"demo_eval_chosen/seed{s}" for s in (0, 1, 2)}
FRESH = "fresh"  # the fresh outside set, scored once
DEV_SEEDS = {0: DEMO, 1: "demo_seed1", 2: "demo_seed2"}  # the same under the dev protocol


def metrics(study: str) -> dict:
    return json.loads((RESULTS / study / "metrics.json").read_text())


def table_after(text: str, header: str) -> list[list[str]]:
    """The rows (cells stripped of bold) of the markdown table whose header line starts with ``header``."""
    lines = text[text.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().replace("**", "") for c in line.strip("|").split("|")])
    return rows


def number(cell: str) -> float:
    return float(re.match(r"[+-]?\d+\.\d+", cell).group(0))


def eers(res: dict, scorer: str) -> dict[str, float]:
    out = {"clean": res["metrics"][scorer]["eer"]}
    return out | {name: m[scorer]["eer"] for name, m in res["degraded"].items()}


def test_every_study_records_its_command_commit_and_machine():
    for study in (*DEV_SEEDS.values(), *SEEDS.values()):
        res = metrics(study)
        assert res["command"].startswith("sourcetrace evaluate --model ") and "--degrade everyday" in res["command"]
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", res["git_commit"]) and "CPUs" in res["machine"]
        assert res["split"] == "eval" and res["n_clips"] == 1032


def test_the_readme_demo_table_is_the_committed_evaluation():
    res = metrics(DEMO)
    model, base, intervals = eers(res, "model"), eers(res, "baseline"), res["intervals"]
    rows = table_after((REPO / "README.md").read_text(), "| condition | model handed over | baseline |")
    named = {re.match(r"`([^`]+)`", r[0]).group(1): r for r in rows if r[0].startswith("`")}
    assert set(named) == set(model)  # clean and the nine everyday conditions, each once
    for name, row in named.items():
        assert number(row[1]) == pytest.approx(model[name], abs=0.005), name
        assert number(row[2]) == pytest.approx(base[name], abs=0.005), name
        iv = intervals[name]["all"]
        assert row[3] == f"{iv['diff']:+.2f} [{iv['lo']:+.2f}, {iv['hi']:+.2f}]", name
    summary = res["degraded_summary"]
    mean = next(r for r in rows if r[0].startswith("mean of the nine"))
    assert number(mean[1]) == pytest.approx(summary["model"]["mean_eer"], abs=0.005)
    assert number(mean[2]) == pytest.approx(summary["baseline"]["mean_eer"], abs=0.005)


def test_the_seeds_table_of_the_benchmarks_is_the_committed_evaluations():
    rows = table_after((REPO / "benchmarks" / "README.md").read_text(), "| seed | clean | mean of 9 |")
    by_seed = {r[0]: r for r in rows}
    for seed, study in SEEDS.items():
        res, row = metrics(study), by_seed[str(seed)]
        assert number(row[1]) == pytest.approx(res["metrics"]["model"]["eer"], abs=0.005)
        assert number(row[2]) == pytest.approx(res["degraded_summary"]["model"]["mean_eer"], abs=0.005)
        assert number(row[3]) == pytest.approx(res["degraded_summary"]["model"]["worst_eer"], abs=0.005)


def test_the_readme_fresh_set_line_is_the_committed_evaluation():
    res = metrics(FRESH)
    assert res["command"].startswith("sourcetrace evaluate --model ") and "--root data/fresh" in res["command"]
    text = (REPO / "README.md").read_text()
    line = text[text.index("**The fresh set, scored once**") :][:600]
    iv = res["intervals"]["clean"]["all"]
    assert f"{res['n_clips']} eval clips" in line
    assert f"model {res['metrics']['model']['eer']:.2f} %" in line
    assert f"baseline\n{res['metrics']['baseline']['eer']:.2f} %" in line or (
        f"baseline {res['metrics']['baseline']['eer']:.2f} %" in line
    )
    assert f"{iv['diff']:+.2f} pp [{iv['lo']:+.2f}, {iv['hi']:+.2f}]" in line


def test_the_dev_protocol_seeds_table_is_the_committed_evaluations():
    rows = table_after((REPO / "benchmarks" / "README.md").read_text(), "| seed (dev protocol) | handed over |")
    by_seed = {r[0]: r for r in rows}
    for seed, study in DEV_SEEDS.items():
        res, row = metrics(study), by_seed[str(seed)]
        assert number(row[2]) == pytest.approx(res["metrics"]["model"]["eer"], abs=0.005)
        assert number(row[3]) == pytest.approx(res["degraded_summary"]["model"]["mean_eer"], abs=0.005)
        assert number(row[4]) == pytest.approx(res["degraded_summary"]["model"]["worst_eer"], abs=0.005)
