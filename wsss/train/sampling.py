"""Class balance for training: a balanced sampler that shards across DDP ranks, and BCE ``pos_weight``.

Industrial sets are mostly defect-free, so ``classifier.balance`` chooses how to compensate:

- ``sampler``: :class:`BalancedDistributedSampler` draws ~``pos_fraction`` defective images per epoch.
- ``pos_weight``: plain shuffling, and the loss weighs positives by :func:`pos_weight`.
- ``none``: plain shuffling.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

BALANCE = ("sampler", "pos_weight", "none")
POS_WEIGHT_RANGE = (1.0, 100.0)


def _dist_world() -> tuple[int, int] | None:
    """``(num_replicas, rank)`` when torch.distributed is initialised, else None."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return None


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``n`` items of ``pool``: whole shuffled passes, then a partial one without replacement, so oversampled
    items repeat as evenly as possible and an undersampled class is a fresh random subset each epoch."""
    reps, rem = divmod(n, len(pool))
    parts = [rng.permutation(pool) for _ in range(reps)] + [rng.choice(pool, rem, replace=False)]
    return np.concatenate(parts)


class BalancedDistributedSampler(Sampler[int]):
    """Each epoch, an index list with a fixed share of defective images, split across DDP ranks.

    The epoch's list is a function of ``(seed, epoch)`` only, identical on every rank; rank ``r`` takes
    ``indices[r::num_replicas]``, so ranks get equal, disjoint shares of it. The minority class is drawn with
    repetition, the majority is subsampled. When all images are of one kind the list is a plain shuffle.

    ``repeats`` gives items more weight within their class: an item with repeat r is in its class's pool r times,
    so it is drawn about r times as often as the others (a person's corrected mask among hundreds of pseudo-masks);
    the epoch keeps its length, so the repeated items displace others rather than lengthen training.

    Args:
        labels: ``(N,)`` bool, True = defective.
        num_replicas, rank: default to torch.distributed's world size and rank when it is initialised, else 1, 0.
        seed: the run's seed; must be the same on every rank.
        pos_fraction: share of defective images per epoch, in (0, 1); None = no balancing (one shuffled pool).
        num_samples: length of the whole epoch's list (all ranks together); default N. Rounded up to a multiple
            of ``num_replicas``; ``len(sampler)`` is the per-rank share.
        repeats: ``(N,)`` integers >= 1, each item's multiplicity in its pool; default all 1.
    """

    def __init__(
        self,
        labels: np.ndarray,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        pos_fraction: float | None = 0.5,
        num_samples: int | None = None,
        repeats: np.ndarray | None = None,
    ):
        labels = np.asarray(labels).astype(bool).reshape(-1)
        world = _dist_world()
        if num_replicas is None:
            num_replicas = world[0] if world else 1
        if rank is None:
            rank = world[1] if world else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
        if pos_fraction is not None and not 0.0 < pos_fraction < 1.0:
            raise ValueError(f"pos_fraction must be in (0, 1), got {pos_fraction}")
        if len(labels) == 0:
            raise ValueError("no training images to sample from")
        total = len(labels) if num_samples is None else int(num_samples)
        if total < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        reps = np.ones(len(labels), np.int64) if repeats is None else np.asarray(repeats, np.int64).reshape(-1)
        if reps.shape != labels.shape or (reps < 1).any():
            raise ValueError(f"repeats must be {len(labels)} integers >= 1")
        self.pos = np.repeat(np.flatnonzero(labels), reps[labels])
        self.neg = np.repeat(np.flatnonzero(~labels), reps[~labels])
        self.num_replicas, self.rank, self.seed = num_replicas, rank, int(seed)
        self.pos_fraction = pos_fraction
        self.total_size = -(-total // num_replicas) * num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self) -> np.ndarray:
        """The whole epoch's index list (all ranks), before sharding."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if len(self.pos) == 0 or len(self.neg) == 0 or self.pos_fraction is None:
            return _draw(rng, np.sort(np.concatenate([self.pos, self.neg])), self.total_size)
        n_pos = min(max(round(self.total_size * self.pos_fraction), 1), self.total_size - 1)
        idx = np.concatenate([_draw(rng, self.pos, n_pos), _draw(rng, self.neg, self.total_size - n_pos)])
        return rng.permutation(idx)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.total_size // self.num_replicas


def make_train_sampler(
    balance: str, labels: np.ndarray, seed: int, repeats: np.ndarray | None = None
) -> Sampler[int] | None:
    """The training sampler for ``classifier.balance``; None means "let the DataLoader shuffle".

    ``labels`` is ``(N,)`` bool (defective). Under DDP, ``pos_weight``/``none`` get a shuffling
    :class:`~torch.utils.data.DistributedSampler`. With ``repeats`` (per-item multiplicities, see
    :class:`BalancedDistributedSampler`) above 1 anywhere, ``pos_weight``/``none`` get an unbalanced
    :class:`BalancedDistributedSampler` that honours them. Call ``set_epoch`` on the result every epoch.
    """
    if balance == "sampler":
        return BalancedDistributedSampler(labels, seed=seed, repeats=repeats)
    if balance not in BALANCE:
        raise ValueError(f"unknown balance {balance!r}; valid: {', '.join(BALANCE)}")
    if repeats is not None and (np.asarray(repeats) > 1).any():
        return BalancedDistributedSampler(labels, seed=seed, pos_fraction=None, repeats=repeats)
    if _dist_world() is not None:
        return DistributedSampler(range(len(labels)), shuffle=True, seed=seed)
    return None


def pos_weight(targets: np.ndarray) -> torch.Tensor:
    """BCE ``pos_weight`` per class: ``n_neg / n_pos`` clamped to [1, 100]; 1.0 for a class without positives."""
    t = np.asarray(targets, dtype=bool).reshape(len(targets), -1)
    n_pos = t.sum(axis=0).astype(np.float64)
    n_neg = len(t) - n_pos
    w = np.divide(n_neg, n_pos, out=np.ones_like(n_pos), where=n_pos > 0)
    w = np.where(n_pos > 0, np.clip(w, *POS_WEIGHT_RANGE), 1.0)
    return torch.as_tensor(w, dtype=torch.float32)


def epoch_steps(per_rank: int, batch_size: int) -> int:
    """Batches in an epoch of :func:`epoch_loader` over ``per_rank`` items: a partial last batch is dropped when there
    is more than one batch, so ``per_rank // batch_size`` then, else the one (partial) batch."""
    if per_rank > batch_size:
        return per_rank // batch_size
    return 1 if per_rank > 0 else 0


def epoch_loader(
    dataset, sampler: Sampler[int] | None, epoch: int, seed: int, batch_size: int, workers: int, device: torch.device
) -> DataLoader:
    """The training DataLoader of ``epoch``: dataset and sampler set to the epoch, shuffling seeded by (seed, epoch).

    A partial last batch is dropped only when there is more than one batch in this process's share (its shard under
    DDP), so a small shard still trains. Shared by the classifier and segmenter trainers.
    """
    dataset.set_epoch(epoch)
    if sampler is not None:
        sampler.set_epoch(epoch)
    per_rank = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=sampler is None,
        generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
        drop_last=per_rank > batch_size,  # the rule epoch_steps counts by
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
