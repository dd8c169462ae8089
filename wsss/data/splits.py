"""Deterministic, grouped, stratified train/val/test splits and k folds.

Groups (one physical part, or duplicated images) never straddle two splits. Within each stratum (defect-free,
or the group's most frequent defect class), groups are ordered deterministically by a seeded shuffle of their
sorted names, larger groups first, and each goes to the split whose share is furthest below its target. The
result depends only on the set of samples and the seed, never on the order the adapter listed them in.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from wsss.data.base import Sample
from wsss.data.config import SplitConfig
from wsss.errors import ConfigError


@dataclass(frozen=True)
class Assignment:
    split: str  # train / val / test
    fold: int  # kfold mode: the sample's fold; otherwise -1


def _stratum(samples: list[Sample]) -> str:
    labels = Counter(lbl for s in samples for lbl in s.labels)
    return min(labels, key=lambda k: (-labels[k], k)) if labels else "ok"


def _greedy(groups: dict[str, list[Sample]], bins: dict[str, float], seed: int) -> dict[str, str]:
    """Assign groups to bins (name -> target fraction), per stratum, by largest deficit.

    Ties within a stratum (common in small strata) go to the bin furthest below its target over all strata
    so far, so rounding does not always favour the same bin.
    """
    strata: dict[str, list[str]] = defaultdict(list)
    for g in sorted(groups):
        strata[_stratum(groups[g])].append(g)
    out: dict[str, str] = {}
    names = [b for b, frac in bins.items() if frac > 0]
    total = sum(bins[b] for b in names)
    overall = dict.fromkeys(names, 0)
    n_all = 0
    for stratum in sorted(strata):
        order = strata[stratum][:]
        random.Random(f"{seed}:{stratum}").shuffle(order)
        order.sort(key=lambda g: -len(groups[g]))  # stable: big groups first, shuffled within a size
        counts = dict.fromkeys(names, 0)
        n = 0
        for g in order:
            size = len(groups[g])
            n += size
            n_all += size
            deficit = {
                b: (round(bins[b] / total * n - counts[b], 9), bins[b] / total * n_all - overall[b]) for b in names
            }
            best = max(names, key=deficit.__getitem__)
            counts[best] += size
            overall[best] += size
            out[g] = best
    return out


def assign_splits(samples: list[Sample], cfg: SplitConfig, kind: str = "") -> dict[str, Assignment]:
    """Split ``samples`` per ``cfg``; returns sample id -> :class:`Assignment`."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.group].append(s)

    if cfg.mode == "ratios":
        by_group = _greedy(groups, {"train": cfg.train, "val": cfg.val, "test": cfg.test}, cfg.seed)
        return {s.id: Assignment(by_group[s.group], -1) for s in samples}

    if cfg.mode == "kfold":
        if len(groups) < cfg.folds:
            raise ConfigError(
                "prepare.split.folds", f"{cfg.folds} folds but only {len(groups)} groups", "use fewer folds"
            )
        fold_of = {g: int(b) for g, b in _greedy(groups, {str(k): 1.0 for k in range(cfg.folds)}, cfg.seed).items()}
        rest = {g: v for g, v in groups.items() if fold_of[g] != cfg.fold}
        inner = _greedy(rest, {"train": 1.0 - cfg.val, "val": cfg.val}, cfg.seed + 1)
        return {
            s.id: Assignment("test" if fold_of[s.group] == cfg.fold else inner[s.group], fold_of[s.group])
            for s in samples
        }

    # official: the dataset's own split; validation as the dataset gives it, else carved from its train part
    if any(s.split == "val" for s in samples) and all(s.split in ("train", "val", "test") for s in samples):
        return {s.id: Assignment(str(s.split), -1) for s in samples}
    missing = [s.id for s in samples if s.split not in ("train", "test")]
    if missing:
        raise ConfigError(
            "prepare.split.mode",
            f"dataset kind {kind!r} has no official split for {len(missing)} image(s), e.g. {missing[0]}",
            "use mode: ratios or kfold",
        )
    mixed = [g for g, v in groups.items() if len({s.split for s in v}) > 1]
    train_groups = {g: v for g, v in groups.items() if v[0].split == "train" and g not in mixed}
    inner = _greedy(train_groups, {"train": 1.0 - cfg.val, "val": cfg.val}, cfg.seed)
    return {s.id: Assignment(inner.get(s.group, s.split) if s.split == "train" else "test", -1) for s in samples}
