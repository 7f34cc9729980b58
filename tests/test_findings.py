"""The findings report: its statistics and verdict rules on constructed numbers, the four findings on a
constructed trials table, its CLI's errors, and (slow) the findings sweep's smoke variant end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sourcetrace.cli import main
from sourcetrace.findings.checks import (
    BELOW_BASELINE,
    CONDITIONS,
    UNTESTED_A,
    UNTESTED_D,
    findings_table,
    verdict_lines,
)
from sourcetrace.findings.stats import FAILS, HOLDS, MARGIN, UNSURE, combine, compare, t_test, verdict

REPO = Path(__file__).parent.parent
UNSEEN = [c for c in CONDITIONS if c != "all"]


def s(values, units=None):
    return pd.Series(values, index=units if units is not None else range(len(values)), dtype=float)


def test_a_clear_paired_win_holds_and_an_overlap_cannot_tell():
    win = compare(s([5.0, 5.2, 4.9]), s([20.0, 21.0, 19.5]), "beats")
    assert win["test"] == "paired t" and win["n_pairs"] == 3 and win["verdict"] == HOLDS
    assert win["diff"] == pytest.approx(-15.13, abs=0.01) and win["diff_hi"] < 0 and win["p"] < 0.01
    overlap = compare(s([10.0, 15.0, 20.0]), s([12.0, 16.0, 19.0]), "beats")
    assert overlap["diff_lo"] < -MARGIN < 0 < overlap["diff_hi"] and overlap["verdict"] == UNSURE


def test_the_paired_interval_is_the_t_interval_of_the_differences():
    from scipy import stats

    a, b = s([10.0, 12.0, 11.0, 13.0]), s([11.0, 12.5, 12.5, 13.5])
    d = (a - b).to_numpy()
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    row = t_test(a, b)
    assert (row["diff_lo"], row["diff_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_welch_when_the_sides_share_no_units_and_none_with_too_few():
    row = t_test(s([5.0, 6.0, 5.5], [0, 1, 2]), s([9.0, 10.0, 9.5], [3, 4, 5]))
    assert row["test"] == "Welch t" and row["n_pairs"] == 0 and row["diff_hi"] < 0
    lonely = compare(s([5.0]), s([9.0, 10.0]), "beats")
    assert lonely["test"] == "none" and np.isnan(lonely["diff"]) and lonely["verdict"] == UNSURE


def test_verdict_rules_at_their_edges():
    assert verdict("beats", -3.0, -1.1) == HOLDS  # the whole interval beyond the margin, A's way
    assert verdict("beats", -0.9, 2.0) == FAILS  # any advantage is below the margin
    assert verdict("beats", -0.9, 0.9) == FAILS  # inside the margin: no finding of A beating B
    assert verdict("beats", 1.5, 2.0) == FAILS  # B is better by more than the margin
    assert verdict("beats", -3.0, 2.0) == UNSURE
    assert verdict("no worse", -3.0, 0.9) == HOLDS
    assert verdict("no worse", 1.1, 5.0) == FAILS  # A worse by more than the margin
    assert verdict("no worse", -1.0, 3.0) == UNSURE
    assert verdict("no worse", -1.0, 3.0, margin=4.0) == HOLDS
    assert verdict("beats", np.nan, np.nan) == UNSURE
    with pytest.raises(ValueError, match="unknown claim 'better'"):
        verdict("better", 0.0, 1.0)


def test_a_verdict_never_holds_when_its_interval_overlaps_the_margin():
    """Issue #31 (c): "beats" held on hi < 0 although the margin is "no finding either way", and "no worse"
    failed on lo > 0 inside the margin; now the claim's boundary is the margin on both sides."""
    assert verdict("beats", -3.0, -0.1) == UNSURE  # overlaps -1 pp: was "holds"
    assert verdict("beats", -2.56, -0.54) == UNSURE  # (c) 512 vs 50 dims of the committed run: was "holds"
    assert verdict("no worse", 0.1, 5.0) == UNSURE  # overlaps +1 pp: was "does not hold"
    assert verdict("no worse", 0.1, 0.5) == HOLDS  # inside the margin
    for lo, hi in [(-3.0, -0.1), (-1.5, -0.5), (-1.2, 0.3), (-5.0, 5.0)]:
        assert verdict("beats", lo, hi) != HOLDS
    # on a trials table: Softmax/random 1.5 pp better at 512 dims than at 10 and 50, +-0.5 pp over seeds
    table = findings_table(
        trials(lambda loss, sampler, dim, seed: 15.0 - 1.5 * (dim == 512) + 0.5 * (seed - 1) * (dim < 512))
    )
    c = table[(table["finding"] == "c") & (table["condition"] == "all")]
    assert (c["diff_lo"] < -MARGIN).all() and (c["diff_hi"] < 0).all() and (c["diff_hi"] > -MARGIN).all()
    assert set(c["verdict"]) == {UNSURE} and c["finding_verdict"].iloc[0] == UNSURE
    assert "holds if the 95 % CI of A-B lies below -1 pp" in verdict_lines(table)[2]


def test_units_that_share_a_seed_are_one_independent_unit():
    """Issue #31 (b): 4 recipes x 3 seeds are 3 independent units, not 12: the interval is the t interval of
    the per-seed mean differences, with 2 degrees of freedom."""
    from scipy import stats

    units = pd.MultiIndex.from_product([["r1", "r2", "r3", "r4"], [0, 1, 2]], names=["recipe", "seed"])
    a = pd.Series([15.0 + (seed - 1) + 0.02 * r for r in range(4) for seed in range(3)], index=units)
    b = pd.Series(15.0, index=units)
    row = t_test(a, b, block="seed")
    assert row["test"] == "paired t" and row["n_pairs"] == 12 and row["n_independent"] == 3
    d = (a - b).groupby(level="seed").mean().to_numpy()
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert (row["diff_lo"], row["diff_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert t_test(a, b)["n_independent"] == 12  # without a block every unit counts (the old, wrong, test)
    assert compare(a, b, "no worse", block="seed")["verdict"] == UNSURE
    assert compare(a, b, "no worse")["verdict"] == HOLDS  # 12 "independent" units: a spuriously narrow interval


def test_finding_b_counts_seeds_not_recipe_seed_units():
    """(b)'s (recipe, seed) units share initial weights within a seed: 10 dims are 1 pp better at seed 0 and
    1 pp worse at seed 2 in every recipe; over 3 seeds that is no finding, over 12 units it "held"."""

    def eer(loss, sampler, dim, seed):
        recipe = f"{loss}/{sampler}"
        return 15.0 + (dim == 10) * ((seed - 1) + 0.02 * RECIPES.index(recipe))

    table = findings_table(trials(eer))
    b = table[(table["comparison"] == "10 vs 512 dims") & (table["condition"] == "all")].iloc[0]
    assert b["n_pairs"] == 12 and b["n_independent"] == 3 and b["block"] == "seed"
    assert b["a_n"] == 3 and b["a_n_units"] == 12
    assert b["diff_hi"] > MARGIN and b["verdict"] == UNSURE and b["finding_verdict"] == UNSURE
    line = verdict_lines(table)[1]
    assert line.startswith("(b) ") and "tests rest on 3 independent seeds" in line
    assert "12 paired units averaged within seed first" in line


def test_a_compares_losses_on_the_balanced_sampler_only():
    """Issue #31 (a): the metric losses run only with the balanced sampler; pooling the classification losses
    over both samplers compared samplers as well. Here the random sampler is bad and the losses are equal."""

    def eer(loss, sampler, dim, seed):
        return (30.0 if sampler == "random" else 10.0) + 0.3 * (seed - 1) + 0.01 * dim / 512

    table = findings_table(trials(eer))
    a = table[(table["finding"] == "a") & (table["condition"] == "all")].iloc[0]
    assert a["b_label"] == "Softmax+AM+AAM/balanced" and "balanced sampler" in a["comparison"]
    assert a["b_mean"] == pytest.approx(a["a_mean"]) and a["diff"] == pytest.approx(0.0)  # was -13.3: "holds"
    assert a["verdict"] == FAILS and a["finding_verdict"] == FAILS
    # no classification loss on the balanced sampler: (a) cannot be tested, and says so in words
    random_only = findings_table(trials(eer, recipes=["softmax/random", "aamsoftmax/random", "ge2e/balanced"]))
    a = random_only[random_only["finding"] == "a"]
    assert (a["verdict"] == UNTESTED_A).all() and a["finding_verdict"].iloc[0] == UNTESTED_A
    assert a["claim"].isna().all() and random_only.loc[random_only["finding"] == "c", "claim"].notna().all()
    line = verdict_lines(random_only)[0]
    assert line == f"(a) metric-learning losses (GE2E, Angular Prototypical) beat classification losses: {UNTESTED_A}"
    assert "cannot be tested" in line and "balanced sampler" in line


def test_a_line_says_so_when_every_cell_is_worse_than_the_baseline():
    """Issue #31: at 150 steps no cell reached the featureless baseline: the verdicts are about early training."""
    below = {"metrics": {"test_eer": 5.0} | {f"test_eer.{c}": 5.0 for c in UNSEEN}}
    table = findings_table(trials(paper_like), below)
    lines = verdict_lines(table)
    assert lines[0].startswith(BELOW_BASELINE) and len(lines) == 5 and lines[1].startswith("(a)")
    assert "(thin_resnet34 angleproto/balanced at 10 dims) reaches 6.00 ± 0.75 % EER" in lines[0]
    assert "featureless baseline's 5.00 %" in lines[0] and "mean over 3 seed(s)" in lines[0]
    # one cell at the baseline's level or better: no such line
    above = {"metrics": {"test_eer": 6.5} | {f"test_eer.{c}": 5.0 for c in UNSEEN}}
    assert not any(BELOW_BASELINE in line for line in verdict_lines(findings_table(trials(paper_like), above)))
    assert not any(BELOW_BASELINE in line for line in verdict_lines(findings_table(trials(paper_like))))


def test_combined_verdicts():
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, UNSURE]) == UNSURE
    assert combine([UNSURE, FAILS, HOLDS]) == FAILS
    assert combine([]) == UNSURE


RECIPES = ["softmax/random", "softmax/balanced", "aamsoftmax/random", "ge2e/balanced", "angleproto/balanced"]


def trials(eer, backbone="thin_resnet34", dims=(10, 50, 512), seeds=(0, 1, 2), recipes=RECIPES):
    """A trials table shaped like ``report.trials_frame``'s: one finished trial per cell and seed, its test
    EER (overall and per unseen-system condition) from ``eer(loss, sampler, dim, seed)``."""
    rows = []
    for recipe in recipes:
        loss, sampler = recipe.split("/")
        for dim in dims:
            for seed in seeds:
                value = eer(loss, sampler, dim, seed)
                rows.append(
                    {"trial_id": f"{backbone}-{recipe}-{dim}-{seed}", "best": True, "status": "finished"}
                    | {"backbone": backbone, "loss": loss, "sampler": sampler, "dim": dim, "seed": seed}
                    | {"test_eer": value}
                    | {f"test_eer.{c}": value + 2.0 for c in UNSEEN}
                )
    return pd.DataFrame(rows)


def paper_like(loss, sampler, dim, seed):
    """Metric losses ~6 %, classification ~12 %, Softmax/random at chance below 512 dims; seed noise +-0.3."""
    noise = 0.3 * (seed - 1)
    if loss == "softmax" and sampler == "random":
        return (45.0 if dim < 512 else 12.0) + noise
    return (6.0 if loss in ("ge2e", "angleproto") else 12.0) + noise + 0.1 * (dim == 512)


def test_constructed_paper_like_results_make_every_finding_hold():
    baseline = {"metrics": {"test_eer": 30.0} | {f"test_eer.{c}": 31.0 for c in UNSEEN}}
    table = findings_table(trials(paper_like), baseline)
    verdicts = table.drop_duplicates("finding").set_index("finding")["finding_verdict"]
    assert verdicts.to_dict() == {"a": HOLDS, "b": HOLDS, "c": HOLDS, "d": UNTESTED_D}
    a = table[(table["finding"] == "a") & (table["condition"] == "all")].iloc[0]
    assert a["test"] == "paired t" and a["n_pairs"] == 9 and a["n_independent"] == 3 and a["units"] == "dim+seed"
    # metric losses 6 % against the classification recipes on the same (balanced) sampler: Softmax/balanced 12 %
    assert a["a_mean"] == pytest.approx(6.0 + 0.1 / 3) and a["b_mean"] == pytest.approx(12.0 + 0.1 / 3)
    assert a["baseline_eer"] == 30.0
    c = table[(table["comparison"] == "softmax/random: 512 vs 10 dims") & (table["condition"] == "all")].iloc[0]
    assert c["a_mean"] == pytest.approx(12.0) and c["b_mean"] == pytest.approx(45.0) and c["n_pairs"] == 3
    assert len(table) == 6 * len(CONDITIONS)  # a, b x2, c x2, d: each on eval overall and the unseen conditions
    lines = verdict_lines(table)
    assert lines[0].startswith("(a) metric-learning losses") and "HOLDS on eval overall" in lines[0]
    assert "tests rest on 3 independent seeds" in lines[0]
    assert "lang_not_seen___model_not_seen: holds" in lines[0] and "rule: A beats B" in lines[0]
    assert lines[3] == f"(d) Thin-ResNet matches wav2vec2-AASIST and generalises better to unseen systems: {UNTESTED_D}"


def test_no_difference_does_not_hold_and_noise_cannot_tell():
    flat = findings_table(trials(lambda loss, sampler, dim, seed: 10.0 + 0.2 * seed + 0.01 * (loss == "ge2e")))
    verdicts = flat.drop_duplicates("finding").set_index("finding")["finding_verdict"]
    assert verdicts["a"] == FAILS and verdicts["b"] == HOLDS and verdicts["c"] == FAILS
    rng = np.random.default_rng(0)
    noisy = findings_table(trials(lambda *_: 20.0 + rng.normal(0, 8.0)))
    assert set(noisy.loc[noisy["finding"] != "d", "finding_verdict"]) == {UNSURE}


def test_unfinished_trials_are_left_out_and_aasist_trials_test_d():
    resnet = trials(paper_like, recipes=["aamsoftmax/random", "ge2e/balanced", "softmax/random"])
    resnet.loc[0, "status"] = "failed"
    aasist = trials(lambda *a: paper_like(*a) + 3.0, backbone="w2v2_aasist", recipes=["aamsoftmax/random"])
    table = findings_table(pd.concat([resnet, aasist], ignore_index=True))
    assert set(table["left_out"].dropna()) == {1}
    d = table[table["finding"] == "d"].set_index("condition")
    assert d.loc["all", "claim"] == "no worse" and (d.loc[UNSEEN, "claim"] == "beats").all()
    assert d.loc["all", "n_pairs"] == 8  # aamsoftmax/random x 3 dims x 3 seeds, less the failed ResNet trial
    assert (d["verdict"] == HOLDS).all() and d["finding_verdict"].iloc[0] == HOLDS
    assert "generalises better to unseen systems: HOLDS over all three" in verdict_lines(table)[3]


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "findings"
    assert main(["findings", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "holds no Tune experiment" in capsys.readouterr().err and not out.exists()
    assert main(["findings", str(tmp_path), "--out", str(out), "--margin", "-1"]) == 2
    assert "--margin -1.0 must be a positive number" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_smoke_sweep_then_findings_end_to_end(tmp_path, tiny_corpus):
    """The findings sweep's smoke variant through the real ``sourcetrace sweep`` (local Ray, sqlite MLflow),
    then ``sourcetrace findings`` on its folder: parquet, markdown and figure, a verdict per finding."""
    import os

    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "sourcetrace.cli"]
    sweep = cli + ["sweep", str(REPO / "sweeps" / "findings_cpu.py"), "--smoke", "--root", str(tiny_corpus)]
    sweep += ["--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-analyze"]
    proc = subprocess.run(sweep, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results"
    report = cli + ["findings", str(tmp_path / "ray" / "findings_cpu_smoke"), "--out", str(out)]
    proc = subprocess.run(report, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    findings = [line[:3] for line in proc.stdout.splitlines() if line.startswith("(")]
    assert findings[:4] == ["(a)", "(b)", "(c)", "(d)"]  # after the below-the-baseline line, if any
    table = pd.read_parquet(out / "findings.parquet")
    trials = pd.read_parquet(out / "trials.parquet").drop_duplicates("trial_id")
    assert len(trials) == 8 and set(trials["status"]) == {"finished"}
    # the smoke sweep's only classification recipe is Softmax/random: (a) cannot be tested on one sampler
    a = table[(table["finding"] == "a") & (table["condition"] == "all")].iloc[0]
    assert a["verdict"] == UNTESTED_A and np.isfinite(a["baseline_eer"])  # the sweep's featureless baseline, beside
    c = table[(table["comparison"] == "softmax/random: 512 vs 10 dims") & (table["condition"] == "all")].iloc[0]
    assert c["test"] == "paired t" and c["n_pairs"] == 2 and c["n_independent"] == 2 and np.isfinite(c["diff"])
    assert set(table["finding_verdict"]) <= {HOLDS, FAILS, UNSURE, UNTESTED_A, UNTESTED_D}
    summary = (out / "findings.md").read_text()
    assert "sourcetrace sweep sweeps/findings_cpu.py" not in summary  # run from tmp_path: the file's full path
    assert "findings_cpu.py --root" in summary and "--smoke" in summary and "## Verdicts" in summary
    assert (out / "findings.png").stat().st_size > 0 and (out / "table1_cells.parquet").is_file()
