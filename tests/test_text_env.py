"""The token-generation environment and the text agent, on a tiny GPT-2 built here (no network)."""

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from algos.rollout import KLController, Rollout
from core.agent import AgentContract, PretrainingAgent
from core.errors import ConfigError, NonFiniteError
from core.info import KL_TAG, REF_LOGPROB, KLPenalty
from envs.text.agent import TextAgent, group_by_longest
from envs.text.env import TokenEnv, TokenVectorEnv
from envs.text.tasks import TextTask
from envs.text.tokens import PAD

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["the movie was", "i think it is", "a film"]


@pytest.fixture(scope="session")
def lm_and_tokenizer(tiny_lm):
    from envs.text.loading import load_causal_lm

    return load_causal_lm(tiny_lm)


def length_task(name="length"):
    return TextTask(name=name, prompts=PROMPTS, reward=lambda prompt, completion: float(len(completion)))


def test_the_text_agent_meets_the_agent_contract(tiny_lm, lm_and_tokenizer):
    """Every member the algorithms and the rollout use, and PPO-ptx's pre-training loss; no observation normaliser
    (token ids are not normalised), and a new batch of rollouts rebuilds the KV cache whatever it is given."""
    _, tokenizer = lm_and_tokenizer
    agent = TextAgent.from_pretrained(str(tiny_lm), len(tokenizer), pretraining_texts=["the movie was great fun"])
    assert isinstance(agent, AgentContract) and isinstance(agent, PretrainingAgent)
    assert not hasattr(agent, "obs_normalizer")
    obs = torch.as_tensor([[1, 5, 6, PAD]])
    for previous_obs in (None, obs):
        agent.act(obs)
        agent.begin_rollout(previous_obs)
        assert agent.decoder.cache is None


def test_the_text_settings_tell_the_rollout_its_kl_penalty_and_that_the_response_limit_is_final(compose_cfg):
    from core.checks import check_settings
    from envs.text.env import Settings

    def text_settings(*overrides: str) -> Settings:
        return check_settings(Settings, compose_cfg("env=text", "env.task=t.py:f", *overrides).env, "env.")

    assert text_settings().kl_penalty() == KLPenalty(coef=0.05, target=None, horizon=10_000)
    assert text_settings("env.kl_target=6", "env.kl_horizon=500").kl_penalty() == KLPenalty(0.05, 6.0, 500)
    assert text_settings("env.kl_coef=0").kl_penalty() is None
    assert not text_settings().bootstraps_truncation()
    assert text_settings("env.bootstrap_truncated=true").bootstraps_truncation()


def test_built_in_tasks_are_a_table_imported_only_when_named():
    """As env kinds are (envs/__init__.py): the names are listed in errors, and each names an importable factory."""
    import importlib

    from envs.text.tasks import TASKS, load_task

    with pytest.raises(ConfigError, match=r"env.task='nope' is not a registered task \(sentiment\) nor"):
        load_task("nope", None)
    for target in TASKS.values():
        module, factory = target.split(":")
        assert callable(getattr(importlib.import_module(module), factory))


def test_reading_the_text_settings_and_tasks_loads_no_model_code():
    """The settings are checked before any run starts; transformers takes seconds to import."""
    code = (
        "import sys, envs.text.env, envs.text.tasks, envs.text.pipeline.settings; "
        "assert 'transformers' not in sys.modules and 'envs.text.sentiment' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_single_env_passes_gymnasiums_checker(lm_and_tokenizer):
    model, tokenizer = lm_and_tokenizer
    env = gym.make(
        "tokengym/Text-v0",
        task=length_task(),
        tokenizer=tokenizer,
        max_prompt_tokens=8,
        max_new_tokens=5,
        reference=model,
    )
    check_env(env.unwrapped, skip_render_check=True)


def test_eos_terminates_the_limit_truncates_and_reward_comes_only_at_the_end(lm_and_tokenizer):
    model, tokenizer = lm_and_tokenizer
    env = TokenEnv(length_task(), tokenizer, max_prompt_tokens=8, max_new_tokens=3)
    obs, _ = env.reset(seed=0)
    prompt_length = int((obs != PAD).sum())
    token = tokenizer(" fun", add_special_tokens=False)["input_ids"][0]
    rewards, ended = [], []
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(token)
        rewards.append(reward)
        ended.append((terminated, truncated))
    assert ended == [(False, False), (False, False), (False, True)]
    assert rewards[:2] == [0.0, 0.0] and rewards[2] == len(" fun fun fun")
    assert int((obs != PAD).sum()) == prompt_length + 3
    env.reset(seed=1)
    _, reward, terminated, truncated, _ = env.step(tokenizer.eos_token_id)
    assert (terminated, truncated, reward) == (True, False, 0.0)  # EOS at once: an empty completion


def test_a_new_batch_restarts_the_reference_cache_of_token_envs_in_gymnasiums_vector_env(lm_and_tokenizer):
    """So that a run resumed at a checkpoint (between batches) computes what the uninterrupted run computed."""
    from core import info

    model, tokenizer = lm_and_tokenizer

    def make() -> TokenEnv:
        return TokenEnv(length_task(), tokenizer, max_prompt_tokens=8, max_new_tokens=3, reference=model)

    envs = gym.vector.SyncVectorEnv([make, make])
    envs.reset(seed=0)
    envs.step(np.array([5, 6]))
    caches = [env.unwrapped.batch.reference_cache for env in envs.envs]
    assert all(cache.cache is not None for cache in caches)
    info.begin_batch(envs)
    assert all(cache.cache is None for cache in caches)


def test_vector_env_autoresets_and_reports_reference_logprobs(lm_and_tokenizer):
    model, tokenizer = lm_and_tokenizer
    envs = TokenVectorEnv(length_task(), tokenizer, num_envs=4, max_prompt_tokens=8, max_new_tokens=2, reference=model)
    obs, _ = envs.reset(seed=0)
    actions = np.full(4, tokenizer(" a", add_special_tokens=False)["input_ids"][0])

    def expected(rows: np.ndarray) -> list[float]:
        with torch.no_grad():  # the reference log-prob of each row, one whole prefix at a time
            return [
                torch.log_softmax(model(input_ids=torch.as_tensor(row[row != PAD])[None]).logits[0, -1], -1)[
                    actions[0]
                ].item()
                for row in rows
            ]

    first, _, _, _, info = envs.step(actions)  # the prompts run into the reference's KV cache
    np.testing.assert_allclose(info[REF_LOGPROB], expected(obs), rtol=1e-5, atol=1e-6)
    next_obs, rewards, terminated, truncated, info = envs.step(actions)  # one new token per row, through the cache
    np.testing.assert_allclose(info[REF_LOGPROB], expected(first), rtol=1e-5, atol=1e-6)
    assert truncated.all() and not terminated.any() and (rewards == len(" a a")).all()
    assert info["_final_obs"].all() and (info["final_info"]["episode"]["r"] == rewards).all()
    prompt_lengths = {len(ids) for ids in envs.batch.prompt_ids}
    assert set((next_obs != PAD).sum(1).tolist()) <= prompt_lengths  # every row restarted on a fresh prompt
    assert all((o != PAD).sum() - 2 in prompt_lengths for o in info["final_obs"])  # prompt + 2 generated


def test_kl_penalty_sign_and_size_on_a_hand_made_case(tiny_lm, lm_and_tokenizer):
    """With gamma = lambda = 1 and V = 0, the return of an episode's first step is its score minus
    beta * sum_t (log pi(a_t|s_t) - log pi_ref(a_t|s_t)); the rollout also reports that sum as text/kl."""
    reference, tokenizer = lm_and_tokenizer
    agent = TextAgent.from_pretrained(str(tiny_lm), len(tokenizer))
    with torch.no_grad():  # the policy drifts from the reference
        for p in agent.lm.parameters():
            p.add_(0.5 * torch.randn_like(p))
        agent.value_head.weight.zero_()
        agent.value_head.bias.zero_()
    envs = TokenVectorEnv(
        length_task(), tokenizer, num_envs=1, max_prompt_tokens=8, max_new_tokens=3, reference=reference
    )
    rollout = Rollout(envs, agent, num_steps=3, gamma=1.0, seed=0, kl=KLController(KLPenalty(0.5, None, 1000)))
    batch = rollout.collect(gae_lambda=1.0)
    [sequence_kl] = rollout.episode_metrics[KL_TAG]
    ours = batch.logprobs.numpy()
    with torch.no_grad():
        theirs = [
            torch.log_softmax(reference(input_ids=torch.as_tensor(o[o != PAD])[None]).logits[0, -1], -1)[a].item()
            for o, a in zip(batch.obs.numpy(), batch.actions.numpy())
        ]
    episode_length = rollout.finished_episodes[0][2]
    assert sequence_kl == pytest.approx(float(np.sum(ours[:episode_length] - theirs[:episode_length])), abs=1e-5)
    score = rollout.finished_episodes[0][1]
    assert batch.returns[0].item() == pytest.approx(score - 0.5 * sequence_kl, abs=1e-4)


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    kl = KLController(KLPenalty(coef=0.1, target=6.0, horizon=10_000))
    kl.update(sequence_kl=12.0, n_steps=1000)  # error clipped to +0.2
    assert kl.beta == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    kl.update(sequence_kl=5.4, n_steps=1000)  # error -0.1
    assert kl.beta == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))


def test_per_token_samples_evaluated_together_match_each_prefix_alone(tiny_lm, lm_and_tokenizer):
    _, tokenizer = lm_and_tokenizer
    agent = TextAgent.from_pretrained(str(tiny_lm), len(tokenizer))
    rng = np.random.default_rng(0)
    episodes = [rng.integers(3, len(tokenizer), size=n) for n in (9, 6, 9)]
    episodes[2][:4] = episodes[0][:4]  # two episodes share a prefix
    obs = np.full((sum(len(e) for e in episodes), 12), PAD)
    i = 0
    for episode in episodes:
        for n in range(1, len(episode) + 1):
            obs[i, :n] = episode[:n]
            i += 1
    obs = torch.as_tensor(obs)
    runs, _, _ = group_by_longest(obs)
    assert len(runs) == 3  # one forward row per episode
    actions = torch.as_tensor(rng.integers(0, len(tokenizer), size=len(obs)))
    logprob, entropy, value = agent.evaluate(obs, actions)
    for k in range(len(obs)):
        alone = agent.evaluate(obs[k : k + 1], actions[k : k + 1])
        torch.testing.assert_close((logprob[k], entropy[k], value[k]), tuple(x[0] for x in alone), rtol=1e-4, atol=1e-5)


def test_ppo_raises_a_programmatic_reward_on_a_tiny_model(tiny_lm, tmp_path):
    """The plug-in example of docs/environments.md, run as a user would: PPO-clip must raise the reward."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "algos",
            "algo=ppo_clip",
            "env=text",
            "env.task=examples/terse_task.py:make_task",
            f"env.policy_model={tiny_lm}",
            "env.max_new_tokens=6",
            "env.max_prompt_tokens=8",
            "algo.learning_rate=3e-3",
            "algo.num_steps=16",
            "total_timesteps=8192",
            "eval_episodes=16",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    returns = [e.value for e in events.Scalars("charts/episodic_return")]
    first, last = np.mean(returns[:100]), np.mean(returns[-100:])
    assert last > first + 0.3, (first, last)  # seen: -0.86 -> -0.01 (it learns to stop early)
    assert json.loads((tmp_path / "summary.json").read_text())["env"] == "tokengym/Text-v0"


@pytest.mark.parametrize(
    "task, message",
    [
        (TextTask(name="none", prompts=[], reward=lambda p, c: 0.0), "task 'none' has no prompts"),
        (TextTask(name="long", prompts=["word " * 40], reward=lambda p, c: 0.0), "more than env.max_prompt_tokens=8"),
    ],
)
def test_bad_prompts_are_refused_at_start(task, message, lm_and_tokenizer):
    with pytest.raises(ConfigError, match=message):
        TokenVectorEnv(task, lm_and_tokenizer[1], num_envs=2, max_prompt_tokens=8, max_new_tokens=2)


@pytest.mark.parametrize(
    "reward, error, message",
    [
        (lambda p, c: 1 / 0, ConfigError, "the reward of task 'bad' raised ZeroDivisionError"),
        (lambda p, c: float("nan"), NonFiniteError, "the reward of task 'bad' returned nan for prompt"),
    ],
)
def test_a_reward_function_that_raises_or_returns_nan_stops_with_a_clear_error(
    reward, error, message, lm_and_tokenizer
):
    envs = TokenVectorEnv(
        TextTask(name="bad", prompts=PROMPTS, reward=reward),
        lm_and_tokenizer[1],
        num_envs=2,
        max_prompt_tokens=8,
        max_new_tokens=1,
    )
    envs.reset(seed=0)
    with pytest.raises(error, match=message):
        envs.step(np.array([5, 6]))


def test_missing_model_folder_and_unknown_task_are_clear_errors(tiny_lm, tmp_path):
    terse = "env.task=examples/terse_task.py:make_task"
    for args, message in [
        (["env.task=nonexistent"], "env.task='nonexistent' is not a registered task"),
        ([terse, f"env.policy_model={tmp_path}/nope"], f"there is no folder {tmp_path}/nope"),
        (
            [terse, f"env.policy_model={tiny_lm}", "env.value_model=reward_model"],
            "task 'terse' has no learned reward model",
        ),
    ]:
        out = subprocess.run(
            [sys.executable, "-m", "algos", "env=text", *args, f"hydra.run.dir={tmp_path}/run"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("reward", [[], ["env.quantile_reward_samples=4"]], ids=["task_reward", "vbon_reward"])
def test_a_text_run_stopped_halfway_resumes_to_the_same_result(reward, tiny_lm, compose_cfg, tmp_path):
    """With vBoN's reward too: the reference pools drawn before the stop come back from the checkpoint (drawn
    again, they would take other samples from torch's generator and the runs would part)."""
    from tests.test_learning import train

    overrides = [
        *reward,
        "algo=ppo_clip",
        "env=text",
        "env.task=examples/terse_task.py:make_task",
        f"env.policy_model={tiny_lm}",
        "env.num_envs=4",
        "env.max_new_tokens=4",
        "env.max_prompt_tokens=8",
        "env.kl_target=1.0",
        "algo.num_steps=16",
        "algo.anneal_lr=false",
        "checkpoint_interval_s=0",
        "eval_episodes=4",
    ]
    reference = train(compose_cfg(*overrides, "total_timesteps=256"), tmp_path / "ref")
    train(compose_cfg(*overrides, "total_timesteps=128"), tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    resumed = train(compose_cfg(*overrides, "total_timesteps=256"), tmp_path / "run")
    assert resumed["eval"]["returns"] == reference["eval"]["returns"]
    states = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("ref", "run")]
    assert all(torch.equal(states[0]["agent"][k], states[1]["agent"][k]) for k in states[0]["agent"])
    assert (
        states[0]["ranks"][0]["rollout"]["kl_beta"] == states[1]["ranks"][0]["rollout"]["kl_beta"] != 0.05
    )  # the adaptive beta moved


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=200), actions=st.lists(st.integers(min_value=0), min_size=1, max_size=12))
def test_any_prompt_and_actions_keep_the_env_in_its_spaces(prompt, actions, lm_and_tokenizer):
    """Empty, very long, control-character or mixed-script prompts: a clear refusal at start, or an env whose
    every observation is in its space and whose episodes end by the response limit."""
    _, tokenizer = lm_and_tokenizer
    task = TextTask(name="any", prompts=[prompt], reward=lambda p, c: float(len(c)))
    try:
        env = TokenEnv(task, tokenizer, max_prompt_tokens=32, max_new_tokens=5)
    except ConfigError as err:
        assert "more than env.max_prompt_tokens=32" in str(err)
        return
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    steps = 0
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action % int(env.action_space.n))
        steps += 1
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        if terminated or truncated:
            assert steps <= 5
            obs, _ = env.reset()
            steps = 0


@pytest.mark.parametrize("separate_critic", [False, True])
def test_kv_cached_rollout_gives_the_log_probabilities_of_a_full_forward(
    separate_critic, tiny_lm, tiny_classifier, lm_and_tokenizer
):
    """Rows of different prompt lengths, restarting at different steps, through the cache; every step's
    log-probability and value (from the policy's head, or from a critic with its own cache) must equal a fresh
    forward over the same observation."""
    _, tokenizer = lm_and_tokenizer
    agent = TextAgent.from_pretrained(
        str(tiny_lm), len(tokenizer), value_model=str(tiny_classifier) if separate_critic else None
    )
    if not separate_critic:
        with torch.no_grad():
            agent.value_head.weight.normal_()
    task = TextTask(name="t", prompts=PROMPTS + [""], reward=lambda p, c: 0.0)
    envs = TokenVectorEnv(task, tokenizer, num_envs=6, max_prompt_tokens=8, max_new_tokens=4)
    obs, _ = envs.reset(seed=0)
    torch.manual_seed(0)
    for _ in range(15):
        obs_t = torch.as_tensor(obs)
        action, logprob, value = agent.act(obs_t)
        full_logprob, _, full_value = agent.evaluate(obs_t, action)
        torch.testing.assert_close(logprob, full_logprob.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(value, full_value.detach(), rtol=1e-4, atol=1e-5)
        obs, *_ = envs.step(action.numpy())
    assert agent.decoder.mask.shape[1] <= 8 + 4  # finished episodes' columns are dropped


def test_a_critic_initialised_from_a_reward_model_starts_at_its_score(tiny_lm, tiny_classifier, lm_and_tokenizer):
    """Stiennon et al. 2020's value initialisation: on whole sequences the critic's value is the classifier's score."""
    from envs.text.loading import load_reward_model

    _, tokenizer = lm_and_tokenizer
    agent = TextAgent.from_pretrained(str(tiny_lm), len(tokenizer), value_model=str(tiny_classifier))
    classifier, _ = load_reward_model(tiny_classifier)
    batch = tokenizer(["the movie was great fun", "a dull film"], padding=True, return_tensors="pt")
    ids = batch.input_ids.masked_fill(batch.attention_mask == 0, PAD)
    with torch.no_grad():
        scores = classifier(input_ids=ids.clamp(min=0), attention_mask=(ids != PAD).long()).logits[:, 0]
        torch.testing.assert_close(agent.value(ids), scores, rtol=1e-5, atol=1e-5)
    assert agent.value_head is None
    assert {id(p) for p in agent.critic_parameters()}.isdisjoint(id(p) for p in agent.actor_parameters())


def test_a_value_model_that_is_not_a_one_label_classifier_is_a_clear_error(tiny_lm, lm_and_tokenizer):
    _, tokenizer = lm_and_tokenizer
    with pytest.raises(ConfigError, match="one label"):
        TextAgent.from_pretrained(str(tiny_lm), len(tokenizer), value_model=str(tiny_lm))  # a causal LM


def test_evaluation_reports_the_policy_beside_best_of_n(tiny_lm, tiny_classifier, compose_cfg, tmp_path):
    """Trained with a separate critic, whose weights the evaluation must leave aside."""
    import math

    from envs.text.evaluate import distinct_n, evaluate_run
    from tests.test_learning import train

    train(
        compose_cfg(
            "algo=ppo_clip",
            "env=text",
            "env.task=examples/terse_task.py:make_task",
            f"env.policy_model={tiny_lm}",
            f"env.value_model={tiny_classifier}",
            "env.num_envs=4",
            "env.max_new_tokens=4",
            "env.max_prompt_tokens=8",
            "algo.num_steps=16",
            "total_timesteps=64",
            "eval_episodes=2",
        ),
        tmp_path,
    )
    text = evaluate_run(tmp_path, num_prompts=8, best_of=[1, 4], seed=0)
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"policy", "policy (this run)", "best-of-1 (reference)", "best-of-4 (reference)"}
    kl_column, bound_column = rows["policy"].index(" kl_to_reference "), rows["policy"].index(" kl_analytic_bound ")
    assert float(rows["best-of-4 (reference)"][bound_column]) == pytest.approx(math.log(4) - 3 / 4, abs=1e-3)
    assert 0 <= float(rows["best-of-4 (reference)"][kl_column]) <= float(rows["best-of-4 (reference)"][bound_column])
    assert float(rows["best-of-1 (reference)"][kl_column]) == 0.0
    assert distinct_n(["a b a b"], 1) == 0.5 and distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)


def test_the_response_limit_is_not_bootstrapped(tiny_lm, lm_and_tokenizer):
    """The response limit is part of the task: with V = 10 everywhere, the returns of a truncated episode are
    its score alone (a bootstrap would add 10 and favour running into the limit over ending with EOS)."""
    _, tokenizer = lm_and_tokenizer
    agent = TextAgent.from_pretrained(str(tiny_lm), len(tokenizer))
    with torch.no_grad():
        agent.value_head.weight.zero_()
        agent.value_head.bias.fill_(10.0)
    envs = TokenVectorEnv(length_task(), tokenizer, num_envs=1, max_prompt_tokens=8, max_new_tokens=2)
    rollout = Rollout(envs, agent, num_steps=2, gamma=1.0, seed=0, bootstrap_truncated=False)
    batch = rollout.collect(gae_lambda=1.0)
    [(_, score, length)] = rollout.finished_episodes
    assert length == 2 and tokenizer.eos_token_id not in batch.actions.tolist()  # truncated, not terminated
    assert batch.returns.tolist() == pytest.approx([score, score])


def test_the_ptx_loss_is_the_lms_own_loss_on_corpus_sentences(tiny_lm):
    agent = TextAgent.from_pretrained(str(tiny_lm), 300, pretraining_texts=["the movie was great fun", "a film"])
    torch.manual_seed(0)
    chosen = torch.randint(2, (8,)).tolist()  # what pretraining_loss will draw after the same seed
    with torch.no_grad():
        sums, counts = [], []
        for i in chosen:  # each sentence alone, unpadded: HF's mean loss times its number of predicted tokens
            ids = torch.tensor([agent.pretraining_ids[i]])
            sums.append(agent.lm(input_ids=ids, labels=ids).loss * (ids.shape[1] - 1))
            counts.append(ids.shape[1] - 1)
        torch.manual_seed(0)
        torch.testing.assert_close(agent.pretraining_loss(batch_size=8), sum(sums) / sum(counts))
    assert len(set(chosen)) == 2  # both lengths were in the batch, so padding was exercised
    with pytest.raises(ConfigError, match="PPO-ptx.*needs pre-training text"):
        TextAgent.from_pretrained(str(tiny_lm), 300).pretraining_loss(batch_size=2)


def test_ppo_ptx_mixes_the_pretraining_loss_into_the_update(tiny_lm, compose_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.test_learning import train

    (tmp_path / "task.py").write_text(
        "from envs.text.tasks import TextTask\n"
        "def make_task(settings):\n"
        "    return TextTask(name='t', prompts=['the movie'], reward=lambda p, c: 0.0,\n"
        "                    corpus=['the movie was great fun', 'a dull and boring film'])\n"
    )
    overrides = [
        "algo=ppo_clip",
        "env=text",
        f"env.task={tmp_path / 'task.py'}:make_task",
        f"env.policy_model={tiny_lm}",
        "env.num_envs=4",
        "env.max_new_tokens=4",
        "env.max_prompt_tokens=8",
        "algo.num_steps=16",
        "total_timesteps=128",
        "eval_episodes=2",
        "algo.learning_rate=1e-2",
    ]
    train(compose_cfg(*overrides, "algo.ptx_coef=1.0", "algo.ptx_batch_size=2"), tmp_path / "ptx")
    events = EventAccumulator(str(tmp_path / "ptx"))
    events.Reload()
    ptx = [e.value for e in events.Scalars("losses/ptx_loss")]
    assert len(ptx) == 2 and ptx[-1] < ptx[0]  # the corpus likelihood is trained, not just measured
    with pytest.raises(ConfigError, match="needs an agent with pre-training data"):
        train(
            compose_cfg("algo=ppo_clip", "env=cartpole", "algo.ptx_coef=0.5", "total_timesteps=512"),
            tmp_path / "cartpole",
        )


@pytest.mark.parametrize("algo", ["trpo", "pg", "a2c", "ppo_penalty"])
def test_every_algorithm_runs_on_the_text_env(algo, tiny_lm, compose_cfg, tmp_path):
    """TRPO's Fisher-vector products need a double backward through the transformer's attention."""
    from tests.test_learning import train

    summary = train(
        compose_cfg(
            f"algo={algo}",
            "env=text",
            "env.task=examples/terse_task.py:make_task",
            f"env.policy_model={tiny_lm}",
            "env.num_envs=4",
            "env.max_new_tokens=4",
            "env.max_prompt_tokens=8",
            "algo.num_steps=8",
            "total_timesteps=64",
            "eval_episodes=2",
        ),
        tmp_path,
    )
    assert summary["total_env_steps"] == 64


def test_vbon_rewards_are_the_log_rank_among_the_prompts_reference_rewards():
    """F(r) = (#{r_j <= r} + 1) / (M + 1) from the prompt's sorted pool: below all three, tied with the middle
    one, above all."""
    from envs.text.quantile import ReferenceQuantileReward

    quantile = ReferenceQuantileReward(length_task(), None, None, samples=3, max_new_tokens=4)
    quantile.pools = {0: np.array([0.1, 0.5, 0.9]), 2: np.array([5.0, 6.0, 7.0])}
    rewards = quantile(np.array([0, 0, 0, 2]), np.array([0.0, 0.5, 1.0, 6.5]))
    np.testing.assert_allclose(rewards, np.log([1 / 4, 3 / 4, 4 / 4, 3 / 4]))


def test_vbon_pools_are_drawn_once_per_prompt_in_one_batch_and_kept_in_the_state(lm_and_tokenizer):
    """New prompts' pools, those of the episodes still in progress included, come from one batch of M samples
    each, sorted; a prompt seen before draws nothing; a fresh object loaded from the state gives the same rewards
    without drawing."""
    from envs.text.quantile import ReferenceQuantileReward

    lm, tokenizer = lm_and_tokenizer
    quantile = ReferenceQuantileReward(length_task(), lm, tokenizer, samples=8, max_new_tokens=6)
    torch.manual_seed(0)
    rewards = quantile(np.array([2, 0, 2]), np.array([3.0, 1e6, -1.0]), in_progress=np.array([1, 2]))
    assert sorted(quantile.pools) == [0, 1, 2]  # prompt 1's episode is still going: its pool is drawn with these
    assert all(len(pool) == 8 and np.all(np.diff(pool) >= 0) for pool in quantile.pools.values())
    assert rewards[1] == 0.0 and rewards[2] == np.log(1 / 9)  # above every completion's length / below all
    state = torch.get_rng_state()
    quantile(np.array([0]), np.array([1.0]))
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn

    restored = ReferenceQuantileReward(length_task(), None, None, samples=8, max_new_tokens=6)
    restored.load_state_dict(quantile.state_dict())
    np.testing.assert_array_equal(restored(np.array([2, 0, 2]), np.array([3.0, 1e6, -1.0])), rewards)


def test_the_text_env_pays_vbon_rewards_in_training_only(tiny_lm, compose_cfg):
    """env.quantile_reward_samples=M: every episode's reward is the log-rank of the task's reward of its
    completion, in [-log(M + 1), 0]; the evaluation env pays the task's reward; M < 1 is refused."""
    from core.checks import check_settings
    from core.info import SAMPLES
    from envs.text.env import Settings, make_vector_env

    def settings(samples):
        task = ("env=text", "env.task=examples/terse_task.py:make_task", f"env.policy_model={tiny_lm}")
        cfg = compose_cfg(*task, "env.num_envs=4", "env.max_new_tokens=3", f"env.quantile_reward_samples={samples}")
        return check_settings(Settings, cfg.env, "env.")

    with pytest.raises(ConfigError, match="env.quantile_reward_samples=0 must be >= 1"):
        settings(0)
    train, evaluation = make_vector_env(settings(5), 4, training=True), make_vector_env(settings(5), 4, False)
    assert train.reward_transform is not None and evaluation.reward_transform is None
    train.reset(seed=0)
    for _ in range(3):  # three tokens: every row ends (truncated) on the third step
        _, reward, terminated, truncated, info = train.step(np.full(4, 7))
    assert (terminated | truncated).all()
    pairs = [sample.split(" -> ") for sample in info["final_info"][SAMPLES]]
    task = train.batch.task
    proxy = np.array([task.reward(prompt, completion) for prompt, completion in pairs])
    prompt_index = np.array([task.prompts.index(prompt) for prompt, _ in pairs])
    np.testing.assert_allclose(reward, train.reward_transform(prompt_index, proxy))
    assert np.all((-np.log(6) - 1e-9 <= reward) & (reward <= 0))
