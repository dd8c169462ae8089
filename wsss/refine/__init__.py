"""Refinement of extended CAMs into pseudo-masks: dense CRF (:mod:`.crf`) and the labelling rule (:mod:`.pseudo`).

The rule lives here, not in a stage, because both the `pseudo-labels` stage and the later `retrain` stage apply it.
"""
