"""`torchrun ... tests/distributed_capture.py <overrides>`: `python -m algos <overrides>`, with every rank's rollout
batches and minibatch index sets saved to $CAPTURE_DIR/rank<r>.pt, so that a test can replay the ranks' batches,
joined, in one process (tests/test_distributed.py)."""

import os
import sys
from pathlib import Path

import torch

from algos.rollout import Batch, Rollout

captured: dict[str, list] = {"batches": [], "minibatches": []}
collect, minibatch_indices = Rollout.collect, Batch.minibatch_indices


def recording_collect(self, gae_lambda):
    batch = collect(self, gae_lambda)
    captured["batches"].append(dict(vars(batch)))
    return batch


def recording_minibatch_indices(self, num_minibatches, by="sample"):
    for idx in minibatch_indices(self, num_minibatches, by):
        captured["minibatches"].append(idx)
        yield idx


def save() -> None:
    torch.save(captured, Path(os.environ["CAPTURE_DIR"]) / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    from algos.cli import main

    Rollout.collect = recording_collect  # type: ignore[method-assign]
    Batch.minibatch_indices = recording_minibatch_indices  # type: ignore[method-assign]
    sys.argv[0] = "algos"
    try:
        main()
    finally:
        save()
