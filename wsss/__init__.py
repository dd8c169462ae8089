"""wsss: weakly supervised surface-defect segmentation from image-level labels."""

__version__ = "0.1.0"
