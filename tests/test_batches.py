"""Planned epochs cut the crops of ``WaveBank.random_crops`` step by step, on the host or resident on a device."""

import numpy as np
import pytest
import torch

from sourcetrace.data.bank import WaveBank
from sourcetrace.data.samplers import SAMPLERS
from sourcetrace.training.batches import Crops, plan_epoch


def _bank():
    rng = np.random.default_rng(0)
    lengths = [900, 50, 400, 1000, 399, 7, 1200, 401]  # some shorter than the 400-sample crop: wrap-padded
    return WaveBank.from_arrays([rng.uniform(-1, 1, n).astype(np.float32) for n in lengths], 16000)


@pytest.mark.parametrize("resident", [False, True], ids=["host-gather", "device-gather"])
def test_planned_crops_equal_random_crops_step_by_step(resident):
    bank, labels = _bank(), np.array([0, 1, 0, 1, 2, 2, 3, 3])
    sampler = SAMPLERS["random"](labels, 4, 2, 0)
    sampler.set_epoch(3)
    plan = plan_epoch(sampler, 2, bank, 400, np.random.default_rng((0, 3)))
    sampler.set_epoch(3)
    expected_rng = np.random.default_rng((0, 3))
    crops = Crops(bank, labels, 400, torch.device("cpu"), resident=resident)
    uploaded = crops.upload(plan)
    assert len(plan) == 2
    for s, idx in zip(range(2), sampler):
        wave, target = crops.batch(plan, uploaded, s)
        assert torch.equal(wave, bank.random_crops(idx, 400, expected_rng))
        assert target.tolist() == labels[idx].tolist() and target.dtype == torch.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resident_crops_match_the_host():
    bank, labels = _bank(), np.arange(8) % 4
    plan = plan_epoch([np.arange(8)], 1, bank, 400, np.random.default_rng(1))
    host = Crops(bank, labels, 400, torch.device("cpu"))
    gpu = Crops(bank, labels, 400, torch.device("cuda"))
    assert gpu.data.device.type == "cuda"
    want, got = host.batch(plan, host.upload(plan), 0), gpu.batch(plan, gpu.upload(plan), 0)
    assert torch.equal(want[0], got[0].cpu()) and torch.equal(want[1], got[1].cpu())
