"""``kind: csv``: a CSV file listing the images; ``dataset.root`` is the CSV file itself.

Columns (header line required, extra columns ignored): ``path``, ``label`` (or ``labels``), optional ``mask``.
Paths are relative to the CSV's folder; a path that leads outside that folder (``../x.png``, an absolute path
elsewhere, or a symbolic link whose target lies elsewhere: links are resolved before the check) is an error. Labels:
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
        """A listed file, checked to exist and to lie inside the CSV's folder once symbolic links are resolved."""
        base, where = self.base, f"{self.root}, line {line}"
        if not text.strip():
            raise DataError(where, "empty path", "give each row the image file in the path column")
        full = os.path.normpath(os.path.join(base, text.strip()))
        real, real_base = os.path.realpath(full), os.path.realpath(base)
        if os.path.commonpath([base, full]) != base or os.path.commonpath([real_base, real]) != real_base:
            via = f" (a symbolic link to {real})" if os.path.commonpath([base, full]) == base else ""
            raise DataError(
                where,
                f"path {text!r}{via} escapes the dataset root {base}",
                "list only files inside the CSV's folder, with paths relative to it (a linked file: copy it in, or move "
                "the CSV to a folder that holds them)",
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
            except WsssError as e:
                errors.append(e)
                continue
            rel = path.relative_to(self.base)
            samples.append(
                Sample(id=make_id(rel), path=path, labels=self.parse_labels(row[label_col] or ""), mask=mask)
            )
        raise_all(errors, f"CSV {self.root} has bad lines")
        return samples
