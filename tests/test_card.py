"""The model card (Hugging Face form, no machine paths, numbers from the metrics, fused dimensions, enrolment
updates) and the JSON schema of ``trace --format json``, without training a model."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pandas as pd
import pytest
import yaml

from sourcetrace.artefacts import Resolved
from sourcetrace.attribution import trace_schema
from sourcetrace.bundle import card, files
from sourcetrace.config import Config
from sourcetrace.evaluation.openset import Threshold

KNOWN = ["pico", "espeak_default", "flite_slt"]
METRICS = {  # as a checkpoint records them (metrics.json's "best")
    "dev_eer": 12.5,
    "dev_min_dcf": 0.41,
    "dev_eer.lang_seen___model_seen": 4.0,
    "dev_eer.lang_seen___model_not_seen": 30.0,
    "dev_openset_auroc": 0.8,
    "dev_openset_closed_accuracy": 0.9,
    "dev_openset_false_known_rate": 0.4,
    "dev_openset_false_unknown_rate": 0.05,
    "dev_openset_n_known": 40.0,
    "dev_openset_n_unknown": 20.0,
    "train_acc": 0.99,
}
BASELINE = {"dev_eer": 20.0, "dev_eer.lang_seen___model_seen": 9.0, "dev_eer.lang_seen___model_not_seen": 25.0}


def _table(rows):
    return pd.DataFrame(rows, columns=["system", "language", "condition"])


@pytest.fixture
def parts(tmp_path):
    """What export hands ``model_card``: a model trained in a sweep (with its baseline), its corpus."""
    root = tmp_path / "machine" / "data" / "tinycorpus"
    (root / "protocol").mkdir(parents=True)
    (root / "corpus.json").write_text(json.dumps({"preset": "tiny", "seed": 0}))
    sweep = tmp_path / "machine" / "runs" / "sweep"
    ckpt = sweep / "trial_0" / "checkpoint_000003"
    ckpt.mkdir(parents=True)
    (sweep / "sourcetrace_sweep.json").write_text("{}")
    (sweep / "baseline.json").write_text(json.dumps({"metrics": BASELINE}))
    cfg = Config.from_dict({"data.root": str(root), "model.embedding_dim": 50})
    train = _table([(s, "en", "lang_seen___model_seen") for s in KNOWN for _ in range(4)])
    dev = _table(
        [(s, "en", "lang_seen___model_seen") for s in KNOWN for _ in range(2)]
        + [("pico_griffinlim", "en", "lang_seen___model_not_seen")] * 3
        + [("pico", "it", "lang_not_seen___model_seen")] * 2
    )
    proto = SimpleNamespace(root=root, folder=root / "protocol", tables={"train": train, "dev": dev})
    loaded = SimpleNamespace(
        config=cfg, meta={"epoch": 3}, known_systems=tuple(KNOWN), model=SimpleNamespace(embedding_dim=50)
    )
    thr = Threshold(0.95, "fur", 0.05, 0.05, 0.4, 40, 20, scorer="knn")
    threshold = thr.to_dict() | {"description": thr.describe(), "scorer": "knn"}
    resolved = Resolved("sweep", sweep, ckpt, sweep / "best_model")
    return SimpleNamespace(loaded=loaded, train=train, proto=proto, threshold=threshold, resolved=resolved)


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def _make(p, **kw):
    return card.model_card(p.loaded, METRICS, p.train, p.proto, p.threshold, "knn", p.resolved, **kw)


def test_the_card_is_a_hugging_face_card_with_its_limits_and_no_machine_paths(parts, tmp_path):
    data, md = _make(parts)
    assert not [s for s in _strings(data) if s.startswith("/") or str(tmp_path) in s]
    assert str(tmp_path) not in md and "/machine/" not in md
    assert data["source"] == {"kind": "sweep", "name": "sweep", "checkpoint": "trial_0/checkpoint_000003"}
    corpus = data["training_corpus"]
    assert corpus["name"] == "tinycorpus" and corpus["protocol"] == "protocol" and corpus["preset"] == "tiny"
    assert "root" not in corpus and corpus["n_clips_per_system"] == dict.fromkeys(sorted(KNOWN), 4)

    assert md.startswith("---\n")
    header = yaml.safe_load(md.split("---\n")[1])
    assert header["library_name"] == "sourcetrace" and header["license"] == "mit"
    assert "source-tracing" in header["tags"] and header["datasets"] == ["tinycorpus"]
    assert header["language"] == ["en"] and "eer" in header["metrics"]
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    for name in ("Intended use", "Out-of-scope use", "Training data", "Evaluation", "Known failure modes"):
        assert f"## {name}" in sections
    assert "## How to read the scores" in sections and "## Enrolled systems" in sections
    assert "Real human speech" in md and "absent from the training list" in md


def test_the_cards_numbers_are_the_metrics_with_counts_and_intervals(parts):
    data, md = _make(parts)
    for key, value in METRICS.items():  # every recorded number, where the condition puts it
        name, _, cond = key.partition(".")
        assert data["metrics"][cond or "all"][name] == value
    assert data["baseline_metrics"]["all"]["dev_eer"] == 20.0
    ev = data["evaluation"]["dev"]
    assert ev["n_clips"] == 11 and ev["unknown_systems"] == ["pico_griffinlim"]
    assert ev["conditions"]["lang_seen___model_not_seen"] == {"n_clips": 3, "n_systems": 1}
    assert ev["conditions"]["lang_not_seen___model_seen"] == {"n_clips": 2, "n_systems": 1}
    fkr = data["intervals"]["dev_openset_false_known_rate"]
    assert fkr["n"] == 20 and fkr["ci95"][0] < 0.4 < fkr["ci95"][1]
    lo, hi = card.wilson(8, 20)
    assert fkr["ci95"] == [lo, hi] and 0.21 < lo < 0.22 and 0.61 < hi < 0.62
    assert data["open_set"]["threshold_intervals"]["false_known_rate"]["ci95"] == [lo, hi]
    assert "40.0 % (95 % CI 21.9-61.3 %, n = 20)" in md
    # where the featureless baseline does better: measured, listed as out of scope and as a failure mode
    assert data["loses_to_baseline"] == [
        {"metric": "dev_eer", "condition": "lang_seen___model_not_seen", "model": 30.0, "baseline": 25.0}
    ]
    assert md.count("dev_eer on lang_seen___model_not_seen (30.00 vs 25.00)") == 2
    assert "| condition | dev clips | dev_eer | baseline dev_eer |" in md
    assert "| all | 11 | 12.50 | 20.00 |" in md and "| lang_seen___model_not_seen | 3 | 30.00 | 25.00 |" in md
    assert "This bundle holds no calibration" in md


def test_the_card_quotes_the_calibration_when_the_bundle_has_one(parts):
    data, md = _make(parts, calibration={"method": "logistic", "description": "logistic on knownness, dev"})
    assert data["calibration"]["method"] == "logistic" and "`p_known` is the calibrated probability" in md
    assert "logistic on knownness, dev" in md


def test_a_wilson_interval_is_a_95_percent_interval_of_a_proportion():
    for k, n in ((0, 1), (3, 10), (10, 10), (57, 200)):
        lo, hi = card.wilson(k, n)
        assert 0 <= lo <= k / n <= hi <= 1
    assert card.wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    with pytest.raises(ValueError, match="n >= 1"):
        card.wilson(0, 0)


def test_a_fused_cards_dimension_is_the_fused_networks_and_its_members_are_relative(parts, tmp_path):
    a = Config.from_dict({"model.embedding_dim": 50, "loss.name": "ge2e"})
    b = Config.from_dict({"model.embedding_dim": 50, "loss.name": "aamsoftmax"})
    members = [
        {"checkpoint": str(parts.resolved.path / "trial_0" / "checkpoint_000003"), "weight": 0.5},
        {"checkpoint": str(tmp_path / "elsewhere" / "trial_7" / "best"), "weight": 0.5},
    ]
    parts.loaded.meta = {"fusion": members}
    fused = parts.resolved.path / "fusion"  # sweep/fuse.py's folder, beside the trials
    parts.resolved = Resolved("fusion", fused, fused, fused / "bundle")
    parts.loaded.model = SimpleNamespace(embedding_dim=100, configs=[a, b])  # as FusedNetwork: concatenated
    data, md = _make(parts)
    assert data["model"]["embedding_dim"] == 100 and data["model"]["name"] == "fusion"
    assert [m["embedding_dim"] for m in data["model"]["fusion"]] == [50, 50]
    assert [m["checkpoint"] for m in data["model"]["fusion"]] == ["trial_0/checkpoint_000003", "trial_7/best"]
    assert md.splitlines()[md.splitlines().index("---", 1) + 2].endswith(": 100-d")
    assert not [s for s in _strings(data) if s.startswith("/")]


def test_enrolment_rewrites_the_card_with_systems_counts_and_overlaps(parts, tmp_path):
    data, md = _make(parts)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    files.write_json(bundle / files.CARD_JSON, data)
    files.atomic_write(bundle / files.CARD_MD, md)
    clip = {"path": "x.wav", "sha256": "0" * 64, "embedding": [0.0]}
    systems = [{"name": "new_a", "clips": [clip] * 3}, {"name": "new_b", "clips": [clip] * 5}]
    overlap = {"nearest": "pico", "n_clips": 3, "known_as": 3, "overlaps": True}
    card.write_card(bundle, card.enrolled_card(bundle, systems, {"new_a": overlap}))
    got = json.loads((bundle / files.CARD_JSON).read_text())
    assert got["enrolled_systems"] == [
        {"name": "new_a", "n_clips": 3, "overlap": overlap},
        {"name": "new_b", "n_clips": 5, "overlap": None},
    ]
    text = (bundle / files.CARD_MD).read_text()
    assert "- new_a: 3 clips; before enrolment 3 of 3 of its clips were attributed to pico as known (overlaps it)" in (
        text
    )
    assert "- new_b: 5 clips" in text and text.count("## Enrolled systems") == 1
    card.write_card(bundle, card.enrolled_card(bundle, systems[:1], {}))  # new_b removed: new_a's overlap kept
    got = json.loads((bundle / files.CARD_JSON).read_text())
    assert got["enrolled_systems"] == [{"name": "new_a", "n_clips": 3, "overlap": overlap}]
    assert "new_b" not in (bundle / files.CARD_MD).read_text()
    assert card.enrolled_card(tmp_path, systems, {}) == {}  # no card, nothing to rewrite


def test_an_older_cards_text_stays_and_gets_an_enrolled_section(tmp_path):
    files.write_json(tmp_path / files.CARD_JSON, {"created": "then", "metrics": {}})
    files.atomic_write(tmp_path / files.CARD_MD, "# sourcetrace model: old\n\n## Open-set decision\nx.\n")
    systems = [{"name": "s", "clips": [{}] * 2}]
    for _ in range(2):  # rewriting twice replaces the section, never repeats it
        card.write_card(tmp_path, card.enrolled_card(tmp_path, systems, {}))
    text = (tmp_path / files.CARD_MD).read_text()
    assert text.startswith("# sourcetrace model: old\n") and text.count("## Enrolled systems") == 1
    assert "- s: 2 clips" in text
    (tmp_path / files.CARD_JSON).write_text("[1, 2]")
    with pytest.raises(files.BundleError, match="model_card.json: not a model card"):
        card.enrolled_card(tmp_path, systems, {})


def _record(**change):
    rec = {
        "path": "case/a.flac",
        "sha256": "a" * 64,
        "duration_s": 3.2,
        "sample_rate": 16000,
        "input": [],
        "level": "peak-normalised",
        "decision": "pico",
        "top": [{"system": "pico", "score": 0.97, "p": 0.8}, {"system": "sam", "score": 0.5}],
        "knownness": 0.97,
        "p_known": 0.9,
        "calibration": "logistic",
        "error": None,
        "threshold": 0.95,
        "operating_point": "x",
        "crop": "center",
        "bundle_sha256": "b" * 64,
        "enrolled_sha256": "c" * 64,
        "sourcetrace_version": "0.1.0",
        "traced_at": "2026-01-02T03:04:05Z",
    }
    return rec | change


def test_the_trace_schema_is_strict_and_allows_the_calibrated_fields():
    schema = trace_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    ok = jsonschema.Draft202012Validator(schema)
    no_cal = {k: v for k, v in _record().items() if k not in ("p_known", "calibration")}
    failed = _record(decision=None, top=[], knownness=None, level=None, error="missing.wav: file does not exist")
    failed |= {"sha256": None, "duration_s": None, "sample_rate": None}
    ok.validate([_record(), no_cal, _record(p_known=None, calibration=None), failed])
    bad = [
        _record(extra=1),  # an undeclared field
        _record(p_known=1.2),
        _record(top=[{"system": "pico", "score": 0.9, "p": -0.1}]),
        _record(top=[{"system": "pico", "score": 0.9, "rank": 1}]),
        _record(sha256="xyz"),
        _record(traced_at="yesterday"),
        _record(decision=None),  # no error, so a decision is due
        _record(error="boom"),  # an error, but a decision
        {k: v for k, v in _record().items() if k != "bundle_sha256"},
    ]
    for rec in bad:
        assert not ok.is_valid([rec]), rec
    assert math.isclose(schema["$defs"]["probability"]["maximum"], 1)


def test_the_schema_ships_with_the_package():
    import sourcetrace.schemas

    assert (Path(sourcetrace.schemas.__file__).parent / "trace.schema.json").is_file()
    text = Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text()
    assert '"sourcetrace.schemas" = ["*.schema.json"]' in text
