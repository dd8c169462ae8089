"""``kind: csv``: a CSV file listing the images; ``dataset.root`` is the CSV file itself.

Columns (header line required, extra columns ignored): ``path``, ``label`` (or ``labels``), optional ``mask``,
optional ``split`` (``train``, ``val`` or ``test`` on every row: a team's fixed test set, honoured with
``prepare.split.mode: official``, which `wsss init` then writes) and optional ``group`` (images of one physical part:
a ratio or k-fold split never puts one group into two splits; empty = the image alone).
Paths are relative to the CSV's folder; a path that leads outside that folder (``../x.png``, an absolute path
elsewhere) is an error. A symbolic link inside the folder is read through, wherever it points, as the folder
adapters read links: the dataset check names such files. Labels:
empty, ``0`` or a name in ``dataset.ok_names`` = defect-free; ``1`` = class ``defect``; otherwise ``;``-separated
class names (prepare warns about a class with only a few images: often a typo such as ``2``). The file is read as
``dataset.encoding`` (UTF-8 by default; a file in another encoding is refused with how to convert it). All bad lines
are reported together.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from wsss.data.adapters._shared import is_ok_name
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.errors import ConfigError, DataError, WsssError, raise_all

SPLITS = ("train", "val", "test")


@register
class CsvAdapter(DatasetAdapter):
    kind = "csv"
    label_hint = "CSV labels: empty, 0 or an ok name = defect-free, 1 = defect, any other text = a class of that name"

    def parse_labels(self, text: str) -> tuple[str, ...]:
        text = text.strip()
        if text in ("", "0") or is_ok_name(self, text):
            return ()
        if text == "1":
            return ("defect",)
        return tuple(dict.fromkeys(n.strip() for n in text.split(";") if n.strip()))

    @property
    def base(self) -> str:
        """The CSV's folder: listed paths are relative to it and must stay inside it."""
        return os.path.normpath(self.root.parent.absolute())

    def resolve(self, text: str, line: int) -> Path:
        """A listed file, checked to exist and to be listed inside the CSV's folder (a link there may point
        anywhere: :func:`wsss.data.validate.validate_samples` names the files it reads through links)."""
        base, where = self.base, f"{self.root}, line {line}"
        if not text.strip():
            raise DataError(where, "empty path", "give each row the image file in the path column")
        full = os.path.normpath(os.path.join(base, text.strip()))
        if os.path.commonpath([base, full]) != base:
            raise DataError(
                where,
                f"path {text!r} escapes the dataset root {base}",
                "list only files inside the CSV's folder, with paths relative to it (or a symbolic link placed there)",
            )
        if not os.path.isfile(full):
            raise DataError(where, f"file not found: {text!r}", f"fix the path (relative to {base})")
        return Path(full)

    def _rows(self) -> tuple[list[dict[str, str]], list[int], dict[str, str]]:
        """The CSV's rows, their line numbers and its columns (lower-cased name -> header name as written)."""
        encoding = self.cfg.encoding
        try:
            with open(
                self.root, newline="", encoding="utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding
            ) as f:
                reader = csv.DictReader(f)
                rows, lines = [], []
                for row in reader:
                    rows.append(row)
                    lines.append(reader.line_num)
                header = reader.fieldnames or []
        except UnicodeDecodeError as e:
            line = self.root.read_bytes()[: e.start].count(b"\n") + 1
            raise ConfigError(
                self.root,
                f"not {encoding} (byte 0x{e.object[e.start]:02x} on line {line} cannot be decoded)",
                "save the CSV as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`), or set dataset.encoding to "
                "the encoding it was saved in (e.g. latin-1, cp1252)",
            ) from None
        except LookupError:
            raise ConfigError(
                "dataset.encoding", f"unknown encoding {encoding!r}", "use a Python codec name, e.g. utf-8 or latin-1"
            ) from None
        fields = {(n or "").strip().lower(): n for n in header}
        missing = [
            c for c, ok in (("path", "path" in fields), ("label", "label" in fields or "labels" in fields)) if not ok
        ]
        if missing:
            raise DataError(
                self.root,
                f"missing column {' and '.join(repr(c) for c in missing)}: the header line is {','.join(header) or 'empty'}",
                "the first line must be a header with columns path,label[,mask] (label may also be called labels)",
            )
        return rows, lines, fields

    def scan(self) -> list[Sample]:
        if not self.root.is_file():
            raise DataError(self.root, "CSV file not found", "set dataset.root to the CSV file (kind: csv)")
        rows, lines, fields = self._rows()
        label_col = fields.get("label") or fields["labels"]
        samples, errors = [], []
        for row, line in zip(rows, lines):
            try:
                path = self.resolve(row[fields["path"]] or "", line)
                mask_text = (row[fields["mask"]] or "").strip() if "mask" in fields else ""
                mask = self.resolve(mask_text, line) if mask_text else None
                split = self._split(row, fields, line)
            except WsssError as e:
                errors.append(e)
                continue
            rel = path.relative_to(self.base)
            sid = make_id(rel)
            group = (row[fields["group"]] or "").strip() if "group" in fields else ""
            labels = self.parse_labels(row[label_col] or "")
            samples.append(Sample(id=sid, path=path, labels=labels, mask=mask, group=group or sid, split=split))
        errors += self._straddling(samples)
        raise_all(errors, f"CSV {self.root} has bad lines")
        return samples

    def _split(self, row: dict[str, str], fields: dict[str, str], line: int) -> str | None:
        """The row's ``split`` column (train / val / test), None without the column."""
        if "split" not in fields:
            return None
        value = (row[fields["split"]] or "").strip().lower()
        if value not in SPLITS:
            raise DataError(
                f"{self.root}, line {line}",
                f"split {value!r} is not one of {', '.join(SPLITS)}",
                "give every row train, val or test in the split column (or drop the column for a split by ratios)",
            )
        return value

    def _straddling(self, samples: list[Sample]) -> list[WsssError]:
        """One error per group whose images the split column puts into two splits."""
        splits: dict[str, set[str]] = {}
        for s in samples:
            if s.split is not None and s.group != s.id:
                splits.setdefault(s.group, set()).add(s.split)
        return [
            DataError(
                self.root,
                f"group {g!r} has images in {' and '.join(sorted(v))}: one part's images would be tested on after "
                "training on its other images",
                "give all images of a group one split",
            )
            for g, v in sorted(splits.items())
            if len(v) > 1
        ]
