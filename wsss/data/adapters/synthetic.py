"""``kind: synthetic``: the built-in generated defect set (:mod:`wsss.data.synthetic`: procedural surfaces or crops of
texture photographs, with drawn defects), settings in ``dataset.synthetic``. ``prepare`` generates it into its own
``data/`` folder (the adapter's root), so the images are an artifact of the run like any other, then reads it back
through the CSV adapter.
"""

from __future__ import annotations

from wsss.data.adapters.csv import CsvAdapter
from wsss.data.base import DatasetAdapter, Sample, register
from wsss.data.synthetic import generate


@register
class SyntheticAdapter(DatasetAdapter):
    kind = "synthetic"

    def scan(self) -> list[Sample]:
        return CsvAdapter(self.cfg, generate(self.root, self.cfg.synthetic)).scan()
