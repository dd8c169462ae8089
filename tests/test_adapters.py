"""Every dataset adapter on a tiny tree in its official layout, plus the layout errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from wsss.config import DatasetConfig
from wsss.data.base import Sample, create_adapter
from wsss.errors import ConfigError, DataError, ManyErrors, WsssError


def img(path: Path, value: int = 100, shape: tuple[int, int] = (8, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def scan(kind: str, root: Path, **kw: object) -> list[Sample]:
    return create_adapter(DatasetConfig(kind=kind, root=str(root), **kw), root).scan()


def by_id(samples: list[Sample]) -> dict[str, Sample]:
    return {s.id: s for s in samples}


def test_unknown_kind_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="available kinds: csv, dagm, folder, ksdd, ksdd2, mtd, mvtec, neu"):
        create_adapter(DatasetConfig(kind="nope"), tmp_path)


@pytest.mark.parametrize("kind", ["folder", "mtd", "ksdd", "ksdd2", "dagm", "mvtec", "neu"])
def test_missing_root(tmp_path: Path, kind: str) -> None:
    with pytest.raises(DataError, match=r"absent: dataset root does not exist \(set dataset.root"):
        scan(kind, tmp_path / "absent")


def test_folder(tmp_path: Path) -> None:
    img(tmp_path / "OK" / "a.png")
    img(tmp_path / "scratch" / "b.png")
    img(tmp_path / "scratch" / "b_mask.png", 255)
    img(tmp_path / "blob" / "sub" / "c.jpg")
    img(tmp_path / "masks" / "blob" / "sub" / "c.png", 255)
    (tmp_path / "scratch" / "notes.txt").write_text("ignored")
    s = by_id(scan("folder", tmp_path))
    assert sorted(s) == ["OK__a", "blob__sub__c", "scratch__b"]
    assert s["OK__a"].labels == () and s["OK__a"].mask is None
    assert s["scratch__b"].labels == ("scratch",) and s["scratch__b"].mask == tmp_path / "scratch" / "b_mask.png"
    assert s["blob__sub__c"].labels == ("blob",) and s["blob__sub__c"].mask == tmp_path / "masks/blob/sub/c.png"
    assert [x.labels for x in scan("folder", tmp_path, binary=True)] == [(), ("defect",), ("defect",)]


def test_folder_empty_class_folders_reported_together(tmp_path: Path) -> None:
    img(tmp_path / "ok" / "a.png")
    (tmp_path / "crack").mkdir()
    (tmp_path / "dent").mkdir()
    (tmp_path / "dent" / "readme.txt").write_text("no images")
    with pytest.raises(ManyErrors) as e:
        scan("folder", tmp_path)
    msg = str(e.value)
    assert f"{tmp_path / 'crack'}: class folder has no images (add images" in msg
    assert f"{tmp_path / 'dent'}: class folder has no images" in msg


def test_folder_loose_images(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"1 image\(s\) lie directly in the root, e.g. a.png \(put each image"):
        scan("folder", tmp_path)


def test_csv(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d", "e"):
        img(tmp_path / "imgs" / f"{name}.png")
    img(tmp_path / "imgs" / "e_gt.png", 255)
    rows = ["path,label,mask,comment", "imgs/a.png,,,x", "imgs/b.png,0,,", "imgs/c.png,Good,,", "imgs/d.png,1,,",
            f"{tmp_path / 'imgs' / 'e.png'},scratch; dent ,imgs/e_gt.png,"]  # fmt: skip
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    s = by_id(scan("csv", tmp_path / "list.csv"))
    assert {k: v.labels for k, v in s.items()} == {
        "imgs__a": (), "imgs__b": (), "imgs__c": (), "imgs__d": ("defect",), "imgs__e": ("scratch", "dent"),
    }  # fmt: skip
    assert s["imgs__e"].mask == tmp_path / "imgs" / "e_gt.png" and s["imgs__a"].mask is None


def test_csv_escapes_and_missing_files_reported_together(tmp_path: Path) -> None:
    data = tmp_path / "data"
    img(data / "ok.png")
    img(tmp_path / "evil.png")
    outside = tmp_path / "elsewhere" / "x.png"
    img(outside)
    lines = ["path,label", "ok.png,0", "../evil.png,1", f"{outside},1", "gone.png,1", "ok.png,1", ",1"]
    (data / "set.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManyErrors) as e:
        scan("csv", data / "set.csv")
    msg, csv_name = str(e.value), str(data / "set.csv")
    assert msg.startswith("4 problem(s)")
    assert f"{csv_name}, line 3: path '../evil.png' escapes the dataset root {data} (list only files inside" in msg
    assert f"{csv_name}, line 4: path '{outside}' escapes the dataset root" in msg
    assert f"{csv_name}, line 5: file not found: 'gone.png' (fix the path (relative to {data}))" in msg
    assert f"{csv_name}, line 7: empty path" in msg


def test_csv_header_and_file(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a.png,1\n")
    with pytest.raises(DataError, match="missing column.*header with columns path,label"):
        scan("csv", tmp_path / "x.csv")
    with pytest.raises(DataError, match=r"no\.csv: CSV file not found"):
        scan("csv", tmp_path / "no.csv")


def test_mtd(tmp_path: Path) -> None:
    for cls, name in [("Free", "f1"), ("Free", "f2"), ("Crack", "c1"), ("Uneven", "u1")]:
        img(tmp_path / f"MT_{cls}" / "Imgs" / f"{name}.jpg")
        img(tmp_path / f"MT_{cls}" / "Imgs" / f"{name}.png", 0 if cls == "Free" else 255)
    adapter = create_adapter(DatasetConfig(kind="mtd", root=str(tmp_path)), tmp_path)
    s = by_id(adapter.scan())
    assert {k: v.labels for k, v in s.items()} == {
        "Crack__c1": ("Crack",), "Free__f1": (), "Free__f2": (), "Uneven__u1": ("Uneven",),
    }  # fmt: skip
    assert s["Crack__c1"].mask == tmp_path / "MT_Crack" / "Imgs" / "c1.png"
    assert adapter.threshold() == 128
    with pytest.raises(DataError, match="no MT_<Class>/Imgs folders found"):
        scan("mtd", tmp_path / "MT_Free")


def test_ksdd_labels_from_masks_and_duplicate_items(tmp_path: Path) -> None:
    for item in ("kos01", "kos02", "kos26", "kos27", "kos34"):
        for part, defect in (("Part0", item in ("kos01", "kos26")), ("Part1", False)):
            img(tmp_path / item / f"{part}.jpg")
            img(tmp_path / item / f"{part}_label.png", 255 if defect else 0)
    s = by_id(scan("ksdd", tmp_path))
    assert len(s) == 10 and s["kos01_Part0"].labels == ("defect",) and s["kos01_Part1"].labels == ()
    assert s["kos26_Part0"].labels == ("defect",) and s["kos01_Part0"].mask == tmp_path / "kos01/Part0_label.png"
    assert {k: v.group for k, v in s.items() if k.endswith("Part0")} == {
        "kos01_Part0": "kos01", "kos02_Part0": "kos02", "kos26_Part0": "kos01", "kos27_Part0": "kos27",
        "kos34_Part0": "kos27",
    }  # fmt: skip
    (tmp_path / "kos02" / "Part1_label.png").unlink()
    with pytest.raises(DataError, match=r"Part1\.jpg: no mask Part1_label\.png beside the image"):
        scan("ksdd", tmp_path)


def test_ksdd2_official_split(tmp_path: Path) -> None:
    for split, n, defect in (("train", 10000, True), ("train", 10001, False), ("test", 20000, False)):
        img(tmp_path / split / f"{n}.png")
        img(tmp_path / split / f"{n}_GT.png", 255 if defect else 0)
    s = by_id(scan("ksdd2", tmp_path))
    assert {k: (v.labels, v.split) for k, v in s.items()} == {
        "train__10000": (("defect",), "train"), "train__10001": ((), "train"), "test__20000": ((), "test"),
    }  # fmt: skip


def test_dagm(tmp_path: Path) -> None:
    for cls in ("Class1", "Class2"):
        for sub in ("Train", "Test"):
            folder = tmp_path / cls / sub
            img(folder / "0001.PNG")
            img(folder / "0002.PNG")
            img(folder / "Label" / "0002_label.PNG", 255)
            rows = ["1", "1\t0\t0001.PNG\t0\t", "2  1  0002.PNG  0  0002_label.PNG"]  # tabs or spaces
            (folder / "Label" / "Labels.txt").write_text("\n".join(rows) + "\n")
    s = by_id(scan("dagm", tmp_path))
    assert len(s) == 8
    assert s["Class1__Train__0001"].labels == () and s["Class1__Train__0001"].mask is None
    d = s["Class2__Test__0002"]
    assert (d.labels, d.split, d.mask) == (("Class2",), "test", tmp_path / "Class2/Test/Label/0002_label.PNG")
    only = scan("dagm", tmp_path, categories=["2"])
    assert {x.id.split("__")[0] for x in only} == {"Class2"}
    assert len(scan("dagm", tmp_path / "Class1")) == 4  # one class folder as root
    with pytest.raises(DataError, match=r"dataset.categories: unknown DAGM classes \['Class9'\].*Class1, Class2"):
        scan("dagm", tmp_path, categories=["Class9"])


def test_mvtec(tmp_path: Path) -> None:
    for cat in ("bottle", "screw"):
        img(tmp_path / cat / "train" / "good" / "000.png")
        img(tmp_path / cat / "test" / "good" / "000.png")
        img(tmp_path / cat / "test" / "crack" / "000.png")
        img(tmp_path / cat / "ground_truth" / "crack" / "000_mask.png", 255)
    s = by_id(scan("mvtec", tmp_path))
    assert len(s) == 6
    c = s["bottle__test__crack__000"]
    assert (c.labels, c.split, c.mask) == (
        ("bottle.crack",),
        "test",
        tmp_path / "bottle/ground_truth/crack/000_mask.png",
    )
    assert (s["screw__train__good__000"].labels, s["screw__train__good__000"].split) == ((), "train")
    one = by_id(scan("mvtec", tmp_path, categories=["screw"]))
    assert len(one) == 3 and one["screw__test__crack__000"].labels == ("crack",)
    assert by_id(scan("mvtec", tmp_path / "bottle"))["bottle__test__crack__000"].labels == ("crack",)


def test_neu_cls(tmp_path: Path) -> None:
    for name in ("Cr_1.bmp", "PS_2.bmp", "RS_10.bmp", "rolled-in_scale_3.jpg", "Sc_4.bmp"):
        img(tmp_path / "NEU-CLS" / name)
    s = by_id(scan("neu", tmp_path))
    assert {k: v.labels[0] for k, v in s.items()} == {
        "NEU-CLS__Cr_1": "crazing", "NEU-CLS__PS_2": "pitted_surface", "NEU-CLS__RS_10": "rolled-in_scale",
        "NEU-CLS__rolled-in_scale_3": "rolled-in_scale", "NEU-CLS__Sc_4": "scratches",
    }  # fmt: skip
    img(tmp_path / "NEU-CLS" / "Xy_1.bmp")
    with pytest.raises(DataError, match=r"Xy_1\.bmp: unknown NEU class prefix 'xy'"):
        scan("neu", tmp_path)


def test_neu_seg(tmp_path: Path) -> None:
    img(tmp_path / "images" / "training" / "000001.jpg")
    m = np.zeros((8, 10), np.uint8)
    m[0, 0], m[1, 1] = 1, 3
    (tmp_path / "annotations" / "training").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "annotations" / "training" / "000001.png"), m)
    img(tmp_path / "images" / "test" / "000002.jpg")
    img(tmp_path / "annotations" / "test" / "000002.png", 0)
    s = by_id(scan("neu", tmp_path))
    assert s["images__training__000001"].labels == ("inclusion", "scratches")
    assert s["images__training__000001"].split == "train"
    assert (s["images__test__000002"].labels, s["images__test__000002"].split) == ((), "test")
    img(tmp_path / "annotations" / "test" / "000002.png", 7)
    with pytest.raises(WsssError, match=r"000002\.png: unexpected mask values \[7\]"):
        scan("neu", tmp_path)
