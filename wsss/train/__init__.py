"""Training: samplers, losses and loops for the classifier and the segmenter."""
