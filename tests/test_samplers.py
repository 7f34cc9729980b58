"""Samplers: coverage, batch structure, determinism per (seed, epoch), errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sourcetrace.data.samplers import SAMPLERS, BalancedSampler, RandomSampler

# 24 imbalanced classes, 3..500 clips (MLAAD train has 24 systems), shuffled order of labels.
COUNTS = np.array(
    [3, 5, 8, 12, 20, 30, 45, 60, 80, 100, 120, 150, 180, 200, 230, 260, 290, 320, 350, 380, 410, 440, 470, 500]
)
LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(24), COUNTS))


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_registry_entries_share_signature_and_protocol(name):
    s = SAMPLERS[name](LABELS, 24, 2, 3)
    batches = epoch_batches(s, 1)
    assert len(batches) == len(s) > 0
    assert all(b.dtype == np.int64 and b.shape == (24,) for b in batches)


@pytest.mark.parametrize("batch_size", [4, 12, 24, 32, 48])
@pytest.mark.parametrize("epoch", [1, 2])
def test_balanced_covers_every_clip_with_distinct_classes(batch_size, epoch):
    k = 2
    s = BalancedSampler(LABELS, batch_size, k, seed=0)
    batches = epoch_batches(s, epoch)
    assert len(batches) == len(s)
    used = np.concatenate(batches)
    assert np.array_equal(np.unique(used), np.arange(len(LABELS)))  # every clip at least once
    m = batch_size // k
    for b in batches:
        assert b.shape == (batch_size,)
        rows = LABELS[b].reshape(m, k)  # documented layout: one class per row
        assert (rows == rows[:, :1]).all()
        assert len(np.unique(rows[:, 0])) == m
    # the greedy packing reaches the lower bound on the number of batches
    groups = np.ceil(COUNTS / k)
    assert len(s) == max(math.ceil(groups.sum() / m), groups.max())
    assert math.isclose(s.repeat_fraction, 1 - len(LABELS) / used.size)


@pytest.mark.parametrize("batch_size,bound", [(4, 0.002), (12, 0.002), (24, 0.23), (48, 0.62)])
def test_balanced_repeat_fraction_is_small_unless_forced(batch_size, bound):
    """Repeats are 0.1 % at the paper's batch of 12 (6 classes x 2). Beyond that the 500-clip class
    forces >= 250 batches of 2 of its clips each, so the smaller classes must repeat: 22 % of the
    indices at 12 classes per batch, 61 % at all 24; no distinct-class sampler can do better."""
    s = BalancedSampler(LABELS, batch_size, 2, seed=0)
    assert s.repeat_fraction < bound
    forced_batches = COUNTS.max() // 2
    assert len(s) == max(  # the lower bound on the number of batches, met exactly
        forced_batches, math.ceil(np.ceil(COUNTS / 2).sum() / (batch_size // 2))
    )


def test_voxceleb_trainer_failure_mode_does_not_happen():
    """voxceleb_trainer yields zero batches for 24 classes x 2 with 24 classes; ours covers all."""
    labels = np.repeat(np.arange(24), 40)
    s = BalancedSampler(labels, 48, 2, seed=1)
    batches = epoch_batches(s, 1)
    assert len(batches) == 20  # 40 clips / 2 per batch, nothing re-drawn
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(labels)))  # each exactly once
    assert s.repeat_fraction == 0.0


def test_balanced_exact_once_when_divisible():
    labels = np.repeat(np.arange(6), 10)
    s = BalancedSampler(labels, 6, 2, seed=0)
    used = np.concatenate(epoch_batches(s, 4))
    assert np.array_equal(np.sort(used), np.arange(60))


def test_balanced_class_smaller_than_per_class_samples_with_replacement():
    labels = np.array([0] + [1] * 9 + [2] * 9 + [3] * 9)
    s = BalancedSampler(labels, 9, 3, seed=0)
    batches = epoch_batches(s, 1)
    assert len(batches) == len(s) == 4  # 10 groups (1 + 3 x 3), 3 classes per batch
    assert np.array_equal(np.unique(np.concatenate(batches)), np.arange(len(labels)))
    for b in batches:
        rows = labels[b].reshape(3, 3)
        assert (rows == rows[:, :1]).all() and len(np.unique(rows[:, 0])) == 3
        # groups of classes with >= per_class clips never repeat a clip inside the group
        for row in b.reshape(3, 3):
            if labels[row[0]] != 0:
                assert len(set(row)) == 3


def test_balanced_len_matches_yield_for_random_label_sets():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n_classes = int(rng.integers(2, 12))
        k = int(rng.integers(1, 4))
        counts = rng.integers(1, 30, n_classes)
        labels = np.repeat(rng.choice(1000, n_classes, replace=False), counts)  # arbitrary label values
        m = int(rng.integers(1, n_classes + 1))
        s = BalancedSampler(labels, m * k, k, seed=trial)
        batches = epoch_batches(s, trial)
        assert len(batches) == len(s)
        assert np.array_equal(np.unique(np.concatenate(batches)), np.arange(len(labels)))
        assert all(len(np.unique(labels[b])) == m for b in batches)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_deterministic_per_seed_and_epoch_and_epochs_differ(name):
    a, b = SAMPLERS[name](LABELS, 12, 2, 5), SAMPLERS[name](LABELS, 12, 2, 5)
    first = epoch_batches(a, 3)
    assert all(np.array_equal(x, y) for x, y in zip(first, epoch_batches(b, 3)))  # a resumed run
    assert all(np.array_equal(x, y) for x, y in zip(first, epoch_batches(a, 3)))  # re-iterating
    assert not np.array_equal(np.concatenate(first), np.concatenate(epoch_batches(a, 4)))
    other_seed = epoch_batches(SAMPLERS[name](LABELS, 12, 2, 6), 3)
    assert not np.array_equal(np.concatenate(first), np.concatenate(other_seed))


def test_random_sampler_is_a_permutation_dropping_the_last_batch():
    n, bs = len(LABELS), 128
    s = RandomSampler(LABELS, bs, 2, seed=0)
    assert len(s) == n // bs
    seen = []
    for epoch in (1, 2):
        used = np.concatenate(epoch_batches(s, epoch))
        assert used.size == len(s) * bs and len(np.unique(used)) == used.size  # no duplicates
        assert set(used) <= set(range(n))
        seen.append(set(range(n)) - set(used))
        assert len(seen[-1]) == n % bs  # only the incomplete last batch is dropped
    assert seen[0] != seen[1]  # different clips skipped each epoch
    assert len(RandomSampler(np.zeros(5, int), 8, 1, 0)) == 0


def test_errors_name_the_numbers():
    with pytest.raises(ValueError, match="batch_size=25 is not a positive multiple of per_class=2"):
        BalancedSampler(LABELS, 25, 2, 0)
    with pytest.raises(ValueError, match="batch_size=64 / per_class=2 = 32 distinct classes .* only 24 classes"):
        BalancedSampler(LABELS, 64, 2, 0)
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        BalancedSampler(LABELS, 4, 0, 0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        RandomSampler(np.array([], dtype=int), 4, 1, 0)
    with pytest.raises(ValueError, match="integers"):
        BalancedSampler(np.array([0.5, 1.5]), 2, 1, 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RandomSampler(LABELS, 0, 1, 0)
