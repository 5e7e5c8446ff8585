"""Data-parallel training on the CPU (gloo), as torchrun starts it: a 2-rank job computes what one process computes
on the ranks' batches joined, a killed 2-rank job resumes to identical parameters, one rank is a plain run, and bad
input stops every rank with the fix named."""

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from algos.rollout import Batch, EpisodeBookkeeping, Rollout
from core.errors import NonFiniteError
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parent.parent
CARTPOLE = ["env=cartpole", "env.num_envs=8", "eval_episodes=2", "progress=false"]


def torchrun(ranks: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **env}, check=False
    )


def parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["agent"]


FIELDS = ("obs", "actions", "logprobs", "values", "advantages", "returns")


def replay(algo: str, overrides: list[str], captures: list[dict], run_dir: Path, monkeypatch) -> dict:
    """One process runs `algo`'s own update on the captured ranks' batches joined (rank order), each minibatch the
    union of the ranks' minibatches of that step; returns its parameters."""
    batches = [c["batches"][0] for c in captures]
    joined = Batch(
        **{k: torch.cat([b[k] for b in batches]) for k in FIELDS}, num_envs=sum(b["num_envs"] for b in batches)
    )
    size = len(batches[0]["advantages"])
    minibatches = [
        torch.cat([torch.arange(size)[idx] + r * size for r, idx in enumerate(step)])
        for step in zip(*(c["minibatches"] for c in captures))
    ]

    def next_minibatches(self, num_minibatches, by="sample"):
        for _ in range(num_minibatches):
            yield minibatches.pop(0)

    monkeypatch.setattr(Rollout, "collect", lambda self, gae_lambda: joined)
    monkeypatch.setattr(Batch, "minibatch_indices", next_minibatches)
    importlib.import_module(f"algos.{algo}").train(compose_config(f"algo={algo}", *overrides), run_dir)
    return parameters(run_dir)


@pytest.mark.parametrize(
    "algo, settings",
    [
        ("ppo_clip", ["algo.num_steps=16", "algo.num_minibatches=2", "algo.update_epochs=2"]),
        ("a2c", ["algo.num_steps=16", "algo.norm_adv=true"]),
    ],
)
def test_two_ranks_update_as_one_process_on_their_batches_joined(algo, settings, tmp_path, monkeypatch):
    overrides = [*CARTPOLE, *settings, "total_timesteps=128"]  # one update: 8 environments x 16 steps
    ddp_dir, capture_dir = tmp_path / "ddp", tmp_path / "capture"
    capture_dir.mkdir()
    done = run(
        torchrun(2, "tests/distributed_capture.py", f"algo={algo}", *overrides, f"hydra.run.dir={ddp_dir}"),
        CAPTURE_DIR=str(capture_dir),
        PYTHONPATH=str(REPO),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    captures = [torch.load(capture_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert not torch.equal(captures[0]["batches"][0]["obs"], captures[1]["batches"][0]["obs"])  # own environments
    joined = replay(algo, overrides, captures, tmp_path / "joined", monkeypatch)
    rank0_alone = replay(algo, overrides, captures[:1], tmp_path / "rank0", monkeypatch)

    ours = parameters(ddp_dir)
    for name in ours:
        torch.testing.assert_close(ours[name], joined[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(ours[k], rank0_alone[k], rtol=1e-3, atol=1e-5) for k in ours)  # both ranks count
    summary = json.loads((ddp_dir / "summary.json").read_text())
    assert summary["distributed"] == {"ranks": 2, "backend": "cpu:gloo", "global_batch": 128, "per_rank_batch": 64}


RESUMABLE = [
    "algo=ppo_clip",
    *CARTPOLE,
    "algo.num_steps=16",
    "total_timesteps=5120",  # 20 updates
    "checkpoint_interval_s=0",
]


def test_one_rank_under_torchrun_is_exactly_a_plain_run(tmp_path):
    settings = [*RESUMABLE[:-2], "total_timesteps=1280"]
    plain = run([sys.executable, "-m", "algos", *settings, f"hydra.run.dir={tmp_path / 'plain'}"])
    one_rank = run(torchrun(1, "-m", "algos", *settings, f"hydra.run.dir={tmp_path / 'torchrun'}"))
    assert plain.returncode == one_rank.returncode == 0, one_rank.stderr[-3000:]
    ours, theirs = parameters(tmp_path / "plain"), parameters(tmp_path / "torchrun")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_two_rank_job_stopped_by_sigterm_resumes_to_the_uninterrupted_parameters(tmp_path):
    reference = run(torchrun(2, "-m", "algos", *RESUMABLE, f"hydra.run.dir={tmp_path / 'reference'}"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    stopped = tmp_path / "stopped"
    job = subprocess.Popen(
        torchrun(2, "-m", "algos", *RESUMABLE, f"hydra.run.dir={stopped}"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not ((stopped / "checkpoint.pt").exists() and _next_update(stopped) >= 5):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0 and not (stopped / "summary.json").exists(), "the job ended before it was stopped"
    assert "SIGTERM received: stopped after update" in stderr
    assert _next_update(stopped) < 20

    resumed = run(torchrun(2, "-m", "algos", f"resume={stopped}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = parameters(stopped), parameters(tmp_path / "reference")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (stopped, tmp_path / "reference")]
    assert summaries[0]["eval"]["returns"] == summaries[1]["eval"]["returns"]

    other_ranks = run([sys.executable, "-m", "algos", f"resume={stopped}"])
    assert other_ranks.returncode == 2
    assert "written by a job of 2 ranks, and this one has 1" in other_ranks.stderr
    assert "torchrun --nproc_per_node=2" in other_ranks.stderr


def _next_update(run_dir: Path) -> int:
    try:
        return torch.load(run_dir / "checkpoint.pt", weights_only=True)["meta"]["next_update"]
    except (RuntimeError, EOFError, OSError):  # the checkpoint is being replaced
        return 0


def test_environments_that_do_not_split_over_the_ranks_are_refused(tmp_path):
    refused = run(torchrun(2, "-m", "algos", "algo=a2c", *CARTPOLE, "env.num_envs=7", f"hydra.run.dir={tmp_path}"))
    assert refused.returncode != 0 and re.search(r"exitcode\s*:\s*2", refused.stderr)  # every rank's exit: bad input
    assert "env.num_envs=7 environments cannot be split evenly over 2 ranks" in refused.stderr
    assert "set env.num_envs to a multiple of 2, e.g. 6" in refused.stderr
    assert not (tmp_path / "checkpoint.pt").exists()


def test_the_tasks_of_a_submitit_job_are_the_ranks_of_one_run(tmp_path):
    """hydra/launcher=slurm with tasks_per_node > 1 runs each task as a rank; submitit's local executor is the
    same path without a cluster (its job environment stands in for SLURM's)."""
    done = run(
        [sys.executable, "-m", "algos", "-m", "algo=a2c", *CARTPOLE, "total_timesteps=1280", f"run_root={tmp_path}"]
        + ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(next((tmp_path / "sweep").glob("*/summary.json")).read_text())
    assert summary["distributed"]["ranks"] == 2 and summary["total_env_steps"] == 1280


def _check_rewards_on_rank(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    rewards = np.array([1.0, np.nan if rank == 1 else 2.0])
    try:
        EpisodeBookkeeping(2, kl=None)._check_finite(rewards, torch.zeros(2, 3))
        results.put((rank, "no error"))
    except NonFiniteError as err:
        results.put((rank, str(err)))
    finally:
        dist.destroy_process_group()


def test_a_non_finite_reward_on_one_rank_stops_every_rank(tmp_path):
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_check_rewards_on_rank, args=(rank, str(tmp_path / "init"), results)) for rank in (0, 1)
    ]
    for process in processes:
        process.start()
    messages = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert "returned a non-finite reward (nan)" in messages[1]
    assert "another rank's environment returned a non-finite reward or observation" in messages[0]
