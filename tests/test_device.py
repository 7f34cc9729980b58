"""Device guards: a GPU trial runs on CUDA or fails naming the CUDA build and driver; a zero-GPU trial
never touches CUDA; ``cuda:N`` is checked against the device count; a fractional GPU caps memory.

Without a GPU here, ``torch.cuda`` queries are patched only where a GPU would have to exist.
"""

import importlib
import os

import pytest
import torch

import sourcetrace.device as device_module
from sourcetrace.device import device_name, device_report, resolve_device, share_gpu_memory, trial_device
from sourcetrace.errors import ConfigError, SourcetraceError, TrainingError

NO_GPU = not torch.cuda.is_available()


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_gpu_trial_without_cuda_fails_naming_the_cuda_build_and_driver(no_cuda):
    with pytest.raises(TrainingError) as err:
        trial_device("auto", 0.25)
    msg = str(err.value)
    assert "holds 0.25 GPU but CUDA is not available" in msg
    assert (f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build") in msg
    assert "driver" in msg


def test_gpu_trial_may_not_ask_for_cpu():
    with pytest.raises(ConfigError, match="train.device='cpu' but the trial holds 1 GPU"):
        trial_device("cpu", 1.0)


def test_zero_gpu_trial_is_cpu_with_cuda_hidden(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert trial_device("auto", 0.0) == torch.device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # Ray >= 2.48 leaves GPUs visible to zero-GPU workers
    with pytest.raises(ConfigError, match="train.device='cuda:0' but the trial holds no GPU"):
        trial_device("cuda:0", 0.0)


def test_cuda_index_is_checked_against_the_device_count(two_gpus):
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"train.device='cuda:2': this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match=r"this machine has 2"):
        trial_device("cuda:5", 1.0)


def test_explicit_cuda_without_cuda_names_the_build(no_cuda):
    with pytest.raises(ConfigError, match=r"train.device='cuda' but CUDA is not available here \(torch "):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="train.device='tpu': use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.fixture
def real_memory_fraction(monkeypatch):
    """torch's own ``set_per_process_memory_fraction`` with its argument checks; only the CUDA runtime beneath it
    (lazy init, the current device, the allocator call) is replaced, since no GPU exists here."""
    calls = []
    module = importlib.import_module(torch.cuda.set_per_process_memory_fraction.__module__)
    monkeypatch.setattr(module, "_lazy_init", lambda: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_setMemoryFraction", lambda f, d: calls.append((f, d)), raising=False)
    return calls


def test_memory_is_capped_to_the_fractional_share_only(real_memory_fraction):
    # a bare "cuda" (what resolve_device("auto") returns) has no index: torch refuses it, so the share names one
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_per_process_memory_fraction(0.25, torch.device("cuda"))
    share_gpu_memory(torch.device("cuda"), 0.25)
    share_gpu_memory(torch.device("cuda:1"), 0.5)
    share_gpu_memory(torch.device("cuda"), 1.0)  # a whole GPU: no cap
    share_gpu_memory(torch.device("cpu"), 0.5)
    assert real_memory_fraction == [(0.25, 0), (0.5, 1)]
    assert device_name(torch.device("cpu")) == "cpu"


def test_auto_on_the_cpu_of_a_machine_with_an_nvidia_gpu_is_a_warning(monkeypatch, no_cuda):
    """A torch build the driver cannot run leaves CUDA unavailable: auto then trains on the CPU, and says so."""
    monkeypatch.setattr(device_module, "nvidia_gpu_present", lambda: True)  # the one thing no CPU machine has
    cpu = resolve_device("auto")
    lines = device_report("auto", cpu)
    assert lines[0] == "device: cpu"
    assert lines[1].startswith("warning: train.device=auto runs on the CPU although this machine has an NVIDIA GPU")
    assert "torch " in lines[1] and "TORCH_INDEX" in lines[1]
    assert device_report("cpu", cpu) == ["device: cpu"]  # asked for: no warning
    monkeypatch.setattr(device_module, "nvidia_gpu_present", lambda: False)
    assert device_report("auto", cpu) == ["device: cpu"]  # no GPU at all: nothing to say


@pytest.mark.slow
@pytest.mark.skipif(not NO_GPU, reason="a CUDA machine would run the GPU trial")
def test_gpu_trial_on_a_cpu_node_fails_once_and_a_zero_gpu_trial_reports_cpu(tiny_corpus, tmp_path):
    """Real local Ray advertising one GPU on a machine with none: the trial fails clearly, not on CPU."""
    import ray
    from ray import tune

    from sourcetrace.localray import loopback_only
    from sourcetrace.sweep.retry import NoRetryCallback
    from sourcetrace.sweep.spec import TrialSpec
    from sourcetrace.sweep.trainable import run_trial

    base = {
        "data.root": str(tiny_corpus),
        "train.epochs": 1,
        "train.steps_per_epoch": 1,
        "model.channels": 8,
        "model.embedding_dim": 16,
        "data.crop_seconds": 1.0,
        "data.eval_seconds": 1.0,
        "data.short_clips": "pad",
        "data.max_clips_per_class": 4,
        "train.batch_size": 8,
    }
    loopback_only()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        outcome = {}
        for gpus in (1, 0):
            trainable = tune.with_resources(
                tune.with_parameters(run_trial, spec=TrialSpec(base=base)), {"cpu": 1, "gpu": gpus}
            )
            tuner = tune.Tuner(
                trainable,
                param_space={"train.seed": 0},
                run_config=tune.RunConfig(
                    name=f"gpu{gpus}",
                    storage_path=str(tmp_path / "ray"),
                    callbacks=[NoRetryCallback()],
                    failure_config=tune.FailureConfig(max_failures=2),
                    verbose=0,
                ),
            )
            outcome[gpus] = tuner.fit()[0]
    finally:
        ray.shutdown()
    failed = outcome[1]
    assert failed.error is not None and "CUDA is not available" in str(failed.error)
    assert "built for CUDA" in str(failed.error) or "CPU build" in str(failed.error)
    assert not list((tmp_path / "ray" / "gpu1").rglob("metrics.jsonl"))  # nothing trained on the CPU
    assert outcome[0].error is None and outcome[0].metrics["device"] == "cpu"


def test_bundle_device_errors_name_the_flag():
    from sourcetrace.device import flag_device as bundle_device

    with pytest.raises(SourcetraceError, match="--device 'mps': use auto, cpu, cuda or cuda:N"):
        bundle_device("mps")
