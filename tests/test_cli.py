"""The command line as users run it: run folders, multirun, CleanRL-style files, bad input, repeatability."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_learning import train

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, module: str = "algos") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_single_run_writes_config_events_checkpoint_and_summary(tmp_path):
    out = run_cli("algo=ppo_clip", "env=cartpole", "total_timesteps=2048", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert f"run folder: {tmp_path}" in out.stderr
    assert (tmp_path / "config.yaml").read_text().startswith("seed: 1")
    assert list(tmp_path.glob("events.out.tfevents.*"))
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    meta = checkpoint["meta"]
    assert (meta["algo"], meta["env"], meta["global_step"], meta["next_update"]) == ("ppo_clip", "CartPole-v1", 2048, 8)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {
        "algo",
        "env",
        "seed",
        "total_env_steps",
        "wall_clock_s",
        "steps_per_second",
        "eval",
        "versions",
        "git_commit",
    } <= summary.keys()
    assert summary["eval"]["episodes"] == 10 and summary["eval"]["policy"].startswith("deterministic")
    assert {"python", "torch", "gymnasium", "ale-py", "transformers"} <= summary["versions"].keys()


def test_algorithm_file_runs_on_its_own(tmp_path):
    out = run_cli(
        "env=acrobot", "total_timesteps=1024", "eval_episodes=1", f"hydra.run.dir={tmp_path}", module="algos.a2c"
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["algo"], summary["env"]) == ("a2c", "Acrobot-v1")


def test_multirun_makes_one_folder_per_job(tmp_path):
    out = run_cli(
        "-m",
        "algo=pg,a2c",
        "env=cartpole",
        "seed=0,1",
        "total_timesteps=4000",
        "eval_episodes=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    assert sorted((s["algo"], s["seed"]) for s in summaries) == [("a2c", 0), ("a2c", 1), ("pg", 0), ("pg", 1)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["algo=dqn"], "Available options in 'algo'"),
        (["env=cartpol"], "Available options in 'env'"),
        (["algo.clip_range=0.1"], "algo.clip_range is not a hyperparameter of ppo_clip; valid: name, learning_rate"),
        (["algo=pg", "algo.clip_coef=0.1"], "algo.clip_coef is not a hyperparameter of pg"),
        (["algo.learning_rate=-3e-4"], "algo.learning_rate=-0.0003 must be > 0"),
        (["algo.learning_rate=fast"], "bad value for algo.learning_rate"),
        (["algo.num_minibatches=3"], "cannot be split into algo.num_minibatches=3 equal minibatches; choose a divisor"),
        (["algo.gamma=1.5"], "algo.gamma=1.5 must lie in [0, 1]"),
        (["env.id=CartPole-v9"], "close matches: CartPole-v1"),
        (["env.num_envs=0"], "env.num_envs=0 must be > 0"),
        (["+env.frame_skip=4"], "unknown setting env.frame_skip for envs.classic; valid: kind, id, num_envs"),
        (["seed=1.5"], "bad value for seed: Value '1.5' of type 'float' could not be converted to Integer"),
        (["net.hidden_sizes=abc"], "bad value for net.hidden_sizes"),
        (["net.activation=gelu"], "net.activation='gelu'; valid: tanh, relu"),
        (["algo.learning_rate=[1,"], "no viable alternative at input '[1,'"),  # malformed override: Hydra's parser
    ],
)
def test_bad_input_stops_at_start_with_a_clear_message(args, message, tmp_path):
    out = run_cli(*args, "total_timesteps=4096", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("algo", ["ppo_clip", "trpo"])
def test_same_seed_repeats_exactly(algo, compose_cfg, tmp_path):
    cfg = compose_cfg(f"algo={algo}", "env=cartpole", "total_timesteps=4096", "algo.num_steps=256", "eval_episodes=3")
    first, second = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    assert first["eval"]["returns"] == second["eval"]["returns"]
    params = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["agent"] for d in "ab"]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])


def test_a_job_with_bad_input_fails_alone_and_the_sweep_goes_on(tmp_path):
    out = run_cli(
        "-m", "algo=pg,a2c", "env=cartpole", "total_timesteps=2048", "eval_episodes=1", f"hydra.sweep.dir={tmp_path}"
    )
    assert out.returncode != 0
    assert "failed: ConfigError: total_timesteps=2048 is less than one batch (4000 samples)" in out.stderr
    assert [p.parent.name for p in tmp_path.glob("*/summary.json")] == ["1-a2c-cartpole-seed1"]


def test_each_algorithm_file_is_registered_and_its_defaults_are_the_dataclass_ones(compose_cfg):
    """One source of defaults: algos/registry.py stores each Hyperparameters dataclass as the `algo` group."""
    import dataclasses
    import importlib

    from algos.registry import ALGORITHMS

    files = {p.stem for p in Path(__file__).resolve().parent.parent.glob("algos/*.py") if not p.stem.startswith("_")}
    with_hyperparameters = {f for f in files if hasattr(importlib.import_module(f"algos.{f}"), "Hyperparameters")}
    assert with_hyperparameters == set(ALGORITHMS)
    for name in ALGORITHMS:
        defaults = dataclasses.asdict(importlib.import_module(f"algos.{name}").Hyperparameters())
        assert dict(compose_cfg(f"algo={name}", "env=seqgan_oracle").algo) == defaults
