"""Every sweep file loads and every trial config validates; bad keys and pairings fail before Ray starts."""

import json
from pathlib import Path

import numpy as np
import pytest

from sourcetrace.cli import main
from sourcetrace.errors import ConfigError, SourcetraceError
from sourcetrace.sweep import RECORD
from sourcetrace.sweep.spec import load_sweep, pin_overrides, validate

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("*.py"))
MLAAD_TRAIN_CLASSES = 24


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_file_loads_and_validates(path, smoke):
    sweep = load_sweep(path, smoke=smoke)
    configs = validate(sweep, n_classes=None if smoke else MLAAD_TRAIN_CLASSES)
    assert configs, path
    assert sweep.name == path.stem + ("_smoke" if smoke else "")
    for _, cfg in configs:
        if cfg.loss.name in ("ge2e", "angleproto"):
            assert cfg.sampler.name == "balanced"
    if smoke:
        assert sweep.resources.get("gpu", 0) == 0, "smoke variants run on CPU"


def test_table1_resnet_is_the_papers_grid():
    sweep = load_sweep(SWEEPS[0].parent / "table1_resnet.py")
    configs = [cfg for _, cfg in validate(sweep, MLAAD_TRAIN_CLASSES)]
    assert len(configs) == 32  # 3 classification losses x 2 samplers + 2 metric losses x balanced, x 4 dims
    assert {c.model.embedding_dim for c in configs} == {10, 50, 200, 512}
    assert {c.train.batch_size for c in configs if c.sampler.name == "random"} == {128}
    assert {(c.train.batch_size, c.sampler.per_class) for c in configs if c.sampler.name == "balanced"} == {(24, 2)}
    assert all(c.train.epochs == 300 and c.train.eval_every == 25 and c.train.lr == 1e-4 for c in configs)
    assert 0 < sweep.resources["gpu"] < 1


def test_aasist_grid_beside_the_resnet_at_one_budget_one_gpu_per_trial():
    sweep = load_sweep(SWEEPS[0].parent / "table1_aasist.py")
    configs = [cfg for _, cfg in validate(sweep, MLAAD_TRAIN_CLASSES)]
    assert len(configs) == 96 and {c.model.name for c in configs} == {"w2v2_aasist", "thin_resnet34"}
    assert {c.loss.name for c in configs} == {"amsoftmax", "aamsoftmax"} and sweep.resources["gpu"] == 1
    assert {c.train.seed for c in configs} == {0, 1, 2}
    # equal compute: one batch for both samplers, an epoch of len(train) // batch steps for either
    assert {(c.train.batch_size, c.train.epoch_steps, c.train.epochs, c.train.steps_per_epoch) for c in configs} == {
        (32, "clips", 100, 0)
    }
    pin_overrides(sweep, ["model.name=w2v2_aasist", "train.seed=0", "train.epoch_steps=voxceleb"])
    paper = [cfg for _, cfg in validate(sweep, MLAAD_TRAIN_CLASSES)]
    assert len(paper) == 16 and {c.model.name for c in paper} == {"w2v2_aasist"}  # the paper's own grid


def test_findings_sweep_is_table1_at_equal_compute_with_seeds():
    from sourcetrace.data.corpus.systems import plan
    from sourcetrace.data.samplers import SAMPLERS
    from sourcetrace.training.loop import steps_per_epoch

    sweep = load_sweep(SWEEPS[0].parent / "findings_cpu.py")
    configs = [cfg for _, cfg in validate(sweep, MLAAD_TRAIN_CLASSES)]
    table1 = [cfg for _, cfg in validate(load_sweep(SWEEPS[0].parent / "table1_resnet.py"), MLAAD_TRAIN_CLASSES)]
    assert len(configs) == 72
    assert {(c.loss.name, c.sampler.name) for c in configs} == {(c.loss.name, c.sampler.name) for c in table1}
    assert {c.model.embedding_dim for c in configs} == {10, 50, 512} and {c.train.seed for c in configs} == {0, 1, 2}
    assert {(c.model.name, c.model.channels) for c in configs} == {("thin_resnet34", 8)}
    assert sweep.tune.scheduler == "fifo" and sweep.tune.max_concurrent == 2 and sweep.resources["cpu"] == 1
    assert all(c.train.eval_every == c.train.epochs for c in configs)  # one evaluation, at the end of the budget
    # The same optimiser steps and clips in every cell on the full preset's training split
    train = [clip for clip in plan("full", 0, "flac") if clip.split == "train"]
    systems = sorted({clip.system for clip in train})
    labels = np.array([systems.index(clip.system) for clip in train])
    budgets = set()
    for c in configs:
        sampler = SAMPLERS[c.sampler.name](labels, c.train.batch_size, c.sampler.per_class, c.train.seed)
        budgets.add((c.train.epochs * steps_per_epoch(c, sampler, labels), c.train.batch_size))
    assert budgets == {(sweep.base["train.epochs"] * sweep.base["train.steps_per_epoch"], 24)}


def _write(tmp_path, body: str) -> Path:
    path = tmp_path / "bad.py"
    path.write_text("from ray import tune\n" + body)
    return path


def test_bad_key_names_the_trial_and_the_key(tmp_path):
    path = _write(tmp_path, 'SPACE = {"loss.nmae": tune.grid_search(["ge2e"])}\n')
    with pytest.raises(ConfigError, match=r"trial config 1 of 1 \{loss.nmae='ge2e'\}.*unknown config key 'loss.nmae'"):
        validate(load_sweep(path))


def test_bad_pairing_names_the_trial_and_the_key(tmp_path):
    path = _write(
        tmp_path, 'SPACE = {"loss.name": tune.grid_search(["aamsoftmax", "ge2e"]), "sampler.name": "random"}\n'
    )
    with pytest.raises(
        ConfigError, match=r"trial config 2 of 2 \{loss.name='ge2e', sampler.name='random'\}.*sampler.name=balanced"
    ):
        validate(load_sweep(path))


def test_ranges_and_bundles_are_checked(tmp_path):
    path = _write(tmp_path, 'SPACE = {"train.lr": tune.uniform(-1.0, 1e-3)}\n')
    with pytest.raises(ConfigError, match="train.lr"):
        validate(load_sweep(path))
    path = _write(
        tmp_path, 'RECIPES = {"r": {"a": {"loss.name": "softmax"}}}\nSPACE = {"r": tune.choice(["a", "b"])}\n'
    )
    with pytest.raises(ConfigError, match="recipe r='b' is unknown"):
        validate(load_sweep(path))


def test_file_level_errors(tmp_path):
    with pytest.raises(SourcetraceError, match="unknown TUNE setting"):
        load_sweep(_write(tmp_path, 'SPACE = {"loss.name": "ge2e"}\nTUNE = {"shceduler": "asha"}\n'))
    with pytest.raises(SourcetraceError, match="no SMOKE"):
        load_sweep(_write(tmp_path, 'SPACE = {"loss.name": "softmax"}\n'), smoke=True)
    with pytest.raises(SourcetraceError, match="no SPACE"):
        load_sweep(_write(tmp_path, "BASE = {}\n"))
    with pytest.raises(SourcetraceError, match="failed to import: NameError"):
        load_sweep(_write(tmp_path, "SPACE = {undefined: 1}\n"))
    with pytest.raises(ConfigError, match="Optuna cannot search"):
        validate(
            load_sweep(
                _write(tmp_path, 'SPACE = {"train.seed": tune.grid_search([0, 1])}\nTUNE = {"search": "optuna"}\n')
            )
        )


def test_set_pins_a_searched_key():
    sweep = load_sweep(SWEEPS[0].parent / "demo.py")
    pin_overrides(sweep, ["model.embedding_dim=32", "train.epochs=3"])
    configs = validate(sweep)
    assert "model.embedding_dim" not in sweep.space and len(configs) == 2
    assert {c.model.embedding_dim for _, c in configs} == {32} and {c.train.epochs for _, c in configs} == {3}
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        pin_overrides(sweep, ["train.epoch=3"])


def test_cli_rejects_a_bad_trial_before_ray_starts(tmp_path, tiny_corpus, capsys):
    import ray

    path = _write(tmp_path, 'SPACE = {"loss.name": tune.grid_search(["softmax", "angleproto"])}\n')
    argv = [
        "sweep",
        str(path),
        "--root",
        str(tiny_corpus),
        "--storage",
        str(tmp_path / "ray"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'm.db'}",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trial config 2 of 2 {loss.name='angleproto'}" in err and "sampler.name=balanced" in err
    assert not ray.is_initialized() and not (tmp_path / "ray").exists() and not (tmp_path / "m.db").exists()


def test_cli_resume_and_name_clashes_are_clear(tmp_path, capsys):
    demo = str(SWEEPS[0].parent / "demo.py")
    argv = ["sweep", demo, "--root", str(tmp_path), "--storage", str(tmp_path / "ray")]
    assert main(argv + ["--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    exp = tmp_path / "ray" / "demo"
    exp.mkdir(parents=True)
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    assert main(argv) == 2  # Tune's files without a sourcetrace record: not ours to resume
    assert "no sourcetrace sweep recorded: pass --name" in capsys.readouterr().err
    launched = {"sweep_sha256": "0" * 64, "smoke": False, "set": [], "root": str(tmp_path.resolve()), "protocol": None}
    (exp / RECORD).write_text(json.dumps({"launch": launched}))
    assert main(argv) == 2  # the same name, another sweep file
    assert f"a sweep named 'demo' at {exp} was launched with another sweep file: pass --name" in capsys.readouterr().err
    assert main(argv + ["--set", "train.epochs=2"]) == 2
    assert "launched with another sweep file, --set: pass --name" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["table1_resnet", "table1_aasist", "search_resnet"])
def test_mlaad_sweeps_wrap_pad_short_clips_as_voxceleb_trainer(name):
    """A clip shorter than the crop must not stop a long MLAAD sweep at start."""
    sweep = load_sweep(SWEEPS[0].parent / f"{name}.py")
    assert sweep.base["data.short_clips"] == "pad"


def test_dashboard_without_its_packages_is_one_clear_error(tmp_path, capsys):
    import importlib.util

    if all(importlib.util.find_spec(m) for m in ("aiohttp_cors", "opencensus", "prometheus_client")):
        pytest.skip("Ray's dashboard packages are installed here")
    argv = ["sweep", str(SWEEPS[0]), "--root", str(tmp_path), "--storage", str(tmp_path / "ray"), "--dashboard"]
    assert main(argv) == 2
    assert "pip install 'sourcetrace[dashboard]'" in capsys.readouterr().err and not (tmp_path / "ray").exists()


def test_augmentation_is_off_in_table1_and_the_only_difference_in_the_robustness_sweep():
    for name in ("table1_resnet", "table1_aasist"):
        assert not any(cfg.augment.active for _, cfg in validate(load_sweep(SWEEPS[0].parent / f"{name}.py"), 24))
    configs = [cfg for _, cfg in validate(load_sweep(SWEEPS[0].parent / "robustness.py"), MLAAD_TRAIN_CLASSES)]
    assert [c.augment.active for c in configs] == [False, True]
    off, on = (c.to_flat() for c in configs)
    assert {k for k in off if off[k] != on[k]} <= {k for k in off if k.startswith("augment.")}
    assert set(configs[1].augment.rendered()) == {"mp3_32", "opus_16", "amr_nb", "replay"}
