"""A generic ``csv`` dataset of a known one (KSDD, MTD, ...): the images, labels and masks a user's own CSV would
list, so `wsss init --kind csv` can be measured against the tuned recipe of the same data.

    python bench/csv_dataset.py --kind ksdd --root ../shared/data/ksdd --out /tmp/ksdd-csv
    wsss init --kind csv --root /tmp/ksdd-csv/labels.csv --out /tmp/ksdd-csv/recipe.yaml
    wsss run --config /tmp/ksdd-csv/recipe.yaml

``OUT/data`` is a symbolic link to the dataset (the CSV lists files inside its folder; the link is read through)
and ``OUT/labels.csv`` lists ``path,label,mask,group`` relative to ``OUT``: label ``ok`` or the ``;``-joined
classes, group the physical part where the dataset knows it (KSDD's kosNN). With ``--splits-from
RUN/prepare/index.csv`` it also writes a ``split`` column, that run's split of each image, so the recipe ``wsss init``
writes for the CSV is measured on exactly the splits of a tuned recipe's run (KSDD: one CSV per fold):

    python bench/csv_dataset.py --kind ksdd --root ../shared/data/ksdd --out /tmp/ksdd-csv-0 \
        --splits-from /tmp/bench/ksdd/fold0/prepare/index.csv
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", required=True, help="the dataset's own kind (ksdd, mtd, ...)")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--splits-from", type=Path, default=None, help="a run's prepare/index.csv: write its splits")
    args = p.parse_args(argv)

    from wsss.config import DatasetConfig
    from wsss.data.base import create_adapter

    root = args.root.resolve()
    samples = create_adapter(DatasetConfig(kind=args.kind, root=str(root)), root).scan()
    args.out.mkdir(parents=True, exist_ok=True)
    link = args.out / "data"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(root, link, target_is_directory=True)

    def rel(path: Path | None) -> str:
        return "" if path is None else (Path("data") / Path(path).resolve().relative_to(root)).as_posix()

    split_of: dict[Path, str] = {}
    if args.splits_from is not None:
        from wsss.data.index import read_train_index

        split_of = {Path(r.path).resolve(): r.split for r in read_train_index(args.splits_from)}
    with open(args.out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "mask", "group"] + (["split"] if split_of else []))
        for s in sorted(samples, key=lambda s: s.id):
            row = [rel(s.path), ";".join(s.labels) or "ok", rel(s.mask), s.group if s.group != s.id else ""]
            w.writerow(row + ([split_of[Path(s.path).resolve()]] if split_of else []))
    print(f"wrote {args.out / 'labels.csv'}: {len(samples)} images, {sum(bool(s.labels) for s in samples)} defective")


if __name__ == "__main__":
    main()
