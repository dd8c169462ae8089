"""Exports: the segmenter as ONNX (:mod:`wsss.export.onnx`), masks drawn over images (:mod:`wsss.export.overlay`)."""
