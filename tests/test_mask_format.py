"""Mask folders as users have them: binary 0/255 masks, wsss's label masks (255 = ignore), labelmap.txt, refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsss.cli import cli
from wsss.config import EvaluateConfig
from wsss.data.index import DatasetInfo, EvalRow, write_dataset_info, write_index
from wsss.errors import DataError
from wsss.evaluation import evaluate_masks, read_pred_mask
from wsss.mask_format import mask_encoding, read_mask_png, write_labelmap

ONE = DatasetInfo(kind="folder", classes=("defect",), mask_threshold=128)
TWO = DatasetInfo(kind="folder", classes=("scratch", "blob"), mask_threshold=128)


def _write(folder: Path, masks: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, m in masks.items():
        cv2.imwrite(str(folder / f"{k}.png"), m)
    return folder


def _rows(tmp: Path) -> tuple[list[EvalRow], dict[str, np.ndarray]]:
    """Three 8x8 images: a defect the prediction half covers, an OK image, a missed defect; predictions as 0/1."""
    gt, pred = {}, {}
    gt["a"], pred["a"] = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    gt["a"][2:6, 2:6], pred["a"][2:6, 2:4] = 255, 1
    gt["b"], pred["b"] = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    gt["c"], pred["c"] = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    gt["c"][0:2, 0:8] = 255
    _write(tmp / "gt", gt)
    labels = {"a": ("defect",), "b": (), "c": ("defect",)}
    rows = [
        EvalRow(
            id=k, path=tmp / f"{k}.png", labels=labels[k], split="test", group=k, fold=-1, mask=tmp / "gt" / f"{k}.png"
        )
        for k in gt
    ]
    return rows, pred


def test_binary_0_255_folder_scores_like_the_same_masks_as_labels(tmp_path: Path):
    rows, pred = _rows(tmp_path)
    labels = evaluate_masks(rows, ONE, _write(tmp_path / "labels", pred), None, EvaluateConfig(split="all"))
    binary_dir = _write(tmp_path / "binary", {k: m * 255 for k, m in pred.items()})
    binary = evaluate_masks(rows, ONE, binary_dir, None, EvaluateConfig(split="all"))
    assert labels.miou_def == pytest.approx(0.25) and labels.mask_format == "labels" and not labels.mask_note
    assert binary.miou_def == labels.miou_def and binary.ap == labels.ap and binary.fnr == labels.fnr
    assert binary.mask_format == "binary" and str(binary_dir) in binary.mask_note and "255 = defect" in binary.mask_note
    assert "Note: read" in binary.to_markdown()


def test_wsss_masks_keep_255_as_ignore(tmp_path: Path):
    rows, pred = _rows(tmp_path)
    ignore = {k: np.where(m > 0, 255, 0).astype(np.uint8) for k, m in pred.items()}  # all-ignore predictions
    stage = tmp_path / "pseudo-labels"
    _write(stage / "masks", ignore)
    (stage / "manifest.json").write_text("{}")  # a stage folder written before labelmap.txt existed
    assert evaluate_masks(rows, ONE, stage / "masks", None, EvaluateConfig(split="all")).miou_def == 0.0
    labelled = _write(tmp_path / "with-labelmap", ignore)
    write_labelmap(labelled, ONE.classes)
    report = evaluate_masks(rows, ONE, labelled, None, EvaluateConfig(split="all"))
    assert report.miou_def == 0.0 and report.mask_format == "labelmap"
    # ignore counted as defect: the same as the binary reading
    as_defect = EvaluateConfig(split="all", ignore_as="defect")
    assert evaluate_masks(rows, ONE, labelled, None, as_defect).miou_def == pytest.approx(0.25)


def test_a_users_labelmap_says_what_255_means(tmp_path: Path):
    rows, pred = _rows(tmp_path)
    folder = _write(tmp_path / "m", {k: m * 255 for k, m in pred.items()})
    (folder / "labelmap.txt").write_text("0 background\n255 defect\n")
    assert evaluate_masks(rows, ONE, folder, None, EvaluateConfig(split="all")).miou_def == pytest.approx(0.25)
    (folder / "labelmap.txt").write_text("0 background\n255 rust\n")
    with pytest.raises(DataError, match="'rust' is not background, ignore or a class"):
        evaluate_masks(rows, ONE, folder, None, EvaluateConfig(split="all"))


def test_ambiguous_folders_are_refused_with_how_to_say_what_255_means(tmp_path: Path):
    folder = _write(tmp_path / "m", {"a": np.array([[0, 255]], np.uint8)})
    with pytest.raises(DataError) as e:
        mask_encoding(folder, TWO.classes, [read_pred_mask(folder / "a.png")])
    text = str(e.value)
    assert str(folder) in text and "2 classes" in text and "labelmap.txt" in text and "--mask-format" in text
    folder2 = _write(tmp_path / "soft", {"a": np.array([[0, 37, 128, 255]], np.uint8)})  # resized, interpolated
    with pytest.raises(DataError, match="mask values 37, 128 are neither classes"):
        mask_encoding(folder2, ONE.classes, [read_pred_mask(folder2 / "a.png")])
    # said explicitly, both read
    assert mask_encoding(folder2, ONE.classes, [], "binary").to_labels(np.array([37, 128], np.uint8)).tolist() == [0, 1]
    assert mask_encoding(folder, TWO.classes, [], "labels").to_labels(np.array([255], np.uint8)).tolist() == [255]
    with pytest.raises(DataError, match="binary masks name one defect class"):
        mask_encoding(folder, TWO.classes, [], "binary")
    # an empty folder or class-valued masks need nothing said
    labels = _write(tmp_path / "labels", {"a": np.array([[0, 1, 2, 255]], np.uint8)})
    assert mask_encoding(labels, TWO.classes, [read_pred_mask(labels / "a.png")]).kind == "labels"


def test_cli_evaluate_reads_binary_masks_with_a_note_and_refuses_ambiguous_ones(tmp_path: Path):
    rows, pred = _rows(tmp_path)
    index = tmp_path / "prepare" / "index.csv"
    index.parent.mkdir()
    write_index(index, rows)
    write_dataset_info(index.parent / "dataset.json", ONE)
    folder = _write(tmp_path / "theirs" / "masks", {k: m * 255 for k, m in pred.items()})
    args = ["evaluate", "--index", str(index), "--masks", str(folder), "--split", "all"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "note: read" in r.output and "| mIoU_def | 25.00% |" in r.output
    assert (tmp_path / "theirs" / "evaluate-masks" / "report.json").is_file()  # beside the masks, not in them
    r = CliRunner().invoke(cli, [*args, "--mask-format", "labels"])  # 255 = ignore, as the user said
    assert r.exit_code == 0 and "| mIoU_def | 0.00% |" in r.output
    write_dataset_info(index.parent / "dataset.json", TWO)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and str(folder) in r.output and "labelmap.txt" in r.output


def _png_bytes(arr: np.ndarray) -> bytes:
    return cv2.imencode(".png", arr)[1].tobytes()


def _corrupt_header(arr: np.ndarray) -> bytes:
    data = bytearray(_png_bytes(arr))
    data[16:24] = b"\xff" * 8  # the header chunk fails its CRC: OpenCV's decoder prints `libpng error: IHDR`
    return bytes(data)


GRAY = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (_corrupt_header(GRAY), "is not a readable image"),
        (_png_bytes(GRAY)[:100], "is truncated"),
        (b"not a png", "is not a readable image"),
        (b"", "is not a readable image"),
        (_png_bytes(np.zeros((4, 4, 3), np.uint8)), "has image mode RGB"),
        (_png_bytes(np.zeros((4, 4), np.uint16)), "has image mode I;16"),
        (None, "not found"),
    ],
    ids=["corrupt-header", "truncated", "text", "empty", "colour", "16-bit", "missing"],
)
def test_a_bad_mask_file_is_one_error_naming_it_and_nothing_else(
    tmp_path: Path, capfd: pytest.CaptureFixture, content: bytes | None, what: str
):
    path = tmp_path / "a.png"
    if content is not None:
        path.write_bytes(content)
    capfd.readouterr()
    with pytest.raises(DataError) as e:
        read_mask_png(path, "predicted mask")
    assert str(e.value).startswith(f"{path}: predicted mask {what}") and "8-bit grayscale PNG" in str(e.value)
    assert capfd.readouterr().err == ""  # no decoder message beside our error


def test_mask_files_keep_their_values(tmp_path: Path):
    (tmp_path / "gray.png").write_bytes(_png_bytes(GRAY))
    gray = read_mask_png(tmp_path / "gray.png")
    assert np.array_equal(gray, GRAY) and gray.flags.writeable
    palette = Image.fromarray(np.array([[0, 1, 2, 255]], np.uint8), mode="P")  # VOC-style: index = label value
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [9] * (253 * 3))
    palette.save(tmp_path / "palette.png")
    assert read_mask_png(tmp_path / "palette.png").tolist() == [[0, 1, 2, 255]]


@pytest.mark.parametrize("command", ["evaluate", "import-review"])
def test_the_mask_format_hint_names_an_option_of_both_commands(tmp_path: Path, command: str):
    folder = _write(tmp_path / "m", {"a": np.array([[0, 255]], np.uint8)})
    with pytest.raises(DataError) as e:
        mask_encoding(folder, TWO.classes, [read_mask_png(folder / "a.png")])
    assert "--mask-format binary" in str(e.value) and "labels" in str(e.value)
    assert "--mask-format [auto|labels|binary]" in CliRunner().invoke(cli, [command, "--help"]).output
