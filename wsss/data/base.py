"""Dataset adapter base class and registry.

An adapter knows one on-disk layout. It overrides :meth:`DatasetAdapter.scan`, which walks the layout and
returns :class:`Sample` records; everything else (image validation, splits, the index) is shared. Register a
subclass with :func:`register`; :func:`create_adapter` builds one by ``dataset.kind`` and lists the valid kinds
when the name is unknown.

Dataset-wide options are applied in one place, :meth:`DatasetAdapter.finish`, which every subclass's ``scan``
passes its result through automatically (``dataset.binary`` collapses all defect classes into ``"defect"``;
samples come back sorted by id).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from wsss.errors import DataError, raise_all
from wsss.registry import Registry

if TYPE_CHECKING:
    from wsss.data.config import DatasetConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One image found by an adapter.

    Attributes:
        id: unique, stable, filesystem-safe identifier (used as ``cams/<id>.npz``, ``masks/<id>.png``).
        path: image file.
        labels: defect classes present; ``()`` means defect-free.
        group: items that must share a split (same physical part, duplicated images); defaults to ``id``.
        mask: ground-truth mask file, for evaluation only; None when the dataset has none for this image.
        split: the dataset's official split (``train``/``test``) when it has one, else None.
    """

    id: str
    path: Path
    labels: tuple[str, ...] = ()
    group: str = ""
    mask: Path | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.id)


class DatasetAdapter:
    """Base class: set ``kind`` and ``mask_threshold``, override :meth:`scan`.

    ``mask_threshold``: a ground-truth mask pixel counts as defect iff its value >= this (1 for 0/255 masks,
    i.e. "> 0"; 128 for soft-edged masks such as MTD's). ``dataset.mask_threshold`` in the config overrides it.
    """

    kind: ClassVar[str] = ""
    mask_threshold: ClassVar[int] = 1
    # True when the image-level label is derived from the mask (KSDD: defective iff mask non-empty).
    labels_from_masks: ClassVar[bool] = False
    # how this layout writes labels, added to the warning about a class with very few images (often a typo)
    label_hint: ClassVar[str] = ""

    def __init__(self, cfg: DatasetConfig, root: Path):
        self.cfg = cfg
        self.root = Path(root)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        scan = cls.__dict__.get("scan")
        if scan is not None:  # route every subclass's scan() through finish(); finish is idempotent

            @functools.wraps(scan)
            def finished_scan(self: DatasetAdapter) -> list[Sample]:
                return self.finish(scan(self))

            cls.scan = finished_scan  # type: ignore[method-assign]

    def finish(self, samples: list[Sample]) -> list[Sample]:
        """Apply dataset-wide options to scanned samples: ``binary`` (every defect class -> "defect"); sort by id.

        File and folder names that are not valid UTF-8 are refused here, all at once: the index, the manifests and
        every export are UTF-8 text, so such a name could not be written into them."""
        raise_all(_non_utf8(samples, self.root), f"dataset {self.root} has names that are not UTF-8")
        if self.cfg.binary:
            samples = [replace(s, labels=("defect",)) if s.labels else s for s in samples]
        return sorted(samples, key=lambda s: s.id)

    def scan(self) -> list[Sample]:
        """Find every image of the dataset. Raise :class:`DataError` naming the file for layout problems."""
        raise NotImplementedError

    # helpers shared by adapters -------------------------------------------------------------------------
    @property
    def extensions(self) -> tuple[str, ...]:
        return tuple(e.lower() for e in (self.cfg.extensions or IMAGE_EXTENSIONS))

    def is_image(self, p: Path) -> bool:
        return p.is_file() and p.suffix.lower() in self.extensions

    def require_root(self) -> None:
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist", "set dataset.root to the folder holding the data")
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root is not a folder", "set dataset.root to the dataset's top folder")

    def threshold(self) -> int:
        return self.cfg.mask_threshold if self.cfg.mask_threshold is not None else self.mask_threshold


def _non_utf8(samples: list[Sample], root: Path) -> list[DataError]:
    fix = (
        f"rename the files and folders to UTF-8 names: `convmv -f latin1 -t utf8 -r --notest {root}` does it; "
        "without --notest it only shows what it would rename"
    )
    errors = []
    for s in samples:
        bad = [p for p in (s.path, s.mask) if p is not None and not _utf8(p)]
        bad_labels = [c for c in s.labels if not _utf8(c)]
        errors += [DataError(p, "name is not valid UTF-8", fix) for p in bad]
        if bad_labels and not bad:
            errors.append(DataError(s.path, f"class name {bad_labels[0]!r} is not valid UTF-8", fix))
    return errors


def _utf8(name: object) -> bool:
    """Whether ``name`` (None counts as fine) encodes as UTF-8: names whose bytes are not UTF-8 reach Python as lone
    surrogates (PEP 383), which no UTF-8 file can hold."""
    try:
        str(name or "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_id(rel: Path | str) -> str:
    """A filesystem-safe id from a path relative to the dataset root: ``a/b/c.png`` -> ``a__b__c``."""
    rel = Path(rel)
    stem = rel.with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__"))


# the built-in adapters register as wsss.data.adapters is imported
ADAPTERS: Registry[type[DatasetAdapter]] = Registry("dataset kind", "kinds", ["wsss.data.adapters"])


def register(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: add an adapter to :data:`ADAPTERS` under ``cls.kind``."""
    return ADAPTERS.register(cls.kind, cls)


def adapter_kinds() -> list[str]:
    """Names of the registered dataset kinds (importing the built-in adapters first)."""
    return ADAPTERS.names()


def create_adapter(cfg: DatasetConfig, root: Path) -> DatasetAdapter:
    """Build the adapter named by ``cfg.kind``; unknown kinds list the valid ones."""
    return ADAPTERS.lookup(cfg.kind, "dataset.kind")(cfg, root)
