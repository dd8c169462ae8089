"""What the values of a label mask mean, everywhere in wsss: 0 background, k = class k (1..K), 255 uncertain.

Pseudo-masks mark the pixels their refinement is unsure of as 255: training ignores them, review packages export
them as a label of their own (``uncertain``) so a reviewer sees and resolves them, and evaluation reads them as
background or defect (``evaluate.ignore_as``). Each class also has one colour, the same in overlays, review pages
and the annotation tools' label maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255  # the uncertain pixels' value
IGNORE_NAME = "uncertain"
PALETTE = ((255, 48, 48), (48, 200, 255), (255, 200, 0), (200, 64, 255), (64, 255, 96), (255, 128, 192))  # RGB
IGNORE_COLOUR = (160, 160, 160)


def class_colour(k: int) -> tuple[int, int, int]:
    """RGB colour of label value ``k``: ``PALETTE[(k - 1) % len(PALETTE)]``, grey for the uncertain pixels."""
    return IGNORE_COLOUR if k == IGNORE else PALETTE[(k - 1) % len(PALETTE)]


@dataclass(frozen=True)
class LabelMap:
    """Mask values, names and colours: 0 background, 1..K the classes, 255 uncertain."""

    classes: tuple[str, ...]

    def entries(self) -> list[tuple[int, str, tuple[int, int, int]]]:
        rows = [(0, "background", (0, 0, 0))]
        rows += [(k, name, class_colour(k)) for k, name in enumerate(self.classes, start=1)]
        return rows + [(IGNORE, IGNORE_NAME, class_colour(IGNORE))]

    def value_of(self, name: str) -> int | None:
        return next((v for v, n, _ in self.entries() if n == name), None)

    def name_of(self, value: int) -> str | None:
        return next((n for v, n, _ in self.entries() if v == value), None)

    def check(self, mask: np.ndarray) -> list[int]:
        """Mask values that are not labels of this map (empty when the mask is valid)."""
        valid = {v for v, _, _ in self.entries()}
        return [int(v) for v in np.unique(mask) if int(v) not in valid]
