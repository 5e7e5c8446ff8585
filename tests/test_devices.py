"""Devices without a GPU: every tensor of a run is made on the agent's device (checked by making any other tensor
land on the meta device, where it fails loudly), and device and precision settings a machine cannot honour stop
the run with the fix named."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from algos.settings import check_config
from algos.trpo import Hyperparameters
from core.errors import ConfigError
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parent.parent
TEXT = [
    "env=text",
    "env.task=examples/terse_task.py:make_task",
    "env.num_envs=4",
    "env.max_new_tokens=4",
    "env.max_prompt_tokens=8",
    "env.kl_coef=0.1",
]
ONE_UPDATE = {  # per env kind: the overrides of a run of one update (group algorithms: one batch of episodes)
    "classic": ["env=pendulum", "env.num_envs=4", "net.normalize_obs=true", "env.normalize_reward=true"],
    "atari": ["env=breakout", "env.num_envs=4", "env.max_episode_frames=200"],
    "text": TEXT,
}
MINIBATCHES = ["algo.num_minibatches=2"]
SEGMENT = {"pg": [], "a2c": [], "trpo": MINIBATCHES, "ppo_penalty": MINIBATCHES, "ppo_clip": MINIBATCHES}
GROUP = {"grpo": 4, "rloo": 4}
SEQGAN_TINY = [
    "env.num_eval=16",
    "env.num_real=64",
    "algo.batch_size=16",
    "algo.dis_filter_sizes=[2]",
    "algo.dis_num_filters=[4]",
    "algo.rollout_num=1",
    "algo.eval_every=1",
    "algo.num_negatives=16",
    "algo.pretrain_epochs=1",
    "algo.dis_pretrain_rounds=1",
    "algo.adversarial_epochs=1",
]


def one_update(algo: str, kind: str) -> list[str]:
    if algo in GROUP:
        steps = "algo.max_episode_steps=4" if kind == "text" else "algo.max_episode_steps=16"
        return [*ONE_UPDATE[kind], f"algo.group_size={GROUP[algo]}", steps, "total_timesteps=1"]
    return [*ONE_UPDATE[kind], "algo.num_steps=8", *SEGMENT[algo], "total_timesteps=32"]


@pytest.fixture
def tensors_elsewhere_fail():
    """Any tensor made without a device lands on the meta device, and mixing it with the agent's CPU tensors
    raises: the run only passes if every tensor names its device. torch's own optimisers make their step counters
    on the default device (which torch allows on the CPU beside parameters anywhere), so optimiser steps alone run
    with the CPU as the default."""
    cpu = torch.device("cpu")

    def cpu_default(*_) -> None:
        cpu.__enter__()

    def back_to_meta(*_) -> None:
        cpu.__exit__(None, None, None)

    hooks = [register_optimizer_step_pre_hook(cpu_default), register_optimizer_step_post_hook(back_to_meta)]
    torch.set_default_device("meta")
    yield
    torch.set_default_device("cpu")
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("kind", ONE_UPDATE)
@pytest.mark.parametrize("algo", [*SEGMENT, *GROUP])
def test_every_algorithm_makes_its_tensors_on_the_agents_device(algo, kind, tiny_lm, tmp_path, tensors_elsewhere_fail):
    extra = [f"env.policy_model={tiny_lm}"] if kind == "text" else []
    cfg = compose_config(f"algo={algo}", *one_update(algo, kind), *extra, "eval_episodes=1", "progress=false")
    summary = importlib.import_module(f"algos.{algo}").train(cfg, tmp_path)
    assert summary["device"]["device"] == "cpu" and summary["total_env_steps"] > 0


@pytest.mark.parametrize("env", [["env=seqgan_oracle"], [*TEXT[:2], "env.max_new_tokens=4", "env.max_prompt_tokens=8"]])
def test_seqgan_makes_its_tensors_on_the_networks_device(env, tiny_lm, tmp_path, tensors_elsewhere_fail):
    extra = [f"env.policy_model={tiny_lm}", "algo.generator=transformer"] if "env=text" in env else []
    tiny = SEQGAN_TINY if "env=seqgan_oracle" in env else [o for o in SEQGAN_TINY if o.startswith("algo.")]
    cfg = compose_config("algo=seqgan", *env, *extra, *tiny)
    importlib.import_module("algos.seqgan").train(cfg, tmp_path)
    assert (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
    "settings, message",
    [
        (["device=cuda"], "device=cuda, but torch finds no CUDA GPU here"),
        (["device=cuda:1"], "install a CUDA build of torch (see the README), or set device=cpu or device=auto"),
        (["device=mps"], "device='mps' is not supported; valid: cpu, cuda, cuda:N"),
        (["device=gpu0"], "device='gpu0' is not a device; valid: cpu, cuda"),
        (["precision=bf16"], "precision=bf16 is for a GPU (autocast on CUDA); this run is on cpu: set precision=fp32"),
        (["precision=fp16"], "precision='fp16'; valid: fp32, bf16"),
    ],
)
def test_a_device_or_precision_this_machine_lacks_is_refused(settings, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_config(compose_config("algo=trpo", *settings), Hyperparameters)


def test_auto_is_the_cpu_here_and_the_summary_names_the_device(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run(
        [sys.executable, "-m", "algos", "algo=a2c", "device=auto", "total_timesteps=80", "eval_episodes=1"]
        + [f"hydra.run.dir={tmp_path}", "progress=false"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    device = json.loads((tmp_path / "summary.json").read_text())["device"]
    assert device["device"] == "cpu" and device["precision"] == "fp32" and "kernels" in device["name"]

    refused = subprocess.run(
        [sys.executable, "-m", "algos", "algo=a2c", "device=cuda", f"hydra.run.dir={tmp_path / 'gpu'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "tokengym: error: device=cuda" in refused.stderr
    assert not (tmp_path / "gpu" / "checkpoint.pt").exists()


def test_bf16_is_for_the_language_models(tiny_lm):
    """A CNN or MLP agent refuses bf16 by name even where a GPU would take it (checked here on a stand-in
    placement: the refusal comes before any tensor is made)."""
    import gymnasium as gym

    from algos.networks import make_agent
    from algos.settings import NetSettings
    from core.devices import Placement

    with pytest.raises(ConfigError, match="precision=bf16 is for the language-model agents"):
        make_agent(
            gym.spaces.Box(-1, 1, (3,)),
            gym.spaces.Discrete(2),
            NetSettings([8], "tanh", False),
            Placement(torch.device("cpu"), "bf16"),
        )


def test_ranks_get_one_gpu_each_and_more_ranks_than_gpus_are_refused(monkeypatch):
    """The checks every rank makes, on a stand-in machine with 2 GPUs (no GPU is touched)."""
    from core.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1, local_ranks=2) == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"4 ranks a GPU of its own, but it has 2; .*--nproc_per_node=2"):
        resolve_device("cuda", local_rank=0, local_ranks=4)
    with pytest.raises(ConfigError, match="device=cuda:1 names one GPU, and 2 ranks of this job run on this machine"):
        resolve_device("cuda:1", local_rank=0, local_ranks=2)
    with pytest.raises(
        ConfigError, match=r"asks for GPU 3, but this machine has 2 GPUs; choose one of cuda:0 \.\. cuda:1"
    ):
        resolve_device("cuda:3")
