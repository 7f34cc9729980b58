"""Calibrated outputs: Platt's map of knownness and the temperature over systems (fitted on dev only),
their reliability (ECE), the bundle file that stores them, and what ``trace`` prints beside raw scores.

The first tests use synthetic scores with a known answer; the slow ones train a model for seconds on the
tiny real TTS corpus and export it."""

import json
import math
import shutil

import numpy as np
import pytest
from test_bundle import TRAIN  # the model trained for seconds on the tiny corpus, as in test_bundle

from sourcetrace.evaluation.calibration import (
    NEGATIVES_LOSO,
    NEGATIVES_UNSEEN,
    Calibration,
    CalibrationError,
    fit_calibration,
    fit_platt,
    fit_temperature,
    reliability,
    sigmoid,
    softmax,
)


def _calibration(**kw) -> Calibration:
    base = dict(
        scorer="knn",
        split="dev",
        slope=40.0,
        intercept=-36.0,
        temperature=0.02,
        n_known=10,
        n_unknown=5,
        negatives=NEGATIVES_UNSEEN,
        unknown_systems=["x"],
        known_nll=0.3,
        system_nll=0.5,
    )
    return Calibration(**(base | kw))


# -- Platt: a probability, monotone in the score, recovering a known logistic ----------------------
@pytest.mark.parametrize("seed", range(6))
def test_p_known_is_a_probability_and_never_decreases_with_the_score(seed):
    rng = np.random.default_rng(seed)
    n_pos, n_neg = rng.integers(5, 200, 2)
    shift = rng.normal(0, 0.03)  # seeds where unknown clips score higher than known ones too
    pos = rng.normal(0.95, rng.uniform(0.005, 0.05), n_pos)
    neg = rng.normal(0.95 - shift, rng.uniform(0.005, 0.05), n_neg)
    a, b, nll = fit_platt(np.r_[pos, neg], np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)])
    assert a >= 0 and math.isfinite(b) and nll >= 0
    cal = _calibration(slope=a, intercept=b)
    grid = np.linspace(-1.0, 1.0, 2001)
    p = cal.p_known(grid)
    assert ((p >= 0) & (p <= 1)).all()
    assert (np.diff(p) >= 0).all(), "p_known must not decrease as the knownness score rises"


def test_platt_recovers_the_logistic_that_made_the_labels():
    rng = np.random.default_rng(1)
    s = rng.uniform(0.85, 1.0, 40000)
    y = rng.random(len(s)) < sigmoid(120.0 * s - 110.0)
    a, b, _ = fit_platt(s, y)
    assert a == pytest.approx(120.0, rel=0.1) and b == pytest.approx(-110.0, rel=0.1)


def test_platt_is_flat_not_decreasing_when_unknown_clips_score_higher():
    a, b, _ = fit_platt([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [True, True, True, False, False, False])
    assert a == 0.0
    assert sigmoid(b) == pytest.approx(0.5, abs=1e-6)  # nothing learnt: the smoothed base rate


def test_platt_needs_both_kinds_of_clips():
    with pytest.raises(CalibrationError, match="0 unknown"):
        fit_platt([0.9, 0.95], [True, True])


# -- temperature over systems ---------------------------------------------------------------------
def test_temperature_recovers_the_one_that_made_the_labels():
    rng = np.random.default_rng(2)
    per = rng.normal(0.9, 0.03, (20000, 6))
    probs = softmax(per / 0.01, axis=1)
    true = np.array([rng.choice(6, p=row) for row in probs])
    t, nll = fit_temperature(per, true)
    assert t == pytest.approx(0.01, rel=0.05)
    assert nll < math.log(6)  # better than uniform
    p = _calibration(temperature=t).system_probabilities(per[:5])
    assert p.shape == (5, 6) and np.allclose(p.sum(1), 1)
    assert (np.argsort(-p, 1)[:, 0] == np.argsort(-per[:5], 1)[:, 0]).all()  # same order as the raw scores


def test_one_system_has_probability_one():
    t, nll = fit_temperature(np.array([[0.9], [0.8]]), np.array([0, 0]))
    assert np.allclose(_calibration(temperature=t).system_probabilities([[0.9], [0.1]]), 1.0) and nll == 0.0


# -- reliability / ECE ----------------------------------------------------------------------------
def test_ece_by_hand_and_on_calibrated_and_overconfident_probabilities():
    r = reliability([0.05, 0.05, 0.95, 0.95], [False, True, True, True], "knownness", bins=10)
    # bin 0: mean p 0.05, observed 0.5 (2 clips); bin 9: mean p 0.95, observed 1.0 (2 clips)
    assert r.ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert r.count[0] == 2 and r.count[9] == 2 and r.confidence[5] is None and r.max_gap == pytest.approx(0.45)
    rng = np.random.default_rng(3)
    p = rng.random(50000)
    honest = rng.random(len(p)) < p
    assert reliability(p, honest, "x").ece < 0.01
    sharp = np.where(p > 0.5, 0.99, 0.01)  # says 99 % where the truth is 50-100 %
    assert reliability(sharp, honest, "x").ece > 0.2
    assert reliability([1.0], [True], "x").count[-1] == 1  # p = 1 falls in the last bin
    with pytest.raises(CalibrationError, match=r"\[0, 1\]"):
        reliability([1.5], [True], "x")


# -- the stored file -------------------------------------------------------------------------------
def test_the_stored_calibration_round_trips_and_names_a_bad_field():
    cal = _calibration()
    d = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(d) == cal
    assert "platt" in d["description"] and "temperature softmax(T=0.02)" in d["description"]
    for field, value, says in [
        ("slope", float("nan"), "'slope' must be a finite number"),
        ("slope", -1.0, "'slope' must be >= 0"),
        ("temperature", 0.0, "'temperature' must be > 0"),
        ("intercept", "1", "'intercept' must be a finite number"),
        ("n_known", -3, "'n_known' must be a count"),
        ("scorer", "", "'scorer' must be a non-empty string"),
        ("version", 7, "'version' must be 1"),
        ("unknown_systems", "x", "'unknown_systems' must be a list"),
    ]:
        with pytest.raises(CalibrationError, match=says):
            Calibration.from_dict(d | {field: value})
    with pytest.raises(CalibrationError, match="'temperature' must be a finite number"):
        Calibration.from_dict({k: v for k, v in d.items() if k != "temperature"})
    with pytest.raises(CalibrationError, match="JSON object"):
        Calibration.from_dict([1, 2])


# -- fitting on embeddings: known / unknown construction -------------------------------------------
def _clusters(rng, names, per, dim=8, spread=0.25):
    centres = {s: rng.normal(size=dim) for s in names}
    x = np.concatenate([centres[s] + spread * rng.normal(size=(per, dim)) for s in names])
    return x, np.repeat(names, per), centres


def test_fit_uses_dev_unseen_systems_as_negatives_else_leaves_one_system_out():
    rng = np.random.default_rng(4)
    known = ["a", "b", "c", "d"]
    ref, ref_sys, centres = _clusters(rng, known, 20)
    dev_known = np.concatenate([centres[s] + 0.25 * rng.normal(size=(6, 8)) for s in known])
    dev_unseen = rng.normal(size=(2, 8))
    dev_unseen = np.concatenate([c + 0.25 * rng.normal(size=(6, 8)) for c in dev_unseen])
    dev = np.concatenate([dev_known, dev_unseen])
    dev_sys = np.r_[np.repeat(known, 6), np.repeat(["u1", "u2"], 6)]

    cal = fit_calibration("knn", ref, ref_sys, dev, dev_sys)
    assert cal.negatives == NEGATIVES_UNSEEN and cal.unknown_systems == ["u1", "u2"]
    assert (cal.n_known, cal.n_unknown) == (24, 12) and cal.slope > 0 and cal.temperature > 0
    p = cal.p_known(np.r_[0.99, 0.5])
    assert p[0] > p[1]

    loso = fit_calibration("centroid", ref, ref_sys, dev_known, np.repeat(known, 6))  # dev: no unseen system
    assert loso.negatives == NEGATIVES_LOSO and loso.unknown_systems == known
    assert (loso.n_known, loso.n_unknown) == (24, 24) and loso.slope > 0

    with pytest.raises(CalibrationError, match="no clips of the training systems"):
        fit_calibration("knn", ref, ref_sys, dev_unseen, np.repeat(["u1", "u2"], 6))


# -- a real bundle (slow) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    from sourcetrace.config import Config
    from sourcetrace.training.loop import train

    out = tmp_path_factory.mktemp("calibration_run") / "run"
    train(Config.from_dict({"data.root": str(tiny_corpus), **TRAIN}), out)
    return out


@pytest.fixture(scope="module")
def protocols(tiny_corpus, tmp_path_factory):
    """Copies of the tiny corpus's protocol: as it is, with eval changed, and with dev changed."""
    base = tmp_path_factory.mktemp("protocols")
    out = {}
    for name in ("same", "eval_changed", "dev_changed"):
        shutil.copytree(tiny_corpus / "protocol", base / name)
        out[name] = base / name
    ev = (out["eval_changed"] / "eval.csv").read_text().splitlines(keepends=True)
    (out["eval_changed"] / "eval.csv").write_text("".join(ev[: 1 + len(ev) // 3]))  # two thirds of eval gone
    dev = (out["dev_changed"] / "dev.csv").read_text().splitlines(keepends=True)
    (out["dev_changed"] / "dev.csv").write_text("".join(dev[:1] + dev[1::2]))  # half of dev gone
    return out


@pytest.mark.slow
def test_export_fits_the_calibration_on_dev_only_and_trace_prints_it_beside_raw_scores(
    run, tiny_corpus, protocols, tmp_path, capsys
):
    import sourcetrace
    from sourcetrace.bundle import files
    from sourcetrace.bundle.files import BundleError
    from sourcetrace.cli import main
    from sourcetrace.data.protocol import read_protocol

    bundles = {}
    for name, folder in protocols.items():
        bundles[name] = tmp_path / name
        args = ["export", "--model", str(run), "--out", str(bundles[name]), "--protocol", str(folder)]
        assert main([*args, "--device", "cpu"]) == 0
    assert "calibration: platt(knownness" in capsys.readouterr().out
    stored = {k: json.loads((b / files.CALIBRATION).read_text()) for k, b in bundles.items()}
    assert stored["eval_changed"] == stored["same"], "eval must not touch the calibration"
    assert stored["dev_changed"] != stored["same"], "the calibration is fitted on dev"

    cal = stored["same"]
    proto = read_protocol(tiny_corpus, splits=("dev",))
    dev, known = proto.tables["dev"], set(proto.known_systems)
    assert cal["split"] == "dev" and cal["n_known"] == int(dev["system"].isin(known).sum())
    assert cal["negatives"] == NEGATIVES_UNSEEN and cal["n_unknown"] == int((~dev["system"].isin(known)).sum())
    assert cal["unknown_systems"] == sorted(set(dev["system"]) - known)
    assert cal["slope"] >= 0 and cal["temperature"] > 0

    bundle = bundles["same"]
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    clips = sorted(ev.groupby("system")["file"].first())[:6]
    tracer = sourcetrace.load(bundle, device="cpu")
    res = tracer.trace(clips, top_k=3)
    for r in res:
        assert 0.0 <= r.p_known <= 1.0 and len(r.top_p) == 3 and r.calibration.startswith("platt(knownness)")
        assert r.top_p == sorted(r.top_p, reverse=True) and sum(r.top_p) <= 1.0 + 1e-9
        assert (r.decision == "unknown") == (r.knownness < tracer.threshold["value"])  # decisions: the raw score
        d = r.to_dict()
        assert [set(t) for t in d["top"]] == [{"system", "score", "p"}] * 3 and "top_p" not in d
    order = np.argsort([r.knownness for r in res])
    assert (np.diff([res[i].p_known for i in order]) >= 0).all()

    assert main(["trace", "--model", str(bundle), "--no-progress", *clips[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("# calibration: platt(knownness") and "not probabilities" in ln for ln in lines)
    rows = [ln.split("\t") for ln in lines if not ln.startswith("#")]
    assert all("(p " in r[2] and r[3].startswith("knownness ") and "(P(known) " in r[3] for r in rows)
    assert main(["trace", "--model", str(bundle), "--format", "csv", *clips[:2]]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert header[:5] == ["path", "decision", "system1", "score1", "p1"] and "p_known" in header

    # a bundle exported before calibrations: traces as before, probabilities null
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    (old / files.CALIBRATION).unlink()
    r = sourcetrace.load(old, device="cpu").trace(clips[:1])[0]
    assert r.p_known is None and r.calibration is None and r.top_p == [] and r.decision
    assert all(t["p"] is None for t in r.to_dict()["top"])
    assert main(["trace", "--model", str(old), "--no-progress", clips[0]]) == 0
    assert "# calibration: none in this bundle" in capsys.readouterr().out

    # a damaged calibration: one error naming the file and the field
    (old / files.CALIBRATION).write_text(json.dumps(cal | {"temperature": -1}))
    with pytest.raises(BundleError, match=r"calibration\.json: field 'temperature' must be > 0"):
        sourcetrace.load(old, device="cpu")
    (old / files.CALIBRATION).write_text("{not json")
    with pytest.raises(BundleError, match=r"calibration\.json: not valid JSON"):
        sourcetrace.load(old, device="cpu")

    # reliability on eval with the bundle's own calibration
    from sourcetrace.commands.analyze import analyze_calibration
    from sourcetrace.evaluation.analyze import calibration_summary

    rel = analyze_calibration(bundle, tiny_corpus, split="eval", out=tmp_path / "rel", device="cpu")
    assert rel["source"] == f"the bundle's {files.CALIBRATION}"
    m = rel["metrics"]
    assert 0.0 <= m["calibration_ece_knownness"] <= 1.0 and 0.0 <= m["calibration_ece_top1"] <= 1.0
    report = json.loads((tmp_path / "rel" / "calibration.json").read_text())
    assert report["calibration"] == cal and report["split"] == "eval"
    n_eval = len(read_protocol(tiny_corpus, splits=("eval",)).tables["eval"])
    assert sum(report["reliability"]["knownness"]["count"]) == n_eval
    assert (tmp_path / "rel" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "expected calibration error of P(known)" in calibration_summary(rel, "eval")


def test_reliability_diagram_png(tmp_path):
    from sourcetrace.evaluation.plots import plot_reliability

    rng = np.random.default_rng(5)
    p = rng.random(500)
    rels = [reliability(p, rng.random(500) < p, "knownness"), reliability([0.95] * 3, [True] * 3, "top-1 system")]
    path = plot_reliability(rels, tmp_path / "r" / "reliability.png", "test")  # empty bins included
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no reliability"):
        plot_reliability([], tmp_path / "none.png")
