"""Label Studio import tasks (``labelstudio.json``) with ``brushlabels`` predictions in its own brush RLE.

Each task is ``{"data": {"image": <prefix>images/<id>.<ext>, "wsss_id", "score", "confidence"}, "predictions":
[{"model_version": "wsss", "score": confidence, "result": [one brushlabels result per label present]}]}``. The
image prefix is ``export.image_prefix``: Label Studio's local-files route (``/data/local-files/?d=`` followed by the
package's path under ``LOCAL_FILES_DOCUMENT_ROOT``) or a URL prefix where the package is served.
``labelstudio_config.xml`` beside it is the labeling interface to create the project with.

Reading a Label Studio JSON export: a task counts as reviewed when it has an annotation that was not cancelled (the
last one wins); tasks with only predictions are not imported (nobody looked at them). An annotation with no brush
result means "reviewed, no defect" and gives an empty mask.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from wsss.atomic import atomic_write_text
from wsss.errors import DataError
from wsss.export import labelstudio_rle
from wsss.export.formats import ImageSizes, ReviewFormat, ReviewItem, register_format
from wsss.labels import LabelMap

FIX = "pass the JSON export of the Label Studio project the review tasks were imported into"
CONFIG_FILE = "labelstudio_config.xml"
EMPTY = np.zeros((0, 0), np.uint8)  # "reviewed, no defect": the importer gives it the image's size


def labeling_config(labels: LabelMap) -> str:
    lines = [
        "<View>",
        '  <Image name="image" value="$image" zoom="true"/>',
        '  <BrushLabels name="tag" toName="image">',
    ]
    for v, n, c in labels.entries():
        if v != 0:
            lines.append(f'    <Label value={quoteattr(n)} background="#{c[0]:02x}{c[1]:02x}{c[2]:02x}"/>')
    return "\n".join([*lines, "  </BrushLabels>", "</View>", ""])


class LabelStudioFormat(ReviewFormat):
    name = "labelstudio"
    default_file = "labelstudio.json"

    def __init__(self, image_prefix: str = "/data/local-files/?d="):
        self.image_prefix = image_prefix

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:
        tasks = []
        for item in items:
            mask, results = item.load_mask(), []
            for v in (int(v) for v in np.unique(mask) if v != 0):
                value = {"format": "rle", "rle": labelstudio_rle.encode(mask == v), "brushlabels": [labels.name_of(v)]}
                results.append(
                    {"id": f"{item.id}-{v}", "from_name": "tag", "to_name": "image", "type": "brushlabels"}
                    | {"original_width": item.width, "original_height": item.height, "image_rotation": 0}
                    | {"value": value}
                )
            data = {"image": self.image_prefix + item.image_name, "wsss_id": item.id}
            data |= {"score": _num(item.score), "confidence": _num(item.confidence)}
            prediction = {"model_version": "wsss", "score": _num(item.confidence), "result": results}
            tasks.append({"data": data, "predictions": [prediction]})
        path = package / self.default_file
        atomic_write_text(path, json.dumps(tasks))
        atomic_write_text(package / CONFIG_FILE, labeling_config(labels))
        return path

    def read(self, path: Path, labels: LabelMap, sizes: ImageSizes | None = None) -> dict[str, np.ndarray]:
        sizes = sizes or ImageSizes()
        try:
            tasks = json.loads(Path(path).read_bytes())
            if not isinstance(tasks, list):
                raise TypeError("the top level is not a list of tasks")
        except (OSError, ValueError, TypeError) as e:
            raise DataError(path, f"not a Label Studio JSON export ({type(e).__name__}: {e})", FIX) from None
        masks, bad = {}, []
        for t, task in enumerate(tasks):
            try:
                sid, results = _reviewed(task)
            except (TypeError, ValueError) as e:
                bad.append(f"task {t}: {e}")
                continue
            if results is None:
                continue  # nobody reviewed it
            mask = EMPTY
            for r in results:
                if r.get("type") != "brushlabels":
                    continue
                h, w = r.get("original_height"), r.get("original_width")
                why = sizes.problem(sid, h, w)
                if why is None and mask.size and mask.shape != (h, w):
                    why = f"its results declare two sizes, {mask.shape} and {(h, w)}"
                if why:
                    bad.append(f"task {t} ({sid}): {why}")
                    break
                value = r.get("value")
                names = value.get("brushlabels") if isinstance(value, dict) else None
                if not (isinstance(names, list) and names and isinstance(names[0], str)):
                    bad.append(f"task {t} ({sid}): a brush result without its label (value.brushlabels)")
                    continue
                label = labels.value_of(names[0])
                if label is None:
                    bad.append(f"task {t} ({sid}): label {names} is not a label of this run")
                    continue
                mask = np.zeros((h, w), np.uint8) if mask.size == 0 else mask
                try:
                    mask[labelstudio_rle.decode(value.get("rle"), h, w)] = label
                except (ValueError, TypeError) as e:
                    bad.append(f"task {t} ({sid}): {e}")
            masks[sid] = mask
        if bad:
            raise DataError(path, f"{len(bad)} unusable result(s): " + "; ".join(bad[:5]), FIX)
        return masks


def _reviewed(task: object) -> tuple[str, list[dict] | None]:
    """A task's wsss id and the results of its last annotation that was not cancelled (None: not reviewed); a
    TypeError saying what is malformed."""
    if not isinstance(task, dict):
        raise TypeError("not an object")
    data = task.get("data", {})
    if not isinstance(data, dict):
        raise TypeError("'data' is not an object")
    own, image = data.get("wsss_id"), data.get("image", "")
    sid = own if isinstance(own, str) and own else Path(image).stem if isinstance(image, str) else ""
    anns = task.get("annotations", [])
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise TypeError("'annotations' is not a list of objects")
    done = [a for a in anns if not a.get("was_cancelled")]
    if not done:
        return sid, None
    results = done[-1].get("result", [])
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise TypeError("an annotation's 'result' is not a list of objects")
    return sid, results


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 6)  # NaN is not JSON


FORMAT = register_format(LabelStudioFormat())
