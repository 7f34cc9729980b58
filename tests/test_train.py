"""The trainer on the tiny real TTS corpus: CLI outputs, exact resume, clear failures."""

import json
import math

import pytest
import torch

from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.errors import AudioError, ConfigError, ProtocolError, TrainingError
from sourcetrace.training.checkpoint import load_model
from sourcetrace.training.loop import train

QUICK = {
    "train.epochs": 2,
    "train.eval_every": 1,
    "train.warmup_epochs": 1,
    "train.steps_per_epoch": 4,
    "train.batch_size": 16,
    "train.lr": 1e-3,
    "model.embedding_dim": 16,
    "model.channels": 8,  # a quarter of the FLOPs: CPU tests stay quick
    "data.crop_seconds": 1.0,
    "data.eval_seconds": 2.0,
    "data.short_clips": "pad",
}


def quick(root, **extra):
    return Config.from_dict({"data.root": str(root), **QUICK, **extra})


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.name=ge2e", "sampler.name=balanced", "train.batch_size=16"],
        ["loss.name=aamsoftmax", "sampler.name=random"],
    ],
    ids=["ge2e", "aamsoftmax"],
)
def test_cli_train_writes_config_metrics_results_and_checkpoints(tiny_corpus, tmp_path, capsys, overrides):
    out = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in QUICK.items() if k != "train.batch_size"] + overrides
    argv = ["train", "--root", str(tiny_corpus), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "dev EER" in printed and "best dev EER" in printed
    assert printed.splitlines()[0] == "device: cpu"  # train says where it runs
    cfg = Config.from_json((out / "config.json").read_text())
    assert cfg.loss.name == overrides[0].split("=")[1]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    results = json.loads((out / "results.json").read_text())
    best = results["best"]
    assert 0.0 <= best["dev_eer"] <= 100.0 and 0.0 <= best["test_eer"] <= 100.0
    assert any(k.startswith("dev_eer.lang_") for k in best) and any(k.startswith("test_eer.lang_") for k in best)
    assert 0.0 <= best["test_openset_auroc"] <= 1.0 and 0.0 <= best["dev_openset_closed_accuracy"] <= 1.0
    loaded = load_model(out)
    assert loaded.path.name == "best" and len(loaded.known_systems) >= 2
    assert (out / "last" / "state.pt").is_file()


class _Stop(Exception):
    pass


def interrupt_after(cfg, out, epoch: int) -> None:
    """Train into ``out`` and stop it right after ``epoch``, as a crash would, leaving ``last/`` behind."""

    def stop(r):
        if r.epoch == epoch:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, out, on_epoch=stop)


def test_resume_reproduces_the_uninterrupted_run(tiny_corpus, tmp_path):
    cfg = quick(tiny_corpus, **{"train.epochs": 4, "train.eval_every": 2, "train.eval_test": False})
    full = train(cfg, tmp_path / "full")

    interrupt_after(cfg, tmp_path / "cut", 2)
    resumed = train(cfg, tmp_path / "cut", resume_from=tmp_path / "cut" / "last")
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert resumed.final_metrics["dev_eer"] == full.final_metrics["dev_eer"]
    assert resumed.best_epoch == full.best_epoch


def test_resume_from_a_resume_only_checkpoint_reproduces_the_run(tiny_corpus, tmp_path):
    """``train.checkpoint_every``: ``last/`` after every k epochs too, not evaluated; resuming there is exact."""
    cfg = quick(tiny_corpus, **{"train.epochs": 3, "train.eval_every": 2, "train.checkpoint_every": 1})
    saved = {}
    full = train(cfg, tmp_path / "full", on_epoch=lambda r: saved.update({r.epoch: (r.evaluated, r.checkpoint_dir)}))
    assert [(e, ev, d is not None) for e, (ev, d) in saved.items()] == [
        (1, False, True),
        (2, True, True),
        (3, True, True),
    ]

    interrupt_after(cfg, tmp_path / "cut", 1)
    assert not (tmp_path / "cut" / "best").exists()  # a resume point is no evaluation: no best yet
    resumed = train(cfg, tmp_path / "cut", resume_from=tmp_path / "cut" / "last")
    timing = ("epoch_seconds", "clips_per_s", "eval_seconds")
    same = [[{k: v for k, v in h.items() if k not in timing} for h in run.history] for run in (full, resumed)]
    assert same[0] == same[1]  # every loss, EER and open-set figure of every epoch
    assert resumed.best_epoch == full.best_epoch
    best = json.loads((tmp_path / "cut" / "best" / "meta.json").read_text())
    assert best["epoch"] == full.best_epoch


def test_test_split_is_scored_only_when_dev_improves_and_the_best_keeps_its_test_numbers(tiny_corpus, tmp_path):
    import torch

    from sourcetrace.training.data import prepare_data
    from sourcetrace.training.loop import score_splits

    cfg = quick(tiny_corpus, **{"train.epochs": 4})
    result = train(cfg, tmp_path / "run")
    best_so_far = math.inf
    for row in result.history:
        assert ("test_eer" in row) == (row["dev_eer"] < best_so_far), row
        best_so_far = min(best_so_far, row["dev_eer"])
    model = load_model(tmp_path / "run").model  # best/: the checkpoint Table 1 reports
    data, cpu = prepare_data(cfg), torch.device("cpu")
    full = score_splits(model, data, cfg, cpu)  # every split, as before
    assert full["test_eer"] == result.best_metrics["test_eer"] and full["dev_eer"] == result.best_metrics["dev_eer"]
    no_gain = score_splits(model, data, cfg, cpu, best_dev_eer=0.0)  # nothing beats 0 %: test is not scored
    assert "dev_eer" in no_gain and not any(k.startswith("test_") for k in no_gain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compiled", [False, "default", "reduce-overhead"], ids=["eager", "compiled", "cuda-graphs"])
def test_two_epochs_train_and_evaluate_on_cuda(tiny_corpus, tmp_path, compiled):
    mode = {"train.compile": True, "train.compile_mode": compiled} if compiled else {}
    cfg = quick(tiny_corpus, **{"train.device": "cuda", **mode})
    result = train(cfg, tmp_path / "cuda")
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    assert 0.0 <= result.best_metrics["dev_eer"] <= 100.0 and "test_eer" in result.best_metrics
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert load_model(tmp_path / "cuda").path.name == "best"  # saved weights load without a compile prefix


def test_without_the_best_copy_only_last_is_written(tiny_corpus, tmp_path):
    from sourcetrace.sweep.trainable import keeps_best_copy

    train(quick(tiny_corpus, **{"train.epochs": 1}), tmp_path / "run", save_best=False)
    assert (tmp_path / "run" / "last" / "state.pt").is_file() and not (tmp_path / "run" / "best").exists()
    assert keeps_best_copy(Config()) and not keeps_best_copy(Config.from_dict({"model.name": "w2v2_aasist"}))


def test_non_finite_loss_stops_with_a_reason(tiny_corpus, tmp_path):
    cfg = quick(tiny_corpus, **{"loss.name": "amsoftmax", "loss.scale": 1e38, "train.epochs": 1})
    with pytest.raises(TrainingError, match=r"non-finite loss .* at epoch 1, step 1"):
        train(cfg, tmp_path / "nan")


def test_bad_pairing_fails_before_the_data_is_read(tmp_path):
    cfg = Config.from_dict({"data.root": str(tmp_path / "nowhere"), "loss.name": "ge2e"})
    with pytest.raises(ConfigError, match="sampler.name=balanced"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unfillable_balanced_batch_is_named_with_the_class_count(tiny_corpus, tmp_path):
    cfg = quick(tiny_corpus, **{"loss.name": "ge2e", "sampler.name": "balanced", "train.batch_size": 400})
    with pytest.raises(ConfigError, match="200 classes cannot be filled from the"):
        train(cfg, tmp_path / "run")


def test_missing_file_is_named_before_decoding(tiny_corpus, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_corpus, root)
    victim = next((root / "fake").rglob("*.*"))
    victim.unlink()
    with pytest.raises(ProtocolError, match=f"protocol rows point at missing files:(.|\n)*{victim.name}"):
        train(quick(root), tmp_path / "run")


def test_short_training_clips_are_an_error_unless_padded_or_dropped(tiny_corpus, tmp_path):
    cfg = quick(tiny_corpus, **{"data.short_clips": "error", "data.crop_seconds": 30.0})
    with pytest.raises(AudioError, match=r"training clips are shorter than the 30.0 s crop(.|\n)*data.short_clips=pad"):
        train(cfg, tmp_path / "run")


def test_lr_schedule_warms_up_then_anneals():
    from sourcetrace.training.loop import lr_lambda

    cfg = Config.from_dict({"train.epochs": 20, "train.warmup_epochs": 10, "train.lr": 1e-4, "train.min_lr": 1e-6})
    f = lr_lambda(cfg, steps_per_epoch=5)
    assert f(0) == pytest.approx(1 / 50) and f(49) == pytest.approx(1.0)
    assert f(50) == pytest.approx(1.0) and f(75) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(99) < 0.02 and f(1000) == pytest.approx(0.01)
    assert all(f(s) >= f(s + 1) for s in range(50, 120)) and not math.isnan(f(10**6))


def test_max_clips_per_class_caps_every_system(tiny_corpus):
    from sourcetrace.training.data import read_tables

    _, tables = read_tables(quick(tiny_corpus, **{"data.max_clips_per_class": 3}))
    for table in tables.values():
        counts = table.groupby("system").size()
        assert counts.max() <= 3 and {"system", "condition", "label"} <= set(table.columns)


def test_the_compile_mode_reaches_torch_compile_which_checks_it(monkeypatch):
    """train.compile_mode is one of torch.compile's modes (a config error otherwise, before any data is read);
    speed_up hands it to torch.compile itself (CUDA graphs with reduce-overhead: measured by the GPU check)."""
    from sourcetrace.training.steps import speed_up

    model = torch.nn.Linear(4, 2)
    for mode in ("default", "reduce-overhead", "max-autotune"):
        cfg = Config.from_dict({"train.compile": True, "train.compile_mode": mode}).check_ranges()
        compiled = speed_up(model, cfg, torch.device("cpu"))  # compiled lazily: nothing runs until called
        assert type(compiled).__name__ == "OptimizedModule" and compiled._orig_mod is model
    assert speed_up(model, Config(), torch.device("cpu")) is model
    with pytest.raises(ConfigError, match="train.compile_mode='graphs' is not one of default, reduce-overhead"):
        Config.from_dict({"train.compile_mode": "graphs"}).check_ranges()


def test_a_collapsed_model_is_divergence_not_a_best_checkpoint(mlaad_corpus):
    """A model that embeds every clip to one point (what lr 1e6 left behind: dev EER 50 %, exit 0, saved as
    best) is a DivergenceError at its evaluation, as a non-finite one is; the trainer then names the epoch."""
    from sourcetrace.errors import DivergenceError
    from sourcetrace.training.data import prepare_data
    from sourcetrace.training.loop import score_splits

    class OnePoint(torch.nn.Module):
        def forward(self, wave):
            return torch.ones(len(wave), 8) + 1e-6 * wave[:, :8]

    cfg = quick(mlaad_corpus, **{"train.eval_test": False})
    data = prepare_data(cfg)
    with pytest.raises(DivergenceError, match=r"the embeddings collapsed: all \d+ clips embed to one point"):
        score_splits(OnePoint(), data, cfg, torch.device("cpu"))

    class Levels(torch.nn.Module):
        def forward(self, wave):
            return wave[:, : 8 * 400].reshape(len(wave), 8, 400).std(-1)

    assert 0 <= score_splits(Levels(), data, cfg, torch.device("cpu"))["dev_eer"] <= 100
