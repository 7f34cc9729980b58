"""Checkpoints are read with ``weights_only=True``: a crafted ``state.pt`` cannot run code anywhere it is loaded."""

import json
import pickle
import pickletools
import zipfile
from pathlib import Path

import pytest
import torch

from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.errors import CheckpointError
from sourcetrace.training.checkpoint import load_model, load_state, load_weights, save_checkpoint


class Payload:
    """Unpickling this writes ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def crafted_checkpoint(folder: Path, marker: Path) -> Path:
    folder.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload(marker)}, folder / "state.pt")
    (folder / "config.json").write_text(Config().to_json())
    (folder / "meta.json").write_text(json.dumps({"known_systems": ["a", "b"], "embedding_dim": 50}))
    return folder


def test_the_payload_is_real_when_unpickled_unsafely(tmp_path):
    """Guards the test itself: the payload runs under a plain unpickler, and state.pt carries it."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # what an unsafe loader does with it
    assert marker.read_text() == "ran"
    folder = crafted_checkpoint(tmp_path / "evil", tmp_path / "other")
    with zipfile.ZipFile(folder / "state.pt") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    globals_ = [arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]
    assert any(g.endswith(" exec") for g in globals_)  # the checkpoint's pickle calls exec


@pytest.mark.parametrize("loader", [load_weights, load_state, load_model], ids=lambda f: f.__name__)
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, loader):
    marker = tmp_path / "ran"
    folder = crafted_checkpoint(tmp_path / "evil", marker)
    target = folder / "state.pt" if loader is load_weights else folder
    with pytest.raises(CheckpointError, match=r"state.pt: refused to load: .*exec.*could run code"):
        loader(target)
    assert not marker.exists()


def test_trace_with_a_crafted_model_is_one_line_and_runs_nothing(tiny_corpus, tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = crafted_checkpoint(tmp_path / "evil", marker)
    clip = next((tiny_corpus / "fake").rglob("*.flac"))
    assert main(["trace", "--model", str(folder), str(clip)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused to load" in err[0]
    assert not marker.exists()


def test_train_resume_from_a_crafted_checkpoint_is_refused(tiny_corpus, tmp_path):
    from sourcetrace.training.loop import train

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    crafted_checkpoint(run / "last", marker)
    cfg = Config.from_dict({"data.root": str(tiny_corpus), "data.short_clips": "pad", "model.channels": 8})
    with pytest.raises(CheckpointError, match="refused to load"):
        train(cfg, run, resume_from=run / "last")
    assert not marker.exists()


def test_saved_state_holds_only_what_weights_only_loads(tmp_path):
    """numpy scalars/arrays in the state (e.g. metrics) are stored as plain numbers and tensors."""
    import numpy as np

    state = {"model": {"w": torch.ones(2)}, "history": [{"dev_eer": np.float64(3.5)}], "rng": np.arange(3)}
    folder = save_checkpoint(tmp_path / "ck", Config(), state, {"known_systems": ["a", "b"]})
    assert torch.serialization.get_unsafe_globals_in_checkpoint(folder / "state.pt") == []
    loaded = load_weights(folder / "state.pt")
    assert loaded["history"][0]["dev_eer"] == 3.5 and type(loaded["history"][0]["dev_eer"]) is float
    assert torch.equal(loaded["rng"], torch.arange(3))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", Config(), {"model": {"w": torch.ones(1000)}}, {"known_systems": []})
    data = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint"):
        load_weights(folder / "state.pt")
