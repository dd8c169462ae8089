"""Distillation into the multi-task segmenter (METHOD.md 6): losses, gating, learning, the `train-segmenter` stage."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_segmenter import SIZE, make_data, rcfg

from wsss.config import SegmenterConfig, SegTrainConfig
from wsss.data.images import read_image
from wsss.data.index import read_train_index
from wsss.errors import ConfigError
from wsss.evaluation.metrics import PROB_HALF
from wsss.models.segmenter import gate_labels, load_segmenter
from wsss.train.losses import distillation_kl, score_distillation
from wsss.train.schedule import epochs_for_steps
from wsss.train.segmenter import SegmenterTrainer
from wsss.train.segmenter_data import PseudoMaskDataset, SegmenterData, Teacher


def test_distillation_kl_is_zero_when_the_student_matches_the_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    teacher = torch.softmax(torch.randn(2, 3, 5, 5), dim=1)
    for t in (1.0, 2.0, 4.0):
        assert distillation_kl(teacher.log(), teacher, t).item() == pytest.approx(0.0, abs=1e-5)
        assert distillation_kl(torch.randn(2, 3, 5, 5), teacher, t).item() > 0.01
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    distillation_kl(logits, teacher, 2.0).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_score_distillation_pulls_toward_the_dfc_scores():
    target = torch.tensor([[0.9], [0.1]])
    near, far = torch.logit(torch.tensor([[0.85], [0.15]])), torch.logit(torch.tensor([[0.2], [0.8]]))
    assert score_distillation(near, target) < score_distillation(far, target)


def test_gate_labels_empties_classes_the_image_head_rejects():
    probs = np.zeros((3, 4, 4), np.float32)
    probs[0] = 0.2
    probs[1, :2] = 0.7  # class 1 wins the top half
    probs[2, 2:] = 0.7  # class 2 the bottom half
    both = gate_labels(probs, np.array([0.9, 0.8]), 0.5)
    assert (both[:2] == 1).all() and (both[2:] == 2).all()
    only_1 = gate_labels(probs, np.array([0.9, 0.1]), 0.5)
    assert (only_1[:2] == 1).all() and (only_1[2:] == 0).all()
    assert not gate_labels(probs, np.array([0.3, 0.1]), 0.5).any()  # called OK: an empty mask


def test_teacher_targets_follow_the_augmentation(tmp_path: Path):
    """The teacher's map gets the image's flips, so KD targets stay aligned with the image and the pseudo-mask."""
    from wsss.cam.io import cam_path, write_cam
    from wsss.config import AugmentConfig
    from wsss.data.transforms import Augment

    rows, masks, truth = make_data(tmp_path, n_defect=2, n_ok=1)
    cam_dir = tmp_path / "cam"
    for r in rows:
        write_cam(cam_path(cam_dir, r.id), truth[r.id][None].astype(np.float32))
    scores = {r.id: np.array([0.9 if r.labels else 0.1], np.float32) for r in rows}
    teacher = Teacher(cam_dir, scores, bg_prior=0.4, kd_weight=1.0, temperature=2.0, score_weight=1.0)
    aug = Augment(AugmentConfig(brightness=0.0, contrast=0.0, gamma=0.0, blur_prob=0.0))
    ds = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), 1, aug, seed=5, teacher=teacher)
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["teacher"].shape == (2, SIZE, SIZE)
        assert torch.allclose(item["teacher"].sum(0), torch.ones(SIZE, SIZE), atol=1e-5)
        defect = item["teacher"][1] > 0.5  # the CAM is 1 exactly on the rectangle
        assert torch.equal(defect, item["mask"] == 1) and item["teacher_score"].tolist() == pytest.approx([0.9])


def test_distilled_segmenter_beats_its_initial_validation_seg_miou(tmp_path: Path):
    """Trained on pseudo-masks (with a teacher), the validation Seg_mIoU against pseudo-masks rises from its start."""
    from wsss.cam.io import cam_path, write_cam

    rows, masks, truth = make_data(tmp_path, n_defect=12, n_ok=6, seed=2)
    val = [dataclasses.replace(r, split="val") for r in rows[::3]]
    train = [r for i, r in enumerate(rows) if i % 3]
    for r in rows:
        write_cam(cam_path(tmp_path / "cam", r.id), 0.8 * truth[r.id][None].astype(np.float32))
    scores = {r.id: np.array([0.9 if r.labels else 0.1], np.float32) for r in rows}
    teacher = Teacher(tmp_path / "cam", scores, bg_prior=0.4, kd_weight=0.5, temperature=2.0, score_weight=0.5)
    shared = {f.name: getattr(rcfg(epochs=15), f.name) for f in dataclasses.fields(SegTrainConfig)}
    cfg = SegmenterConfig(**shared)
    trainer = SegmenterTrainer(cfg, SegmenterData(train, masks, ["defect"], 1, teacher=teacher, val_rows=val), tmp_path / "out", device="cpu", echo=lambda *_: None, patience=100, section="segmenter")  # fmt: skip
    initial = trainer.validate()["val_seg_miou"]
    summary = trainer.fit()
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows_csv = list(csv.DictReader(f))
    best = max(float(r["val_seg_miou"]) for r in rows_csv)
    assert best > max(initial, 0.0) + 0.2, (initial, best)
    assert float(rows_csv[0]["loss_kd"]) > 0 and float(rows_csv[0]["loss_score_kd"]) > 0
    assert float(rows_csv[summary["best_epoch"]]["val_seg_miou"]) == best  # the saved weights are the best epoch's
    _, meta = load_segmenter(tmp_path / "out")
    assert meta["score_threshold"] == 0.5


def test_train_segmenter_stage_in_the_full_pipeline(full_run):
    run_dir, cfg = full_run
    out = run_dir / "train-segmenter"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and set(manifest["inputs"]) == {"prepare", "cam", "retrain"}
    assert not (out / "checkpoints").exists()
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_kd", "loss_score_kd", "val_seg_miou"} <= set(header)
    with open(out / "scores.csv") as f:
        scores = {r["id"]: float(r["score"]) for r in csv.DictReader(f)}
    rows = read_train_index(run_dir / "prepare" / "index.csv")
    assert set(scores) == {r.id for r in rows}
    import cv2

    for r in rows:
        mask = cv2.imread(str(out / "masks" / f"{r.id}.png"), cv2.IMREAD_UNCHANGED)
        prob = cv2.imread(str(out / "probs" / f"{r.id}.png"), cv2.IMREAD_UNCHANGED)  # 16-bit P(defect), ungated
        assert mask.shape == prob.shape == read_image(r.path).shape[:2] and set(np.unique(mask)) <= {0, 1}
        assert prob.dtype == np.uint16 and not (mask.astype(bool) & (prob < PROB_HALF)).any()
        if scores[r.id] < cfg.segmenter.score_threshold:
            assert not mask.any(), r.id  # gated: an image the head calls OK has an empty mask
    assert manifest["outputs"]["probs"] == "probs"
    # the pipeline's evaluate stage finds the probability maps beside the masks: pixel AP and AUROC in its report
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert (
        Path(report["probs_dir"]).parts[-2:] == ("train-segmenter", "probs")
        and 0 <= report["pixel_ap"] <= 1
        and 0 <= report["pixel_auroc"] <= 1
    )


def test_segmenter_masks_option_must_name_a_mask_writing_stage():
    from wsss.config import load_config
    from wsss.stages.train_segmenter import masks_input

    assert masks_input(load_config(None, [])) == "retrain"
    assert masks_input(load_config(None, ["run.pipeline=cam-crf"])) == "pseudo-labels"
    assert masks_input(load_config(None, ["segmenter.masks=pseudo-labels"])) == "pseudo-labels"
    with pytest.raises(ConfigError, match="segmenter.masks.*'cam' is not a stage that writes masks"):
        masks_input(load_config(None, ["segmenter.masks=cam"]))


def test_train_segmenter_stage_with_injected_defects(full_run, tmp_path: Path):
    """`segmenter.inject.enabled=true` on the tiny run: pastes from the retrain masks, draws procedural defects, and
    the stage finishes (in a copy of the run, so the shared one is untouched)."""
    import shutil

    from conftest import FAST

    from wsss.config import load_config
    from wsss.runs import Run

    run_dir, _ = full_run
    for stage in ("prepare", "cam", "pseudo-labels", "retrain"):
        shutil.copytree(run_dir / stage, tmp_path / stage)
    cfg = load_config(None, [*FAST, "segmenter.inject.enabled=true", "segmenter.epochs=1"])
    lines: list[str] = []
    out = Run(tmp_path, cfg, echo=lines.append).run_stage("train-segmenter")
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    assert (out / "segmenter.safetensors").is_file() and len(list((out / "masks").glob("*.png"))) == 24


def test_round_mask_follows_the_image_label():
    """Self-training masks: OK images are background (confidence 1); a defective image takes the ungated argmax over
    background and its labelled classes only."""
    from wsss.stages.train_segmenter import round_mask

    probs = np.zeros((3, 4, 6), np.float32)
    probs[0] = 0.6
    probs[1, :, :2], probs[0, :, :2] = 0.9, 0.1  # class 1 wins on the left two columns
    probs[2, :, 4:], probs[0, :, 4:] = 0.7, 0.3  # class 2 wins on the right two columns
    ok, conf = round_mask(probs, [])
    assert ok.dtype == np.uint8 and not ok.any() and conf == 1.0
    only1, conf1 = round_mask(probs, [1])
    assert (only1[:, :2] == 1).all() and not only1[:, 2:].any()  # class 2 is not in the label: background there
    assert 0.6 < conf1 < 0.9  # the ring around the defect counts too
    both, _ = round_mask(probs, [2, 1])
    assert (both[:, :2] == 1).all() and (both[:, 4:] == 2).all() and not both[:, 2:4].any()
    weak = probs.copy()
    weak[1, :, :2] = 0.05  # the previous round saw nothing: the mask is empty, rated by its background
    empty, conf_empty = round_mask(weak, [1])
    assert not empty.any() and conf_empty == pytest.approx(float(weak[0].mean()))


def test_train_segmenter_self_training_rounds_resume_after_a_kill(
    full_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """`segmenter.rounds=2`: round 1 learns from the retrain masks, round 2 from round 1's (OK images all background),
    with paste sources from round 1's confidence table; killed in round 2, the stage resumes there without training
    round 1 again, and leaves no round folder behind."""
    import shutil

    import cv2
    from conftest import FAST

    from wsss.config import load_config
    from wsss.runs import Run

    run_dir, _ = full_run
    for stage in ("prepare", "cam", "pseudo-labels", "retrain"):
        shutil.copytree(run_dir / stage, tmp_path / stage)
    cfg = load_config(
        None,
        [
            *FAST,
            "segmenter.rounds=2",
            "segmenter.epochs=1",
            "segmenter.inject.enabled=true",
            "segmenter.inject.min_confidence=0",
        ],
    )
    fits: list[Path] = []
    original = SegmenterTrainer.fit

    def fit(self):
        fits.append(self.out)
        if len(fits) == 2:
            rows = read_train_index(tmp_path / "prepare" / "index.csv")
            round1 = self.train_set.masks_dir
            assert round1.parts[-2:] == ("round1", "masks")
            for r in rows:
                if r.split in ("train", "val"):
                    mask = cv2.imread(str(round1 / f"{r.id}.png"), cv2.IMREAD_UNCHANGED)
                    assert mask.shape == read_image(r.path).shape[:2]
                    assert r.defective or not mask.any(), r.id
            with open(round1.parent / "confidence.csv") as f:
                assert {c["id"] for c in csv.DictReader(f)} == {r.id for r in rows if r.split != "test"}
            raise KeyboardInterrupt  # killed in round 2
        return original(self)

    monkeypatch.setattr(SegmenterTrainer, "fit", fit)
    with pytest.raises(KeyboardInterrupt):
        Run(tmp_path, cfg, echo=lambda *_: None).run_stage("train-segmenter")
    monkeypatch.setattr(SegmenterTrainer, "fit", lambda self: (fits.append(self.out), original(self))[1])
    capsys.readouterr()
    out = Run(tmp_path, cfg, echo=lambda *_: None).run_stage("train-segmenter")
    log = capsys.readouterr().out
    assert "round 1/2" not in log and "round 2/2: training on" in log
    assert len(fits) == 3 and fits[2] == fits[1]  # round 1 was not trained again; round 2 ran into the stage folder
    assert fits[0].parts[-2:] == ("round1", "model")
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    assert not list(out.glob("round*")) and len(list((out / "masks").glob("*.png"))) == 24


def test_validation_scores_the_reviewed_training_images_by_their_human_masks(tmp_path: Path):
    """With reviewed masks the validation set also holds those training images, with the person's masks: a
    fine-tuning that learns them is not judged by the validation images' pseudo-masks alone."""
    rows, masks, _ = make_data(tmp_path, n_defect=6, n_ok=3, seed=4)
    val = [dataclasses.replace(r, split="val") for r in rows[::3]]
    train = [r for i, r in enumerate(rows) if i % 3]
    human = tmp_path / "reviewed" / "masks"
    human.mkdir(parents=True)
    reviewed = next(r for r in train if r.labels)
    drawn = np.zeros((SIZE, SIZE), np.uint8)
    drawn[2:6, 2:6] = 1
    cv2.imwrite(str(human / f"{reviewed.id}.png"), drawn)
    cfg = rcfg(epochs=1)
    plain = SegmenterTrainer(
        cfg, SegmenterData(train, masks, ["defect"], 1, val_rows=val), tmp_path / "a", device="cpu"
    )
    assert [r.id for r in plain.val_set.rows] == [r.id for r in val]
    with_human = SegmenterTrainer(
        cfg, SegmenterData(train, masks, ["defect"], 1, val_rows=val, reviewed_dir=human), tmp_path / "b", device="cpu"
    )
    assert [r.id for r in with_human.val_set.rows] == [r.id for r in val] + [reviewed.id]
    assert np.array_equal(with_human.val_set[len(val)]["mask"].numpy(), drawn)


def test_epochs_for_steps_trains_a_small_set_as_many_steps_as_asked():
    assert epochs_for_steps(10, 9, 0) == 10  # off
    assert epochs_for_steps(10, 9, 250) == 28  # ceil(250 / 9)
    assert epochs_for_steps(10, 30, 250) == 10  # a large set already makes them
    assert epochs_for_steps(10, 0, 250) == 10


def test_min_steps_stretches_a_small_sets_epochs_and_patience(tmp_path: Path):
    """With min_steps over what the epochs make, the trainer runs more epochs (and a patience stretched alike), says
    so, and records the epochs it ran the schedule for; the cosine schedule reaches zero at the last of them."""
    rows, masks, _ = make_data(tmp_path, n_defect=4, n_ok=2, seed=5)
    val = [dataclasses.replace(r, split="val") for r in rows[:2]]
    train = rows[2:]  # 4 images at batch 2: 2 steps an epoch
    log: list[str] = []
    cfg = dataclasses.replace(rcfg(epochs=2), batch_size=2, min_steps=7)
    data = SegmenterData(train, masks, ["defect"], 1, val_rows=val)
    trainer = SegmenterTrainer(cfg, data, tmp_path / "a", device="cpu", echo=log.append, patience=3)
    assert len(trainer.loader(0)) == 2 and trainer.epochs == 4 and trainer.patience == 6
    assert any("under min_steps 7: training 4 epochs, patience 6" in line for line in log)
    summary = trainer.fit()
    assert summary["epochs_run"] == 4
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    _, meta = load_segmenter(tmp_path / "a")
    assert meta["epochs"] == 4
    plain = SegmenterTrainer(dataclasses.replace(cfg, min_steps=0), data, tmp_path / "b", device="cpu", patience=3)
    assert plain.epochs == 2 and plain.patience == 3


def test_a_review_round_without_a_reviewed_mask_keeps_its_start_untrained(tmp_path: Path):
    """A fine-tuning with ``segmenter.reviewed`` set (a review round) is judged with the reviewed images' human masks;
    with none among its images, only pseudo-masks would judge a fine-tuning on pseudo-masks, so the weights it
    starts from are kept without training. Without ``reviewed`` a fine-tuning trains and validates as usual."""
    rows, masks, _ = make_data(tmp_path, n_defect=8, n_ok=4, seed=3)
    val = [dataclasses.replace(r, split="val") for r in rows[::2]]
    train = [r for i, r in enumerate(rows) if i % 2]
    shared = {f.name: getattr(rcfg(epochs=2), f.name) for f in dataclasses.fields(SegTrainConfig)}
    data = SegmenterData(train, masks, ["defect"], 1, val_rows=val)
    quiet = {"device": "cpu", "echo": lambda *_: None, "section": "segmenter"}
    SegmenterTrainer(SegmenterConfig(**shared), data, tmp_path / "start", **quiet).fit()
    tuned = SegmenterConfig(**shared | {"init_from": str(tmp_path / "start")})
    (tmp_path / "empty" / "masks").mkdir(parents=True)
    empty = dataclasses.replace(data, reviewed_dir=tmp_path / "empty" / "masks")
    lines: list[str] = []
    summary = SegmenterTrainer(tuned, empty, tmp_path / "control", **quiet | {"echo": lines.append}).fit()
    assert summary["epochs_run"] == 0 and summary["best_epoch"] == -1
    assert any("no reviewed mask to judge" in ln for ln in lines)
    start, control = (load_segmenter(tmp_path / d)[0].state_dict() for d in ("start", "control"))
    assert all(torch.equal(start[k], control[k]) for k in start)
    assert json.loads((tmp_path / "control" / "segmenter.json").read_text())["kept_epoch"] == -1
    assert (tmp_path / "control" / "metrics.csv").read_text().startswith("epoch,")
    assert SegmenterTrainer(tuned, data, tmp_path / "plain", **quiet).fit()["epochs_run"] == 2
