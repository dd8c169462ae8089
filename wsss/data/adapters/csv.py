"""``kind: csv``: a CSV file listing the images; ``dataset.root`` is the CSV file itself.

Columns (header line required, extra columns ignored): ``path``, ``label`` (or ``labels``), optional ``mask``.
Paths are relative to the CSV's folder; a path that leads outside that folder (``../x.png``, an absolute path
elsewhere) is an error. Symbolic links inside the folder are followed. Labels: empty, ``0`` or a name in
``dataset.ok_names`` = defect-free; ``1`` = class ``defect``; otherwise ``;``-separated class names.
All bad lines are reported together.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from wsss.data.adapters._shared import is_ok_name
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.errors import DataError, WsssError, raise_all


@register
class CsvAdapter(DatasetAdapter):
    kind = "csv"

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
        """A listed file, checked to lie inside the CSV's folder and to exist."""
        base, where = self.base, f"{self.root}, line {line}"
        if not text.strip():
            raise DataError(where, "empty path", "give each row the image file in the path column")
        full = os.path.normpath(os.path.join(base, text.strip()))
        if os.path.commonpath([base, full]) != base:
            raise DataError(
                where,
                f"path {text!r} escapes the dataset root {base}",
                "list only files inside the CSV's folder, with paths relative to it",
            )
        if not os.path.isfile(full):
            raise DataError(where, f"file not found: {text!r}", f"fix the path (relative to {base})")
        return Path(full)

    def scan(self) -> list[Sample]:
        if not self.root.is_file():
            raise DataError(self.root, "CSV file not found", "set dataset.root to the CSV file (kind: csv)")
        with open(self.root, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {(n or "").strip().lower(): n for n in reader.fieldnames or []}
            label_col = fields.get("label") or fields.get("labels")
            if "path" not in fields or label_col is None:
                raise DataError(
                    self.root,
                    f"missing column(s): header is {reader.fieldnames}",
                    "the first line must be a header with columns path,label[,mask]",
                )
            samples, errors = [], []
            for row in reader:
                line = reader.line_num
                try:
                    path = self.resolve(row[fields["path"]] or "", line)
                    mask_text = (row[fields["mask"]] or "").strip() if "mask" in fields else ""
                    mask = self.resolve(mask_text, line) if mask_text else None
                except WsssError as e:
                    errors.append(e)
                    continue
                rel = path.relative_to(self.base)
                samples.append(
                    Sample(id=make_id(rel), path=path, labels=self.parse_labels(row[label_col] or ""), mask=mask)
                )
        raise_all(errors, f"CSV {self.root} has bad lines")
        return samples
