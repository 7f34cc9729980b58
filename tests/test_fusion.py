"""Score fusion with models trained for seconds on the tiny real TTS corpus: the maths, the fusion folder
as a model everywhere, its bundle away from the members, bad fusions, and the sweep setting that makes one."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import QUICK  # two optimiser steps: the scores need models, not good ones

import sourcetrace
from sourcetrace.artefacts import resolve_model
from sourcetrace.bundle import files
from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.data.protocol import read_protocol
from sourcetrace.errors import SourcetraceError
from sourcetrace.evaluation.embed import embed_waves
from sourcetrace.fusion import FUSION_FILE, FusedNetwork, check_weights, load_model, write_fusion
from sourcetrace.sweep.spec import load_sweep, pin_overrides
from sourcetrace.training.loop import train

REPO = Path(__file__).resolve().parents[1]
BANDS = {"model.band_stats": True, "augment.band_eq_db": 8.7, "augment.freq_mask": 8, "augment.time_mask": 20}


@pytest.fixture(scope="module")
def members(tiny_corpus, tmp_path_factory):
    """Two runs of the demo's two front ends (plain log-Mel, 16-d; band statistics + EQ + masks, 12-d)."""
    root = tmp_path_factory.mktemp("fusion")
    plain, bands = root / "plain", root / "bands"
    train(Config.from_dict({"data.root": str(tiny_corpus), **QUICK}), plain)
    train(Config.from_dict({"data.root": str(tiny_corpus), **QUICK, **BANDS, "model.embedding_dim": 12}), bands)
    return plain, bands


@pytest.fixture(scope="module")
def fused(members, tmp_path_factory):
    out = tmp_path_factory.mktemp("fused") / "pair"
    assert main(["fuse", str(members[0]), str(members[1]), "--weights", "1,3", "--out", str(out)]) == 0
    return out


def _cosines(emb: np.ndarray) -> np.ndarray:
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return emb @ emb.T


def test_fused_cosine_is_the_weighted_mean_of_the_members_cosines(members, fused, tiny_corpus):
    files_ = list(read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]["file"][:12])
    from sourcetrace.data.bank import WaveBank

    bank = WaveBank.load(files_, sample_rate=16000)
    one, two, both = (load_model(p) for p in (*members, fused))
    assert isinstance(both.model, FusedNetwork) and both.model.weights == (0.25, 0.75)
    assert both.model.embedding_dim == 28 and both.known_systems == one.known_systems
    cos = [_cosines(embed_waves(m.model, bank, 2.0)) for m in (one, two, both)]
    np.testing.assert_allclose(cos[2], 0.25 * cos[0] + 0.75 * cos[1], atol=1e-5)
    assert resolve_model(fused).kind == "fusion"


def test_a_fusion_folder_is_evaluated_and_exported_to_a_bundle_that_needs_no_member(
    members, fused, tiny_corpus, mlaad_corpus, tmp_path, capsys
):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(fused), "--root", str(mlaad_corpus), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"eer", "openset_auroc"} <= set(m["model"]) and "verdict:" in capsys.readouterr().out

    copies = tmp_path / "members"  # the bundle is checked with the member runs gone
    shutil.copytree(members[0], copies / "plain")
    shutil.copytree(members[1], copies / "bands")
    pair = tmp_path / "pair"
    write_fusion(pair, [copies / "plain", copies / "bands"])
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", str(pair), "--out", str(bundle)]) == 0
    want = load_model(pair).model
    shutil.rmtree(copies)
    manifest = json.loads((bundle / files.MANIFEST).read_text())
    assert manifest["model"] == "fusion" and manifest["embedding_dim"] == 28
    card = json.loads((bundle / files.CARD_JSON).read_text())
    assert [f["band_stats"] for f in card["model"]["fusion"]] == [False, True]
    assert "score fusion of" in (bundle / files.CARD_MD).read_text()
    tracer = sourcetrace.load(bundle, device="cpu")
    clip = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]["file"].iloc[0]
    got = tracer.embed([clip])
    from sourcetrace.bundle.embedder import embed
    from sourcetrace.data.audio import load_audio

    np.testing.assert_allclose(got, embed(want, [load_audio(clip, 16000)], tracer.config, "cpu"), atol=1e-5)
    result = tracer.trace([clip])[0]
    assert result.error is None and result.decision


def test_bad_fusions_are_one_clear_error_and_write_nothing(members, tmp_path, capsys):
    plain, bands = members
    odd = tmp_path / "odd"
    shutil.copytree(plain, odd)
    for ckpt in ("best", "last"):
        meta = json.loads((odd / ckpt / "meta.json").read_text())
        meta["known_systems"] = meta["known_systems"][:-1] + ["someone_else"]
        (odd / ckpt / "meta.json").write_text(json.dumps(meta))
    cases = {
        (str(plain),): "at least two members",
        (str(plain), str(odd)): "trained on different systems",
        (str(plain), str(tmp_path / "nowhere")): "fusion member .*nowhere",
        (str(plain), str(bands), "--weights", "1,-1"): "must be 2 positive numbers",
        (str(plain), str(bands), "--weights", "a,b"): "comma-separated numbers",
    }
    for n, (argv, message) in enumerate(cases.items()):
        out = tmp_path / f"out{n}"
        assert main(["fuse", *argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), (argv, err)
        assert not out.exists()
    slow = tmp_path / "slow"
    shutil.copytree(bands, slow)
    for ckpt in ("best", "last"):
        cfg = json.loads((slow / ckpt / "config.json").read_text())
        cfg["data.eval_seconds"] = 3.0
        (slow / ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SourcetraceError, match="read clips differently: data.eval_seconds 2.0 vs 3.0"):
        write_fusion(tmp_path / "out_slow", [plain, slow])
    pair = tmp_path / "pair"
    write_fusion(pair, [plain, bands])
    record = json.loads((pair / FUSION_FILE).read_text())
    record["members"][1]["checkpoint"] = str(tmp_path / "gone")
    (pair / FUSION_FILE).write_text(json.dumps(record))
    assert main(["evaluate", "--model", str(pair), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "member checkpoint" in err and "gone does not exist" in err


def test_fusion_members_resolve_from_the_fusion_folder_and_a_fusion_may_not_include_itself(members, tmp_path, capsys):
    plain, bands = members
    pair = tmp_path / "pair"
    write_fusion(pair, [plain, bands])
    record = json.loads((pair / FUSION_FILE).read_text())
    moved = tmp_path / "moved"
    shutil.copytree(plain, moved / "a")
    shutil.copytree(bands, moved / "b")
    record["members"] = [{"checkpoint": "a", "weight": 1.0}, {"checkpoint": "b", "weight": 1.0}]
    (moved / FUSION_FILE).write_text(json.dumps(record))
    assert load_model(moved).path == moved  # relative to the fusion folder, whatever the working directory
    record["members"][1]["checkpoint"] = "."  # itself
    (moved / FUSION_FILE).write_text(json.dumps(record))
    assert main(["evaluate", "--model", str(moved), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the fusion includes itself among its members" in err[0]
    from sourcetrace.attribution import expand_inputs

    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'clip.wav'}\n@{listing}\n")
    with pytest.raises(SourcetraceError, match="list.txt includes itself"):
        expand_inputs([f"@{listing}"])


def test_weights_are_normalised_and_checked():
    assert check_weights([1, 3], 2) == [0.25, 0.75]
    with pytest.raises(SourcetraceError, match="at least two"):
        check_weights([1], 1)
    with pytest.raises(SourcetraceError, match="positive"):
        check_weights([1, float("nan")], 2)


def _sweep(tmp_path, space: str, tune: str) -> Path:
    path = tmp_path / "s.py"
    path.write_text(f"from ray import tune\nSPACE = {space}\nTUNE = {tune}\n")
    return path


def test_the_fuse_setting_names_a_grid_key_and_is_dropped_with_it(tmp_path, capsys):
    grid = '{"model.embedding_dim": tune.grid_search([8, 16]), "train.seed": tune.grid_search([0, 1])}'
    for space, tune, message in [
        (grid, '{"fuse": "loss.name", "scheduler": "halving"}', "must name a SPACE key searched by tune.grid_search"),
        ('{"model.embedding_dim": tune.choice([8, 16])}', '{"fuse": "model.embedding_dim"}', "tune.grid_search"),
        (grid, '{"fuse": "model.embedding_dim"}', "scheduler 'halving' or 'fifo'"),  # the default is ASHA
    ]:
        with pytest.raises(SourcetraceError, match=message):
            load_sweep(_sweep(tmp_path, space, tune))
    sweep = load_sweep(_sweep(tmp_path, grid, '{"fuse": "model.embedding_dim", "scheduler": "halving"}'))
    pin_overrides(sweep, ["model.embedding_dim=8"])
    assert sweep.tune.fuse == "" and "nothing is fused" in capsys.readouterr().err
    demo = load_sweep(REPO / "sweeps" / "demo.py")
    assert demo.tune.fuse == "front" and demo.tune.scheduler == "halving"


def test_the_reports_set_a_sweeps_fusion_beside_the_trials_and_judge_it_against_the_baseline(tmp_path):
    from test_baseline import UNSEEN, _baseline, _experiment

    from sourcetrace.sweep.fuse import FUSION_DIR
    from sourcetrace.sweep.report import format_table1, write_reports

    exp = _experiment(tmp_path)  # one trial: test EER 13 overall and 10 on the unseen systems
    _baseline(exp, test_unseen=(5.0, 30.0))  # the baseline wins the first unseen-system cell against it
    metrics = {"dev_eer": 7.0, "test_eer": 6.0} | {f"test_eer.{c}": 4.0 for c in UNSEEN}
    (exp / FUSION_DIR).mkdir()
    record = {"format": "sourcetrace-fusion", "members": [], "name": "fusion: front=a + front=b", "key": "front"}
    (exp / FUSION_DIR / FUSION_FILE).write_text(json.dumps(record | {"metrics": metrics}))
    reports = write_reports(exp)
    row = reports.table1[reports.table1["backbone"] == "fusion (best per front)"]
    assert len(row) == 1 and row["test@10"].item() == 6.0
    test = reports.comparison[reports.comparison["split"] == "test"].set_index("condition")
    assert test.loc["all", "model_eer"] == 6.0 and test["model_wins"].all()
    assert set(test["checkpoint"]) == {str(exp / FUSION_DIR)}
    text = format_table1(reports)
    assert "the sweep's fusion: front=a + front=b vs baseline" in text
    assert "verdict: the model handed over BEATS the baseline on eval" in text
    (exp / FUSION_DIR / FUSION_FILE).write_text(json.dumps(record))  # not measured (killed while scoring)
    assert "verdict: the model handed over does NOT beat" in format_table1(write_reports(exp))
    (exp / FUSION_DIR / FUSION_FILE).write_text('{"format": "sourcetrace-fus')  # damaged: the best trial stands
    text = format_table1(write_reports(exp))
    assert "best trial" in text and "fusion" not in text


@pytest.fixture(scope="module")
def demo_smoke(tiny_corpus, tmp_path_factory):
    """``sourcetrace sweep sweeps/demo.py --smoke`` run once for this module: (its output, sweep folder, MLflow db)."""
    tmp_path = tmp_path_factory.mktemp("demo_smoke")
    db = tmp_path / "mlflow.db"
    cmd = [sys.executable, "-m", "sourcetrace.cli", "sweep", str(REPO / "sweeps" / "demo.py"), "--smoke"]
    cmd += ["--root", str(tiny_corpus), "--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd + ["--no-analyze"], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return out, tmp_path / "ray" / "demo_smoke", db


@pytest.mark.slow
def test_the_demo_smoke_sweep_logs_the_fusion_of_its_front_ends_and_hands_over_what_dev_prefers(demo_smoke):
    from mlflow import MlflowClient

    out, exp, db = demo_smoke
    record = json.loads((exp / "fusion" / FUSION_FILE).read_text())
    assert record["labels"] == ["front=log-mel", "front=log-mel+bands"] and len(record["members"]) == 2
    assert {"dev_eer", "test_eer", "dev_openset_auroc"} <= set(record["metrics"])
    assert "fusion (best per front)" in out.stdout  # the fusion's row of Table 1, whichever is handed over
    import pandas as pd

    trials = pd.read_parquet(exp / "report" / "trials.parquet").dropna(subset=["dev_eer", "checkpoint"])
    fused = record["metrics"]["dev_eer"] < trials["dev_eer"].min()  # the hand-over rule: dev decides
    if fused:
        assert "the sweep's fusion: front=log-mel + front=log-mel+bands" in out.stdout
        assert "best model bundle:" in out.stdout and "(fusion: front=log-mel" in out.stdout
    else:
        assert "does not beat its best member on dev" in out.stdout and "best trial" in out.stdout
    # the field check of what it hands over: eval clean and under the smoke's conditions, beside the baseline
    assert "field check of the model handed over (" in out.stdout
    assert "field verdict (95 % bootstrap intervals): the model" in out.stdout
    assert "note: a seeded sample of at most 4 clips per system" in out.stdout
    field = json.loads((exp / "report" / "field" / "metrics.json").read_text())
    assert set(field["intervals"]) == {"clean", "gain", "short_1s"}  # every verdict of the check has its interval
    assert set(field["degraded"]) == {"gain", "short_1s"} and field["split"] == "eval"
    assert json.loads((exp / "baseline.json").read_text())["dev_degrade"] == ["band_8k"]  # the trials' dev
    manifest = json.loads((exp / "best_model" / files.MANIFEST).read_text())
    assert (manifest["model"] == "fusion") == fused
    assert (resolve_model(exp).checkpoint == exp / "fusion") == fused

    comparison = pd.read_parquet(exp / "report" / "comparison.parquet")
    test_all = comparison[(comparison["split"] == "test") & (comparison["condition"] == "all")].iloc[0]
    best = trials.loc[trials["dev_eer"].idxmin()]
    assert test_all["model_eer"] == pytest.approx(record["metrics"]["test_eer"] if fused else best["test_eer"])
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("demo_smoke").experiment_id])
    (fusion_run,) = [r for r in runs if r.data.tags.get("reference", "").startswith("fusion")]
    assert fusion_run.data.metrics["best_test_eer"] == pytest.approx(record["metrics"]["test_eer"])
    assert fusion_run.data.tags["role"] == "fusion"
    assert fusion_run.data.params["fusion.key"] == "front" and "model.embedding_dim" in fusion_run.data.params
    (handed,) = [r for r in runs if r.data.tags.get("sourcetrace.handed_over") == "true"]
    assert (handed.info.run_id == fusion_run.info.run_id) == fused
    assert f"bundle/{files.MANIFEST}" in {a.path for a in client.list_artifacts(handed.info.run_id, "bundle")}
    # the sweep's results where MLflow users look: Table 1, the comparison, the field check and their figures
    report = {a.path for a in client.list_artifacts(handed.info.run_id, "report")}
    assert {"report/table1.txt", "report/table1.parquet", "report/comparison.parquet", "report/plots"} <= report
    figures = {a.path for a in client.list_artifacts(handed.info.run_id, "report/plots")}
    assert figures == {"report/plots/conditions.png", "report/plots/field.png"}


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_demo_smoke_runs_and_its_registered_model_in_headless_chromium(demo_smoke, tmp_path):
    """What a user sees after a sweep, looked at in a real browser (Debian's chromium, installed by the setup):
    ``sourcetrace ui`` on 127.0.0.1, the experiment's runs table sorted by ``best_dev_eer`` lists every run by
    name in that order (trials, baseline and fusion alike), and the registered model's page shows version 1."""
    from mlflow import MlflowClient

    out, exp, db = demo_smoke
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed: run `make setup` (scripts/setup_engines.sh installs it)"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("demo_smoke")
    runs = client.search_runs([experiment.experiment_id], order_by=["metrics.best_dev_eer ASC"])
    assert all("best_dev_eer" in r.data.metrics for r in runs) and len({r.info.run_name for r in runs}) == len(runs)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen(
        [sys.executable, "-m", "sourcetrace.cli", "ui", "--tracking-uri", f"sqlite:///{db}", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        said = []  # the MLflow server may speak first on the same stdout; ours comes once the server answers
        while not any("MLflow UI on http://127.0.0.1:" in line for line in said):
            said.append(ui.stdout.readline())
            assert said[-1] and len(said) < 20, said
        base = f"http://127.0.0.1:{port}"

        def page(url: str) -> str:
            cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            cmd += ["--window-size=2200,900", "--virtual-time-budget=20000", f"--user-data-dir={tmp_path / 'chrome'}"]
            shot = tmp_path / "page.png"
            subprocess.run([*cmd, f"--screenshot={shot}", url], capture_output=True, timeout=180)
            assert shot.stat().st_size > 10_000  # something was drawn
            return subprocess.run([*cmd, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout

        table = page(
            f"{base}/#/experiments/{experiment.experiment_id}/runs?orderByKey=metrics.%60best_dev_eer%60&orderByAsc=true"
        )
        shown = [r.info.run_name for r in runs]
        where = [table.find(f">{name}<") for name in shown]
        assert all(w >= 0 for w in where), (shown, where)  # every run's name is in the runs table
        assert where == sorted(where)  # in best_dev_eer order: the sort works across trials, baseline and fusion
        assert "best_dev_eer" in table  # the sort control names the headline metric
        model = page(f"{base}/#/models/demo_smoke")
        assert "demo_smoke" in model and "Version 1" in model
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)
