"""Evaluation of a masks folder: hand-computed reports, gating, ignore pixels, soft ground truth, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.artifacts.scores import read_scores
from wsss.config import EvaluateConfig
from wsss.data.index import DatasetInfo, EvalRow
from wsss.errors import DataError, ManyErrors
from wsss.evaluation import evaluate_masks, read_prob_map, write_report
from wsss.evaluation.metrics import PROB_LEVELS, auroc, average_precision
from wsss.mask_format import write_labelmap

INFO = DatasetInfo(kind="folder", classes=("scratch", "blob"), mask_threshold=128)


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(path)
    return path


def _m(*pixels: tuple[int, int], value: int = 255, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    for r, c in pixels:
        m[r, c] = value
    return m


def _dataset(tmp: Path, items: dict[str, tuple[tuple[str, ...], np.ndarray | None, np.ndarray]]) -> list[EvalRow]:
    """items: id -> (labels, gt values or None, predicted mask values); writes gt/<id>.png and masks/<id>.png."""
    rows = []
    for i, (labels, gt, pred) in items.items():
        mask = None if gt is None else _png(tmp / "gt" / f"{i}.png", gt)
        _png(tmp / "masks" / f"{i}.png", pred)
        rows.append(EvalRow(id=i, path=tmp / f"{i}.png", labels=labels, split="test", group=i, fold=-1, mask=mask))
    return rows


def _five(tmp: Path) -> list[EvalRow]:
    # The SegAccumulator example of test_metrics.py as files (4x4). Predictions use value 1 = "scratch".
    # A scratch: gt 4 px, pred 6 px, IoU 2/3    B blob: gt 4 px, pred 1 px, IoU 1/4
    # C ok: false alarm 2 px, IoU 0             D ok: nothing, IoU 1 (excluded)      E scratch: missed, IoU 0
    return _dataset(
        tmp,
        {
            "A": (
                ("scratch",),
                _m((0, 0), (0, 1), (1, 0), (1, 1)),
                _m((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), value=1),
            ),
            "B": (("blob",), _m((0, 0), (0, 1), (0, 2), (0, 3)), _m((0, 0), value=1)),
            "C": ((), _m(), _m((3, 3), (3, 2), value=1)),
            "D": ((), None, _m()),
            "E": (("scratch",), _m((2, 2), (2, 3)), _m()),
        },
    )


def test_report_without_scores(tmp_path):
    rep = evaluate_masks(_five(tmp_path), INFO, tmp_path / "masks", None, EvaluateConfig())
    assert (rep.n_images, rep.n_defective, rep.n_no_gt, rep.n_seg_images, rep.n_gt_defective) == (5, 3, 0, 5, 3)
    assert rep.score_source == "masks"
    assert rep.miou_def == pytest.approx(11 / 36)  # (2/3 + 1/4 + 0) / 3
    assert rep.pooled_iou == pytest.approx(5 / 14)
    assert rep.seg_miou == pytest.approx(11 / 48)
    assert (rep.seg_recall_0_1, rep.seg_recall_0_5) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert rep.pixel_auroc is None
    # scores = mask non-empty: A 1, B 1, C 1, D 0, E 0; labels A 1, B 1, C 0, D 0, E 1
    # threshold 1: tp 2 fp 1 -> P 2/3 R 2/3; threshold 0: P 3/5 R 1 -> AP = 4/9 + 1/5
    # AUROC pairs (pos vs neg): A,B vs C 1/2 each, A,B vs D 1 each, E vs C 0, E vs D 1/2 -> 3.5/6
    assert rep.ap == pytest.approx(4 / 9 + 1 / 5)
    assert rep.auroc == pytest.approx(3.5 / 6)
    assert (rep.tp, rep.fp, rep.tn, rep.fn) == (2, 1, 1, 1)
    assert (rep.accuracy, rep.fpr, rep.fnr) == (pytest.approx(3 / 5), pytest.approx(1 / 2), pytest.approx(1 / 3))
    # per class: scratch over A, E: mIoU (2/3 + 0)/2, recall@0.5 1/2, all 6 predicted pixels are value 1
    # blob over B: mIoU 1/4, recall 0, its one predicted pixel is value 1 = scratch -> agreement 0
    scratch, blob = rep.per_class
    assert (scratch.name, scratch.n_images, blob.n_images) == ("scratch", 2, 1)
    assert scratch.miou == pytest.approx(1 / 3) and scratch.seg_recall_0_5 == 0.5 and scratch.class_agreement == 1.0
    assert blob.miou == pytest.approx(0.25) and blob.seg_recall_0_5 == 0.0 and blob.class_agreement == 0.0
    by_id = {r.id: r for r in rep.images}
    assert (by_id["A"].gt_area, by_id["A"].pred_area, by_id["D"].iou) == (4, 6, 1.0)


def test_binary_run_masks_have_no_class_agreement(tmp_path):
    """A binary run's masks (labelmap: one ``defect`` value) over a dataset of several classes do not say which
    class a pixel is: agreement is n/a, not "all blob" for value 1; the segmentation figures are unchanged."""
    rows = _five(tmp_path)
    write_labelmap(tmp_path / "masks", ("defect",))
    rep = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig())
    scratch, blob = rep.per_class
    assert math.isnan(scratch.class_agreement) and math.isnan(blob.class_agreement)
    assert scratch.miou == pytest.approx(1 / 3) and rep.miou_def == pytest.approx(11 / 36)
    write_labelmap(tmp_path / "masks", ("scratch", "blob"))  # a multi-class run's masks: agreement counts again
    scratch, blob = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig()).per_class
    assert (scratch.class_agreement, blob.class_agreement) == (1.0, 0.0)


def test_write_report(tmp_path):
    rep = evaluate_masks(_five(tmp_path), INFO, tmp_path / "masks", None, EvaluateConfig())
    out = tmp_path / "out"
    paths = write_report(rep, out)
    assert sorted(p.name for p in out.iterdir()) == ["per_image.csv", "report.json", "report.md"]
    assert set(paths) == {"per_image.csv", "report.json", "report.md"}
    data = json.loads((out / "report.json").read_text())
    assert data["miou_def"] == pytest.approx(11 / 36) and data["pixel_auroc"] is None
    assert data["seg_recall@0.5"] == pytest.approx(1 / 3) and data["per_class"][0]["seg_recall@0.5"] == 0.5
    md = (out / "report.md").read_text()
    assert "| mIoU_def | 30.56% |" in md and "| pixel AUROC | n/a |" in md and "## Per class" in md
    lines = (out / "per_image.csv").read_text().splitlines()
    assert lines[0] == "id,label,classes,score,decision,iou,gt_area,pred_area"
    assert lines[1] == "A,defect,scratch,1,defect,0.666667,4,6"


def test_scores_gate_masks(tmp_path):
    rows = _five(tmp_path)
    # B (0.3) and C (0.2) called OK: their masks are emptied. A IoU 2/3, B 0 (missed), C and D excluded, E 0
    scores = {"A": 0.9, "B": 0.3, "C": 0.2, "D": 0.1, "E": 0.6}
    rep = evaluate_masks(rows, INFO, tmp_path / "masks", scores, EvaluateConfig())
    assert rep.score_source == "scores"
    assert rep.miou_def == pytest.approx(2 / 9) and rep.seg_miou == pytest.approx(2 / 9)
    assert rep.pooled_iou == pytest.approx(4 / 12)  # (4) / (6 + 4 + 0 + 0 + 2)
    assert {r.id: r.pred_area for r in rep.images} == {"A": 6, "B": 0, "C": 0, "D": 0, "E": 0}
    assert rep.ap == pytest.approx(1.0) and rep.auroc == pytest.approx(1.0)
    # all called OK: every mask emptied
    rep = evaluate_masks(rows, INFO, tmp_path / "masks", dict.fromkeys(scores, 0.0), EvaluateConfig())
    assert rep.miou_def == 0.0 and rep.seg_miou == 0.0 and rep.pooled_iou == 0.0
    assert all(r.pred_area == 0 and not r.decision for r in rep.images)


def test_soft_ground_truth_threshold(tmp_path):
    # core 2x2 at 255 with a ring at 64: threshold 128 -> gt = core (IoU 1); threshold 1 -> 9 px (IoU 4/9)
    gt = np.zeros((4, 4), np.uint8)
    gt[:3, :3] = 64
    gt[:2, :2] = 255
    rows = _dataset(tmp_path, {"S": (("scratch",), gt, _m((0, 0), (0, 1), (1, 0), (1, 1), value=1))})
    hard = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig())
    soft_info = DatasetInfo(kind="ksdd", classes=("scratch",), mask_threshold=1)
    soft = evaluate_masks(rows, soft_info, tmp_path / "masks", None, EvaluateConfig())
    assert hard.miou_def == pytest.approx(1.0)
    assert soft.miou_def == pytest.approx(4 / 9)


def test_ignore_pixels(tmp_path):
    # I: gt row 0 (4 px), pred 2 px defect + 2 px ignore -> background: IoU 2/4, defect: IoU 1
    # J: labelled OK, pred only ignore pixels -> background: empty (score 0, excluded), defect: false alarm
    rows = _dataset(
        tmp_path,
        {
            "I": (("scratch",), _m((0, 0), (0, 1), (0, 2), (0, 3)), _m((0, 0), (0, 1), value=1) + _m((0, 2), (0, 3))),
            "J": ((), _m(), _m((3, 0), (3, 1))),
        },
    )
    bg = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig(ignore_as="background"))
    assert bg.miou_def == pytest.approx(0.5) and bg.seg_miou == pytest.approx(0.5)
    assert [r.score for r in bg.images] == [1.0, 0.0]
    de = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig(ignore_as="defect"))
    assert de.miou_def == pytest.approx(1.0) and de.seg_miou == pytest.approx(0.5)  # (1 + 0) / 2
    assert [r.score for r in de.images] == [1.0, 1.0]
    assert de.per_class[0].class_agreement == 1.0  # ignore pixels are no class


def test_no_defective_images_and_missing_gt(tmp_path):
    rows = _dataset(
        tmp_path, {"O1": ((), None, _m()), "O2": ((), _m(), _m()), "X": (("blob",), None, _m((1, 1), value=2))}
    )
    rep = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig())
    assert (rep.n_images, rep.n_no_gt, rep.n_seg_images, rep.n_gt_defective) == (3, 1, 2, 0)
    assert math.isnan(rep.miou_def) and math.isnan(rep.seg_recall_0_5) and math.isnan(rep.pooled_iou)
    assert rep.ap == pytest.approx(1.0)  # X, labelled defective, still counts at image level
    assert rep.to_json()["miou_def"] is None
    assert "| mIoU_def | n/a |" in rep.to_markdown()
    assert next(r for r in rep.images if r.id == "X").iou is None


def test_missing_predicted_masks_listed(tmp_path):
    rows = _five(tmp_path)
    extra = [
        EvalRow(id=f"n{k}", path=tmp_path / "x.png", labels=(), split="test", group="g", fold=-1) for k in range(6)
    ]
    with pytest.raises(DataError) as e:
        evaluate_masks(rows + extra, INFO, tmp_path / "masks", None, EvaluateConfig())
    msg = str(e.value)
    # some missing: each is a file to write, so every id is named
    assert str(tmp_path / "masks") in msg and "6 of 11" in msg and "n0, n1, n2, n3, n4, n5" in msg
    assert "run the stage that writes masks" in msg
    with pytest.raises(DataError) as e:  # all missing: the wrong folder or split, a few ids are enough
        evaluate_masks(extra, INFO, tmp_path / "masks", None, EvaluateConfig())
    assert "6 of 6" in str(e.value) and "n0, n1, n2, n3, n4, ... (1 more)" in str(e.value)


@pytest.mark.parametrize(
    ("labels", "has_gt", "reference"),
    [
        (("scratch",), True, "the ground truth"),
        ((), True, "the ground truth"),
        ((), False, "its image"),  # an OK image without a mask: its image's size
        (("scratch",), False, "its image"),  # defective without ground truth: left out of the pixel metrics only
    ],
)
def test_size_mismatch_names_predicted_file(tmp_path, labels, has_gt, reference):
    rows = _dataset(tmp_path, {"A": (labels, _m() if has_gt else None, _m(shape=(5, 4)))})
    _png(tmp_path / "A.png", _m())  # the image, 4x4
    with pytest.raises(DataError) as e:
        evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig())
    msg = str(e.value)
    assert str(tmp_path / "masks" / "A.png") in msg and "4x5" in msg and "4x4" in msg and reference in msg
    assert "original image size" in msg


def test_every_bad_mask_is_listed_at_once(tmp_path):
    rows = _five(tmp_path)
    for i in "ABCDE":
        _png(tmp_path / f"{i}.png", _m())  # the images, 4x4 like their masks
    masks = tmp_path / "masks"
    _png(masks / "A.png", _m(shape=(6, 4)))  # defective, wrong size
    _png(masks / "C.png", _m(shape=(4, 3)))  # OK with ground truth, wrong size
    _png(masks / "D.png", _m(shape=(2, 2)))  # OK without ground truth: its image's size
    (masks / "B.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # corrupt
    (masks / "E.png").unlink()
    with pytest.raises(ManyErrors) as e:
        evaluate_masks(rows, INFO, masks, {k: 1.0 for k in "ABC"}, EvaluateConfig())
    msg = str(e.value)
    assert e.value.exit_code == 1 and "6 problem(s)" in msg and "nothing evaluated, no report written" in msg
    for name in ("A.png", "B.png", "C.png", "D.png"):
        assert str(masks / name) in msg, name
    assert (
        "1 of 5 indexed images have no predicted mask: E" in msg and "2 of 5 indexed images have no score: D, E" in msg
    )


def test_unreadable_or_colour_prediction(tmp_path):
    rows = _dataset(tmp_path, {"A": (("scratch",), _m(), _m())})
    bad = tmp_path / "masks" / "A.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="predicted mask is not a readable image"):
        evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig())
    Image.new("RGB", (4, 4)).save(bad)
    with pytest.raises(DataError, match="mode RGB"):
        evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig())


def test_missing_scores_listed(tmp_path):
    with pytest.raises(DataError, match="1 of 5 indexed images have no score: E"):
        evaluate_masks(_five(tmp_path), INFO, tmp_path / "masks", {k: 1.0 for k in "ABCD"}, EvaluateConfig())


def test_read_scores(tmp_path):
    p = tmp_path / "scores.csv"
    p.write_text("id,score,rounds\nA,0.9,2\nB,1e-3,0\n\n")
    assert read_scores(p) == {"A": 0.9, "B": 0.001}
    p.write_text("id,prob\nA,0.9\n")
    with pytest.raises(DataError, match=r"scores.csv:1: missing column\(s\) score"):
        read_scores(p)
    p.write_text("id,score\nA,0.9\nB,high\n")
    with pytest.raises(DataError, match=r"scores.csv:3: score 'high' of 'B' is not a finite number"):
        read_scores(p)
    p.write_text("id,score\nA,0.9\nA,0.1\n")
    with pytest.raises(DataError, match=r"scores.csv:3: duplicate id 'A'"):
        read_scores(p)
    with pytest.raises(DataError, match="scores file not found"):
        read_scores(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------ pixel AP / AUROC (--probs)


def _probs(tmp: Path, rows: list[EvalRow], seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """A probability map per row, in each supported format (16-bit PNG, 8-bit PNG, .npy, .npz), correlated with the
    ground truth and with ties; returns the folder and the reference (every pixel's level / 65535, its ground truth)."""
    rng = np.random.default_rng(seed)
    folder, scores, truth = tmp / "probs", [], []
    folder.mkdir()
    for k, row in enumerate(rows):
        gt = np.zeros((4, 4), bool) if row.mask is None else np.asarray(Image.open(row.mask)) >= INFO.mask_threshold
        p = np.clip(rng.random((4, 4)) * 0.7 + 0.4 * gt, 0, 1)
        fmt = k % 4
        if fmt == 0:
            levels = np.rint(p * PROB_LEVELS).astype(np.uint16)
            levels[0, :2] = levels[0, 0]  # a tie
            Image.fromarray(levels).save(folder / f"{row.id}.png")  # 16-bit grayscale
        elif fmt == 1:
            v8 = np.rint(p * 255).astype(np.uint8)
            _png(folder / f"{row.id}.png", v8)
            levels = v8.astype(np.uint16) * 257
        elif fmt == 2:
            np.save(folder / f"{row.id}.npy", p.astype(np.float32))
            levels = np.rint(p.astype(np.float32).astype(np.float64) * PROB_LEVELS)
        else:
            np.savez_compressed(folder / f"{row.id}.npz", probs=p)
            levels = np.rint(p * PROB_LEVELS)
        scores.append(levels.ravel() / PROB_LEVELS)
        truth.append(gt.ravel())
    return folder, np.concatenate(scores), np.concatenate(truth)


def test_pixel_ap_and_auroc_of_probability_maps(tmp_path):
    rows = _five(tmp_path)
    probs, s, y = _probs(tmp_path, rows)
    rep = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig(), probs)
    assert rep.pixel_ap == pytest.approx(average_precision(y, s), abs=1e-12) and 0 < rep.pixel_ap < 1
    assert rep.pixel_auroc == pytest.approx(auroc(y, s), abs=1e-12)
    assert rep.miou_def == pytest.approx(11 / 36)  # the masks' metrics are unchanged
    gated = evaluate_masks(rows, INFO, tmp_path / "masks", dict.fromkeys("ABCDE", 0.0), EvaluateConfig(), probs)
    assert gated.miou_def == 0.0 and gated.pixel_ap == rep.pixel_ap  # the maps are not gated by the decision
    paths = write_report(rep, tmp_path / "out")
    data = json.loads(paths["report.json"].read_text())
    assert data["pixel_ap"] == pytest.approx(rep.pixel_ap) and data["probs_dir"] == str(probs)
    md = paths["report.md"].read_text()
    assert f"| pixel AP | {100 * rep.pixel_ap:.2f}% |" in md and "ungated defect-probability maps" in md


def test_pixel_metrics_leave_out_images_without_ground_truth_and_are_nan_without_defects(tmp_path):
    rows = _dataset(tmp_path, {"A": ((), _m(), _m()), "B": (("scratch",), None, _m((0, 0), value=1))})
    (tmp_path / "probs").mkdir()
    for i in "AB":
        np.save(tmp_path / "probs" / f"{i}.npy", np.full((4, 4), 0.9))
    rep = evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig(), tmp_path / "probs")
    assert rep.n_seg_images == 1 and math.isnan(rep.pixel_ap) and math.isnan(rep.pixel_auroc)  # only A: no defect
    assert json.loads(write_report(rep, tmp_path / "out")["report.json"].read_text())["pixel_ap"] is None


def test_every_bad_probability_map_is_listed_at_once(tmp_path):
    rows = _five(tmp_path)
    for i in "ABCDE":
        _png(tmp_path / f"{i}.png", _m())  # the images, 4x4
    probs, _, _ = _probs(tmp_path, rows)
    # A: 16-bit PNG, B: 8-bit PNG, C: .npy, D: .npz, E: 16-bit PNG
    Image.fromarray(np.zeros((5, 4), np.uint16)).save(probs / "A.png")  # wrong size
    Image.new("RGB", (4, 4)).save(probs / "B.png")  # colour
    np.save(probs / "C.npy", np.full((4, 4), 1.5))  # not a probability
    np.save(probs / "D.npy", np.zeros((4, 4, 2)))  # .npy is looked for before .npz: 3-D
    (probs / "E.png").unlink()  # missing
    _png(tmp_path / "masks" / "A.png", _m(shape=(6, 4)))  # a bad mask is listed with them
    out = tmp_path / "out"
    with pytest.raises(ManyErrors) as e:
        evaluate_masks(rows, INFO, tmp_path / "masks", None, EvaluateConfig(), probs)
    msg = str(e.value)
    assert "6 problem(s)" in msg and "nothing evaluated, no report written" in msg and not out.exists()
    assert f"{probs / 'A.png'}: probability map is 4x5 (WxH) but the ground truth" in msg
    assert f"{tmp_path / 'masks' / 'A.png'}: predicted mask is 4x6 (WxH)" in msg
    assert f"{probs / 'B.png'}: probability map has image mode RGB" in msg
    assert f"{probs / 'C.npy'}: probability map has values outside [0, 1]" in msg
    assert f"{probs / 'D.npy'}: probability map is a float64 array of shape (4, 4, 2)" in msg
    assert "1 of 5 indexed images have no probability map: E" in msg
    with pytest.raises(DataError, match="probability maps folder not found"):
        evaluate_masks(rows[1:], INFO, tmp_path / "masks", None, EvaluateConfig(), tmp_path / "none")


def test_read_prob_map_levels(tmp_path):
    v16 = np.array([[0, 1, 65534, 65535]], np.uint16)
    Image.fromarray(v16).save(tmp_path / "a.png")
    assert read_prob_map(tmp_path / "a.png").tolist() == v16.tolist()
    _png(tmp_path / "b.png", np.array([[0, 1, 128, 255]]))
    assert read_prob_map(tmp_path / "b.png").tolist() == [[0, 257, 128 * 257, 65535]]
    np.savez(tmp_path / "c.npz", a=np.zeros((2, 2)), b=np.ones((2, 2)))
    with pytest.raises(DataError, match=r"c.npz: holds arrays \['a', 'b'\]"):
        read_prob_map(tmp_path / "c.npz")
    (tmp_path / "d.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="d.npy: probability map cannot be read"):
        read_prob_map(tmp_path / "d.npy")
