"""tokengym's on-policy algorithms, one file each; shared plumbing in algos.common."""
