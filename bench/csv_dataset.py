"""A generic ``csv`` dataset of a known one (KSDD, MTD, ...): the images, labels and masks a user's own CSV would
list, so `wsss init --kind csv` can be measured against the tuned recipe of the same data.

    python bench/csv_dataset.py --kind ksdd --root ../shared/data/ksdd --out /tmp/ksdd-csv
    wsss init --kind csv --root /tmp/ksdd-csv/labels.csv --out /tmp/ksdd-csv/recipe.yaml
    wsss run --config /tmp/ksdd-csv/recipe.yaml

``OUT/data`` is a symbolic link to the dataset (the csv adapter reads only files inside the CSV's folder) and
``OUT/labels.csv`` lists ``path,label,mask`` relative to ``OUT``: label ``ok`` or the ``;``-joined classes. The CSV
knows no groups (KSDD's physical parts) and no folds, so its splits are the generic ones ``wsss init`` writes.
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

    with open(args.out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "mask"])
        for s in sorted(samples, key=lambda s: s.id):
            w.writerow([rel(s.path), ";".join(s.labels) or "ok", rel(s.mask)])
    print(f"wrote {args.out / 'labels.csv'}: {len(samples)} images, {sum(bool(s.labels) for s in samples)} defective")


if __name__ == "__main__":
    main()
