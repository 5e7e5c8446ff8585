"""benchmarks.trl_peers: our settings translated to TRL's GRPOTrainer and RLOOTrainer, and their runs in our
run-folder format, on a tiny GPT-2 and the programmatic example task."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl", reason="TRL is in the bench extra: pip install -e '.[bench]'")

from algos.settings import check_config  # noqa: E402
from benchmarks import report, trl_peers  # noqa: E402
from envs.text.env import encode_prompts  # noqa: E402
from envs.text.loading import load_causal_lm  # noqa: E402
from envs.text.tasks import load_task  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASK = "env.task=examples/terse_task.py:make_task"
# TRL 1.16 reads transformers' deprecated `is_gradient_checkpointing` when it unwraps the model for generation
# (trl/models/utils.py); transformers 5.24 warns on every read. Not ours to fix: TRL's next release will.
TRL_DEPRECATION = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
OUR_TAGS = {
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/learning_rate",
    "charts/SPS",
    "losses/policy_loss",
    "text/kl",
    "text/proxy_reward",
    "eval/mean_return",
}


def tiny_overrides(algo: str, tiny_lm: Path, *extra: str) -> list[str]:
    # RLOO with the adaptive coefficient (a short horizon, so that it moves within the run)
    kl = ["env.kl_coef=0", "algo.kl_coef=0.1"] if algo == "grpo" else ["env.kl_coef=0.05", "env.kl_target=0.01"]
    return [
        f"algo={algo}",
        "env=text",
        TASK,
        f"env.policy_model={tiny_lm}",
        "env.num_envs=4",
        "algo.group_size=2",
        "env.max_new_tokens=4",
        "env.max_prompt_tokens=8",
        "total_timesteps=40",
        "eval_episodes=2",
        "env.kl_horizon=50",
        *kl,
        *extra,
    ]


def checked(cfg, algo: str):
    from algos.registry import hyperparameters

    return check_config(cfg, hyperparameters(algo))


def test_grpo_settings_become_trl_arguments(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "algo=grpo", "env=text", TASK, "env.kl_coef=0", "algo.kl_coef=0.04", "algo.loss_aggregation=token"
    )
    args = trl_peers.trainer_args(checked(cfg, "grpo"), tmp_path)
    assert {k: args[k] for k in ("num_generations", "generation_batch_size", "per_device_train_batch_size")} == {
        "num_generations": 8,
        "generation_batch_size": 16,
        "per_device_train_batch_size": 4,  # 16 completions in 4 minibatches
    }
    assert (args["num_iterations"], args["gradient_accumulation_steps"], args["max_completion_length"]) == (4, 1, 24)
    assert (args["beta"], args["epsilon"], args["loss_type"], args["scale_rewards"]) == (0.04, 0.2, "bnpo", "group")
    assert (args["learning_rate"], args["adam_epsilon"], args["max_grad_norm"]) == (1e-3, 1e-5, 0.5)
    assert args["use_bias_correction_kl"] is False and args["use_cpu"] and not args["bf16"]
    # an upper bound on optimizer steps: every completion one token, 16 steps per batch; the budget stops earlier
    assert args["max_steps"] == 500_000 // 16 * 16
    config = trl_peers.trl_config(__import__("trl").GRPOConfig, args)
    assert not config.gradient_checkpointing and config.steps_per_generation == 4


def test_rloo_settings_become_trl_arguments(compose_cfg, tmp_path):
    cfg = compose_cfg("algo=rloo", "env=text", TASK, "env.kl_coef=0.03", "algo.normalize_advantages=true")
    args = trl_peers.trainer_args(checked(cfg, "rloo"), tmp_path)
    assert (args["num_generations"], args["per_device_train_batch_size"], args["num_iterations"]) == (4, 16, 1)
    assert (args["beta"], args["normalize_advantages"]) == (0.03, True)  # our per-sequence KL penalty in the reward


def test_the_budget_anneals_the_learning_rate_per_batch_and_stops_on_generated_tokens():
    """As ours: lr x (1 - tokens before the batch / total), held for the batch's optimizer steps."""
    budget = trl_peers.TokenBudget(total=40, per_batch=2, anneal=True)
    assert budget.lr_factor(0) == 1.0
    budget.tokens = 10  # the first batch generated 10 tokens
    assert budget.lr_factor(1) == 1.0 and not budget.spent(1)  # its second step: same rate, no stop mid-batch
    assert budget.lr_factor(2) == 0.75 and not budget.spent(2)
    budget.tokens = 45
    assert not budget.spent(3) and budget.spent(4) and budget.lr_factor(4) == 0.0
    assert trl_peers.TokenBudget(total=40, per_batch=2, anneal=False).lr_factor(2) == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algo=ppo_clip"], "no TRL peer for algo=ppo_clip; peers exist for: grpo, rloo"),
        (["algo=grpo", "env.kl_coef=0.05"], "set env.kl_coef=0 and give the KL weight as algo.kl_coef"),
        (["algo=rloo", "env.reference_model=gpt2"], "set env.reference_model=null"),
        (["algo=rloo", "algo.max_episode_steps=8"], "set algo.max_episode_steps >= env.max_new_tokens"),
    ],
)
def test_settings_trl_cannot_match_are_refused(compose_cfg, overrides, message):
    cfg = compose_cfg("env=text", TASK, *overrides)
    with pytest.raises(trl_peers.PeerError, match=message):
        trl_peers.check_matchable(checked(cfg, cfg.algo.name))


def test_trl_sees_our_prompt_ids(tiny_lm):
    """TRL tokenizes prompts with the tokenizer's own call; ours adds <bos> and, by default, <eos> around a text."""
    task = load_task("examples/terse_task.py:make_task", None)
    tokenizer = trl_peers.peer_tokenizer(str(tiny_lm), task, 8)
    ours = encode_prompts(task, tokenizer, 8)
    assert tokenizer(text=task.prompts)["input_ids"] == ours
    assert all(ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids for ids in ours)


@pytest.mark.filterwarnings(TRL_DEPRECATION)
@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_a_trl_run_leaves_our_run_folder(algo, tiny_lm, compose_cfg, tmp_path):
    from huggingface_hub import constants

    offline_before = constants.HF_HUB_OFFLINE
    summary = trl_peers.train_peer(compose_cfg(*tiny_overrides(algo, tiny_lm)), tmp_path)
    assert constants.HF_HUB_OFFLINE == offline_before  # hub access is off only while the peer runs

    name = f"trl_{algo}"
    assert (summary["algo"], summary["env"], summary["seed"]) == (name, "tokengym/Text-v0", 1)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    # the budget in generated tokens: whole batches of 4 completions of at most 4 tokens, stopped at the first
    # batch that reaches 40
    assert 40 <= summary["total_env_steps"] < 40 + 16
    assert summary["peer"]["optimizer_steps"] == summary["peer"]["batches"] * (16 if algo == "grpo" else 1)
    assert summary["eval"]["episodes"] == 2 and summary["peer"]["class"] == trl_peers.PEERS[algo][1]

    config = (tmp_path / "config.yaml").read_text()
    assert f"name: {name}" in config and "policy_model: " + str(tiny_lm) in config
    policy, tokenizer = load_causal_lm(tmp_path / "policy")
    base, _ = load_causal_lm(tiny_lm)
    assert any(not torch.equal(p, q) for p, q in zip(policy.parameters(), base.parameters()))  # it was trained
    assert tokenizer.get_vocab() == load_causal_lm(tiny_lm)[1].get_vocab()
    assert not (tmp_path / "trl").exists()

    run = report.read_run(tmp_path)  # our report reads it as one of our runs
    assert run.problem is None, run.problem
    expected = OUR_TAGS | ({"losses/ref_kl"} if algo == "grpo" else {"text/kl_coef"})
    assert expected <= run.tags, expected - run.tags
    steps, _ = run.episodes
    assert steps[-1] == summary["total_env_steps"]
    if algo == "rloo":  # our controller moved TRL's beta away from env.kl_coef
        assert summary["peer"]["final_beta"] != 0.05 and summary["peer"]["config"]["beta"] == 0.05


@pytest.mark.filterwarnings(TRL_DEPRECATION)
def test_speed_mode_writes_both_rates_and_the_command(tiny_lm, tmp_path):
    out = tmp_path / "trl_speed.md"
    figures = trl_peers.speed_comparison(tiny_overrides("grpo", tiny_lm, f"run_root={tmp_path}"), out)
    assert figures["ratio"] == pytest.approx(figures["ours"] / figures["trl"])
    text = out.read_text()
    assert "| ours | algos/grpo.py |" in text and "| trl_grpo | TRL " in text
    assert f"`{figures['command']}`" in text and figures["command"].startswith("python -m benchmarks.trl_peers --speed")
    folders = list(tmp_path.glob("trl-speed-grpo-text-seed1-*"))
    assert len(folders) == 1 and (folders[0] / "ours" / "summary.json").exists()
    assert (folders[0] / "trl" / "policy").is_dir()


def test_a_setting_trl_cannot_match_exits_2_with_the_fix(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.trl_peers", "algo=grpo", "env=text", TASK, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "set env.kl_coef=0 and give the KL weight as algo.kl_coef" in out.stderr
    assert not (tmp_path / "config.yaml").exists()  # refused before anything is written
