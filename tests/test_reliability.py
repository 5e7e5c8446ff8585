"""Killed runs resume exactly, non-finite values stop the run, checkpoints load safely."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.errors import CheckpointError, NonFiniteError
from tests.test_learning import train

REPO = Path(__file__).resolve().parent.parent
# 80 updates of 256 steps, a checkpoint after every update
RUN = ["algo=ppo_clip", "env=cartpole", "total_timesteps=20480", "checkpoint_interval_s=0", "eval_episodes=3"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "algos", *args]


def checkpoint_meta(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["meta"]


def start_and_stop_at_random_update(run_dir: Path, sig: signal.Signals) -> tuple[int, subprocess.Popen, str]:
    stop_after = random.Random().randint(3, 50)
    proc = subprocess.Popen(
        cli(*RUN, f"hydra.run.dir={run_dir}"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run_dir / "checkpoint.pt").exists() and checkpoint_meta(run_dir)["next_update"] >= stop_after:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be stopped"
    return stop_after, proc, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(cli(*RUN, f"hydra.run.dir={run_dir}"), cwd=REPO, check=True, capture_output=True)
    return run_dir


def assert_same_final_run(run_dir: Path, reference: Path) -> None:
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert ours["total_env_steps"] == theirs["total_env_steps"]
    assert ours["eval"]["returns"] == theirs["eval"]["returns"]
    params = [torch.load(d / "checkpoint.pt", weights_only=True)["agent"] for d in (run_dir, reference)]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])


def test_sigkill_at_a_random_update_then_resume_matches_the_uninterrupted_run(tmp_path, uninterrupted):
    stop_after, proc, _ = start_and_stop_at_random_update(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(cli(f"resume={tmp_path}"), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr
    assert_same_final_run(tmp_path, uninterrupted)
    # TensorBoard: one SPS point per update, none duplicated or missing across the kill
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    steps = [e.step for e in events.Scalars("charts/SPS")]
    assert steps == [256 * (k + 1) for k in range(80)]


def test_sigterm_checkpoints_before_exit_then_resume_matches(tmp_path, uninterrupted):
    stop_after, proc, stderr = start_and_stop_at_random_update(tmp_path, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM received: stopped after update" in stderr
    stopped_at = checkpoint_meta(tmp_path)["next_update"]
    assert stop_after <= stopped_at < 80
    resumed = subprocess.run(cli(*RUN, f"hydra.run.dir={tmp_path}"), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr  # reusing the run folder resumes it
    assert_same_final_run(tmp_path, uninterrupted)


def test_resume_with_other_settings_is_refused(tmp_path, uninterrupted):
    out = subprocess.run(
        cli(*RUN, "algo.learning_rate=0.1", f"hydra.run.dir={uninterrupted}"), cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "holds a run started with other settings: algo.learning_rate (saved 0.001, given 0.1)" in out.stderr


def test_resume_of_a_folder_without_checkpoint_is_refused(tmp_path):
    out = subprocess.run(cli(f"resume={tmp_path}"), cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "no checkpoint.pt in that folder" in out.stderr


def test_nan_reward_stops_the_run_and_keeps_the_last_good_checkpoint(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "algo=ppo_clip",
        "env=cartpole",
        "env.id=NaNRewardCartPole-v0",
        "total_timesteps=20480",
        "checkpoint_interval_s=0",
    )
    # 32 steps per env per update: each env's 601st step, the first NaN, falls in update 18 (steps 577-608)
    with pytest.raises(NonFiniteError, match=r"non-finite reward \(nan\) in update 18 "):
        train(cfg, tmp_path)
    meta = checkpoint_meta(tmp_path)
    assert meta["next_update"] == 18 and meta["global_step"] == 18 * 256


def test_nan_reward_from_the_command_line_exits_non_zero(tmp_path):
    code = (
        "import sys, tests.conftest; from algos.cli import main; "
        f"sys.argv = ['algos', 'env.id=NaNRewardCartPole-v0', 'hydra.run.dir={tmp_path}']; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 3
    assert "tokengym: stopped: the environment returned a non-finite reward (nan)" in out.stderr


def test_corrupt_checkpoint_is_refused_with_a_clear_message(compose_cfg, tmp_path):
    cfg = compose_cfg(*RUN[:3], "total_timesteps=512")
    train(cfg, tmp_path)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        train(cfg, tmp_path)


class RunsCode:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


MARKER = Path("/tmp/tokengym-pickle-ran-code")


# The file is written with pickle protocol 4 on purpose (what an attacker would write); torch warns that its
# weights-only loader was made for protocol 2 before refusing the file, which is what this test checks.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")
def test_a_pickle_that_would_run_code_is_not_run(compose_cfg, tmp_path):
    MARKER.unlink(missing_ok=True)
    with open(tmp_path / "checkpoint.pt", "wb") as f:
        pickle.dump({"meta": RunsCode()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        train(compose_cfg(*RUN[:3], "total_timesteps=512"), tmp_path)
    assert not MARKER.exists()


def test_checkpoint_of_another_algorithm_or_network_is_refused(compose_cfg, tmp_path):
    train(compose_cfg(*RUN[:3], "total_timesteps=512"), tmp_path)
    with pytest.raises(CheckpointError, match="is a checkpoint of ppo_clip on CartPole-v1, but this run is trpo"):
        train(compose_cfg("algo=trpo", "env=cartpole", "total_timesteps=8192"), tmp_path)
    shape_message = r"another shape \(actor_torso.0.bias: checkpoint \(64,\), this agent \(32,\)"
    with pytest.raises(CheckpointError, match=shape_message):
        train(compose_cfg(*RUN[:3], "total_timesteps=512", "net.hidden_sizes=[32,32]"), tmp_path)


@pytest.mark.parametrize("algo", ["pg", "a2c", "trpo", "ppo_penalty"])
def test_every_algorithm_resumes_to_the_same_result(algo, compose_cfg, tmp_path):
    """Stop after half the updates (a shorter budget, same schedule-free settings), resume, compare."""
    budget = {"pg": 16000, "a2c": 4000, "trpo": 16384, "ppo_penalty": 8192}[algo]
    overrides = [f"algo={algo}", "env=cartpole", "checkpoint_interval_s=0", "eval_episodes=3"]
    if algo == "ppo_penalty":
        overrides.append("algo.anneal_lr=false")  # the lr schedule depends on the total budget
    reference = train(compose_cfg(*overrides, f"total_timesteps={budget}"), tmp_path / "ref")
    train(compose_cfg(*overrides, f"total_timesteps={budget // 2}"), tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    resumed = train(compose_cfg(*overrides, f"total_timesteps={budget}"), tmp_path / "run")
    assert resumed["eval"]["returns"] == reference["eval"]["returns"]
    params = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["agent"] for d in ("ref", "run")]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])


def test_a_continuous_control_run_resumes_from_a_weights_only_checkpoint(compose_cfg, tmp_path):
    """Pendulum's rewards are numpy float64s, which the episode statistics keep: the checkpoint must still hold plain
    data only, so that the weights-only loader reads it back."""
    overrides = ["algo=ppo_clip", "env=pendulum", "algo.num_steps=128", "eval_episodes=1", "checkpoint_interval_s=0"]
    reference = train(compose_cfg(*overrides, "total_timesteps=1024"), tmp_path / "ref")
    train(compose_cfg(*overrides, "total_timesteps=512"), tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    resumed = train(compose_cfg(*overrides, "total_timesteps=1024"), tmp_path / "run")
    assert resumed["eval"]["returns"] == reference["eval"]["returns"]
