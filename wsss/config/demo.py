"""The demo's recipe as settings over the defaults (`wsss demo`)."""

from __future__ import annotations

# `wsss demo`'s recipe: the default recipe (what `wsss init` writes, wsss/init_recipe.py; configs/ksdd.yaml) on the
# built-in set of texture photographs with drawn defects, with sizes and epochs cut for a 5-minute run on 2 CPU cores.
# configs/demo.yaml is the same recipe as a file (tests/test_config.py keeps the two equal).
DEMO_SETTINGS: tuple[str, ...] = (
    "run.name=demo",
    # real surface photographs (scikit-image's brick, gravel and grass), not the procedural textures of the tests:
    # ImageNet features describe photographs, so the pretrained default applies as it would on a user's parts
    "dataset.synthetic.textures=[brick, gravel, grass]",
    # 160 images, not the defaults' 80: at 80 the classifier gives half the defective images an empty CAM (test
    # mIoU_def of pseudo-labels / retrain at commit 50cbf46, procedural set: 13.2% / 16.6% at 80, 41.2% / 41.1% at 160)
    "dataset.synthetic.n_ok=96",
    "dataset.synthetic.n_defect=64",
    # the default recipe as `wsss init` writes it: EfficientNet-Lite0 cut after stride 16, stem to stride 8 frozen
    "classifier.backbone.stages=4",
    "classifier.backbone.freeze=3",
    "classifier.gcm.enabled=false",
    "classifier.warmup_epochs=1",
    "cam.scales=[1.0]",
    "retrain.backbone.freeze=3",
    "segmenter.backbone.freeze=3",
    # init's batches and classifier epochs; retrain and segmenter epochs halved from init's 8 and 10 for the time
    # budget. Measured on 2 cores shared with a benchmark, seed 0: classifier 414 s (6 epochs), cam 147 s, retrain
    # 474 s (4), segmenter 720 s (6); test mIoU_def 31.7% / 33.7% / 9.3%: over the budget and under target
    "classifier.batch_size=8",
    "classifier.epochs=6",
    "classifier.patience=3",
    "retrain.batch_size=8",
    "retrain.epochs=4",
    "segmenter.batch_size=8",
    "segmenter.epochs=6",
    "segmenter.patience=3",
)
