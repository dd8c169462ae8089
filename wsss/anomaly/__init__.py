"""Anomaly priors from defect-free images (METHOD.md section 7): PatchCore-style maps, their fusion with the CAM,
and anomaly-guided pretraining."""
