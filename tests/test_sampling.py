"""Class-balanced DDP sampling and BCE pos_weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, TensorDataset

from wsss.train.sampling import (
    BalancedDistributedSampler,
    epoch_loader,
    epoch_steps,
    make_train_sampler,
    pos_weight,
)

LABELS = np.array([True] * 6 + [False] * 45)  # 51 images, 12% defective


def _ranks(epoch: int, world: int = 2, **kw) -> list[list[int]]:
    out = []
    for r in range(world):
        s = BalancedDistributedSampler(LABELS, num_replicas=world, rank=r, seed=3, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def test_balanced_fraction_and_equal_rank_lengths():
    shards = _ranks(0)
    assert len(shards[0]) == len(shards[1]) == 26  # 51 rounded up to 52, split in two
    full = BalancedDistributedSampler(LABELS, num_replicas=2, rank=0, seed=3).epoch_indices()
    assert sorted(shards[0] + shards[1]) == sorted(full.tolist())
    assert abs(LABELS[full].mean() - 0.5) < 0.05
    assert set(full[LABELS[full]].tolist()) == set(range(6))  # every defective image drawn
    assert len(set(full[~LABELS[full]].tolist())) == len(full[~LABELS[full]])  # majority without repetition
    quarter = np.concatenate(_ranks(0, pos_fraction=0.25, num_samples=100))
    assert len(quarter) == 100 and abs(LABELS[quarter].mean() - 0.25) < 0.05


def test_deterministic_per_epoch_and_changes_across_epochs():
    assert _ranks(0) == _ranks(0)
    assert _ranks(0) != _ranks(1)
    assert len(np.concatenate(_ranks(1))) == len(np.concatenate(_ranks(0)))


def test_single_kind_and_invalid_args():
    s = BalancedDistributedSampler(np.zeros(5, bool), num_replicas=1, rank=0)
    assert sorted(s) == list(range(5))
    with pytest.raises(ValueError, match="rank"):
        BalancedDistributedSampler(LABELS, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="pos_fraction"):
        BalancedDistributedSampler(LABELS, pos_fraction=1.0)


def test_repeats_weigh_items_within_their_class_and_keep_the_epoch_length():
    reps = np.ones(len(LABELS), np.int64)
    reps[[0, 10]] = 8  # one defective and one OK image, as a reviewer's corrected masks
    counts = np.zeros(len(LABELS))
    for epoch in range(40):
        s = BalancedDistributedSampler(LABELS, num_replicas=1, rank=0, seed=1, repeats=reps)
        s.set_epoch(epoch)
        idx = s.epoch_indices()
        assert len(idx) == len(LABELS) and abs(LABELS[idx].mean() - 0.5) < 0.05
        counts += np.bincount(idx, minlength=len(LABELS))
    assert 6 < counts[0] / counts[1:6].mean() < 10  # 8x its class's others
    assert 6 < counts[10] / np.delete(counts[6:], 10 - 6).mean() < 10
    # unbalanced (pos_fraction None): one pool, the repeated item still 8x
    plain = BalancedDistributedSampler(LABELS, num_replicas=1, rank=0, seed=1, pos_fraction=None, repeats=reps)
    draws = []
    for epoch in range(40):
        plain.set_epoch(epoch)
        draws.append(plain.epoch_indices())
    many = np.concatenate(draws)
    share = np.bincount(many, minlength=len(LABELS)) / len(many)
    assert 6 < share[0] / np.delete(share, [0, 10]).mean() < 10
    assert abs(LABELS[many].mean() - 13 / 65) < 0.03  # the pools' own share: (6 + 7) of (51 + 14)
    with pytest.raises(ValueError, match="repeats"):
        BalancedDistributedSampler(LABELS, repeats=np.zeros(len(LABELS)))
    with pytest.raises(ValueError, match="repeats"):
        BalancedDistributedSampler(LABELS, repeats=np.ones(3))
    # without repeats above 1 the unbalanced modes keep the DataLoader's shuffle; with them, a sampler honours them
    assert make_train_sampler("none", LABELS, 0, np.ones(len(LABELS), np.int64)) is None
    weighted = make_train_sampler("pos_weight", LABELS, 0, reps)
    assert isinstance(weighted, BalancedDistributedSampler) and weighted.pos_fraction is None


def test_make_train_sampler_without_and_with_ddp(tmp_path):
    assert isinstance(make_train_sampler("sampler", LABELS, 0), BalancedDistributedSampler)
    assert make_train_sampler("none", LABELS, 0) is None
    assert make_train_sampler("pos_weight", LABELS, 0) is None
    with pytest.raises(ValueError, match="valid"):
        make_train_sampler("oversample", LABELS, 0)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", world_size=1, rank=0)
    try:
        plain = make_train_sampler("none", LABELS, 0)
        assert isinstance(plain, DistributedSampler) and len(plain) == len(LABELS)
        bal = make_train_sampler("sampler", LABELS, 0)
        assert (bal.num_replicas, bal.rank) == (1, 0)
    finally:
        dist.destroy_process_group()


def test_pos_weight():
    t = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
    w = pos_weight(t)
    assert w.dtype == torch.float32
    assert torch.allclose(w, torch.tensor([4.0, 1.0, 1.0]))  # 4/1; no positives -> 1; 2/3 clamped up to 1
    rare = np.zeros((500, 1), np.float32)
    rare[0] = 1
    assert pos_weight(rare).item() == 100.0


@pytest.mark.parametrize(("n", "batch"), [(10, 8), (16, 8), (17, 8), (8, 8), (5, 8), (223, 8)])
def test_epoch_steps_counts_the_batches_the_epoch_loader_gives(n: int, batch: int):
    """What the time estimate counts an epoch as is what the trainers' loader yields (a partial last batch dropped
    when there is more than one batch)."""
    data = TensorDataset(torch.arange(n))
    data.set_epoch = lambda _epoch: None
    loader = epoch_loader(data, None, 0, 0, batch, 0, torch.device("cpu"))
    assert epoch_steps(n, batch) == len(loader) == sum(1 for _ in loader)
