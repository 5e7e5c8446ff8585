"""The text evaluator: best-of-N's KL estimated against the exact KL of hand-made reference distributions, the
scoring that makes repeated completions share their mass, and run folders whose policy is a `policy/` folder."""

import itertools
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core.errors import ConfigError
from envs.text.evaluate import (
    best_of_n_kl,
    best_of_n_rows,
    kl_analytic_bound,
    load_run_policy,
    proxy_scores,
)
from envs.text.tasks import TextTask


def exact_best_of_n(probs: list[float], rewards: list[float], n: int) -> np.ndarray:
    """pi_bon(y) by enumerating every n-tuple of draws: the first draw with the highest reward is returned."""
    result = np.zeros(len(probs))
    for draws in itertools.product(range(len(probs)), repeat=n):
        best = max(range(n), key=lambda i: (rewards[draws[i]], -i))  # highest reward, then the earliest draw
        result[draws[best]] += math.prod(probs[d] for d in draws)
    return result


def exact_kl(probs: list[float], rewards: list[float], n: int) -> float:
    bon = exact_best_of_n(probs, rewards, n)
    return float(sum(b * math.log(b / p) for b, p in zip(bon, probs) if b > 0))


def samples_in_proportion(probs: list[float], rewards: list[float], m: int) -> np.ndarray:
    """The rewards of m reference samples in which completion y appears exactly m * pi_ref(y) times."""
    return np.repeat(rewards, [round(p * m) for p in probs])


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_the_estimate_is_the_exact_kl_of_three_completions(n):
    """pi_ref = (0.5, 0.3, 0.2) with rewards (1, 3, 2): best-of-n's KL by enumeration, against the estimate from
    ten samples in exact proportion; both at most log n - (n - 1) / n, and strictly below it for n > 1."""
    probs, rewards = [0.5, 0.3, 0.2], [1.0, 3.0, 2.0]
    exact = exact_kl(probs, rewards, n)
    estimate = best_of_n_kl(samples_in_proportion(probs, rewards, 10), n)
    assert estimate == pytest.approx(exact, abs=1e-12)
    assert estimate <= kl_analytic_bound(n) + 1e-12
    if n > 1:
        assert estimate < kl_analytic_bound(n) - 0.05
    else:
        assert estimate == pytest.approx(0.0, abs=1e-12)


def test_completions_tied_in_reward_share_their_level():
    """Four distinct completions, two of them tied at the top reward: best-of-n keeps their reference proportions
    (ties go to the earliest draw), so the KL over completions is the estimate's KL over reward levels."""
    probs, rewards = [0.4, 0.1, 0.3, 0.2], [0.0, 5.0, 5.0, 1.0]
    for n in (2, 4):
        bon = exact_best_of_n(probs, rewards, n)
        assert bon[1] / probs[1] == pytest.approx(bon[2] / probs[2])
        estimate = best_of_n_kl(samples_in_proportion(probs, rewards, 10), n)
        assert estimate == pytest.approx(exact_kl(probs, rewards, n), abs=1e-12)


def test_repeated_samples_estimate_the_kl_and_never_exceed_the_bound():
    """Monte Carlo samples of the three-completion reference: the estimate approaches the exact KL."""
    probs, rewards = [0.5, 0.3, 0.2], [1.0, 3.0, 2.0]
    drawn = np.random.default_rng(0).choice(rewards, size=20_000, p=probs)
    for n in (2, 4, 8):
        estimate = best_of_n_kl(drawn, n)
        assert estimate == pytest.approx(exact_kl(probs, rewards, n), abs=0.01)
        assert estimate <= kl_analytic_bound(n)


@pytest.mark.parametrize("n", [2, 16, 64])
def test_without_repeats_the_estimate_reaches_the_bound_from_below(n):
    """All M = 4n rewards distinct (a continuous reward): the bound is the true KL; the estimate's quantisation
    bias is the documented few thousandths of a nat."""
    rewards = np.random.default_rng(n).normal(size=4 * n)
    gap = kl_analytic_bound(n) - best_of_n_kl(rewards, n)
    assert 0 < gap < 0.006


def test_repeated_completions_are_scored_once_and_share_their_reward():
    calls = []

    def noisy(prompts, completions):  # a scorer whose floats differ between calls, as batched models' can
        calls.append(len(prompts))
        return [len(c) + 1e-9 * len(calls) * i for i, c in enumerate(completions)]

    task = TextTask(name="t", prompts=["a"], batch_reward=noisy)
    scores = proxy_scores(task, ["a", "a", "b", "a"], [" x", " yy", " x", " x"])
    assert calls == [3] and scores[0] == scores[3] != scores[2]


def test_best_of_n_rows_report_both_kls(tiny_lm):
    from envs.text.loading import load_causal_lm
    from envs.text.tasks import load_task

    reference, tokenizer = load_causal_lm(tiny_lm)
    torch.manual_seed(0)
    rows = best_of_n_rows(
        load_task("examples/terse_task.py:make_task", None),
        reference,
        tokenizer,
        ["the movie was", "a film that"],
        [1, 2],
        4,
    )
    assert set(rows) == {"best-of-1 (reference)", "best-of-2 (reference)"}
    assert rows["best-of-1 (reference)"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-12)
    two = rows["best-of-2 (reference)"]
    assert two["kl_analytic_bound"] == pytest.approx(math.log(2) - 0.5)
    assert 0.0 <= two["kl_to_reference"] <= two["kl_analytic_bound"]
    with pytest.raises(ConfigError, match="pool of 2 samples"):
        best_of_n_rows(
            load_task("examples/terse_task.py:make_task", None), reference, tokenizer, ["a"], [4], 4, pool_size=2
        )


def text_run_folder(folder, tiny_lm, compose_cfg):
    """A run folder's config.yaml (env=text on the terse task, tiny LM as the initial model), nothing else."""
    folder.mkdir()
    cfg = compose_cfg(
        "algo=grpo", "env=text", "env.task=examples/terse_task.py:make_task", f"env.policy_model={tiny_lm}"
    )
    OmegaConf.save(cfg, folder / "config.yaml")
    return folder


def test_a_run_folder_with_a_policy_folder_loads_that_policy(tiny_lm, compose_cfg, tmp_path):
    """The route TRL's and DPO's runs take: policy/ is the trained LM; the reference stays the initial model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = text_run_folder(tmp_path / "run", tiny_lm, compose_cfg)
    with pytest.raises(ConfigError, match="neither checkpoint.pt .* nor policy/"):
        load_run_policy(run)
    trained = AutoModelForCausalLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        trained.get_input_embeddings().weight.add_(1.0)
    trained.save_pretrained(run / "policy")
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(run / "policy")
    task, policy, reference, _, settings = load_run_policy(run)
    embedding = trained.get_input_embeddings().weight
    assert torch.equal(policy.get_input_embeddings().weight, embedding)
    torch.testing.assert_close(reference.get_input_embeddings().weight, embedding - 1.0)
    assert task.name == "terse" and settings.max_new_tokens == 24


def test_a_policy_folder_with_another_vocabulary_is_refused(tiny_lm, compose_cfg, tmp_path):
    from transformers import AutoModelForCausalLM

    from envs.text.pipeline.base_lm import train_tokenizer

    run = text_run_folder(tmp_path / "run", tiny_lm, compose_cfg)
    AutoModelForCausalLM.from_pretrained(tiny_lm).save_pretrained(run / "policy")
    train_tokenizer(["other words entirely"] * 5, vocab_size=280, context_length=64).save_pretrained(run / "policy")
    with pytest.raises(ConfigError, match="vocabulary mismatch"):
        load_run_policy(run)


def fake_run(folder, tiny_lm, compose_cfg, method, seed):
    """A finished run folder with a policy/ the seed perturbs, and summary.json naming the method and seed."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.mkdir()
    cfg = compose_cfg(
        "algo=grpo",
        "env=text",
        "env.task=examples/terse_task.py:make_task",
        f"env.policy_model={tiny_lm}",
        f"seed={seed}",
    )
    OmegaConf.save(cfg, folder / "config.yaml")
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        noise = torch.randn(300, 32, generator=torch.Generator().manual_seed(seed))  # the tiny LM's embedding
        model.get_input_embeddings().weight.add_(noise)
    model.save_pretrained(folder / "policy")
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(folder / "policy")
    (folder / "summary.json").write_text(json.dumps({"algo": method, "seed": seed}))
    return folder


def test_the_frontier_runs_end_to_end_on_whatever_folders_exist(tiny_lm, compose_cfg, tmp_path):
    """Two seeds of one method (grouped, with a CI), a DPO folder, and a folder with nothing in it (listed as
    not evaluated); the terse task has no gold scorer, so gold shows as n/a."""
    import csv

    from benchmarks.text_frontier import main

    runs = [fake_run(tmp_path / f"rl-{s}", tiny_lm, compose_cfg, "fake_rl", s) for s in (0, 1)]
    dpo = fake_run(tmp_path / "dpo", tiny_lm, compose_cfg, "dpo", 0)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "frontier"
    args = ["--runs", *map(str, runs), str(tmp_path / "empty"), "--dpo", str(dpo)]
    main([*args, "--prompts", "2", "--best-of", "1", "2", "--out", str(out)])
    text = (out / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert {"best-of-N", "fake_rl", "dpo"} <= set(rows)
    assert "rl-0 (0), rl-1 (1)" in rows["fake_rl"] and "[" in rows["fake_rl"].split("|")[4]  # mean [CI] of KL
    assert "empty" in text.split("Folders not evaluated:")[1]
    with open(out / "frontier.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["best-of-N", "best-of-N", "fake_rl", "fake_rl", "dpo"]
    assert float(table[1]["kl_to_reference"]) <= float(table[1]["kl_analytic_bound"])
    assert (out / "frontier.png").stat().st_size > 0


def test_the_frontier_reuses_its_cache_and_evaluates_only_what_is_new_or_changed(
    tiny_lm, compose_cfg, tmp_path, monkeypatch
):
    """A rerun with one more folder evaluates that folder only, best-of-N's pool is not drawn again, and a run
    whose policy file changed since is evaluated afresh."""
    import os

    import benchmarks.text_frontier as frontier

    runs = [fake_run(tmp_path / f"rl-{s}", tiny_lm, compose_cfg, "fake_rl", s) for s in (0, 1, 2)]
    out = tmp_path / "frontier"
    common = ["--prompts", "2", "--best-of", "1", "2", "--out", str(out)]
    frontier.main(["--runs", *map(str, runs[:2]), *common])
    first = (out / "README.md").read_text().split("Samples")[0].splitlines()[8:]  # the table, less the timing

    evaluated: list[str] = []
    real_row = frontier.policy_row
    monkeypatch.setattr(frontier, "policy_row", lambda *a: evaluated.append("run") or real_row(*a))
    monkeypatch.setattr(frontier, "best_of_n_rows", lambda *a: pytest.fail("best-of-N was drawn again"))
    frontier.main(["--runs", *map(str, runs[:2]), *common])
    assert evaluated == [] and (out / "README.md").read_text().split("Samples")[0].splitlines()[8:] == first

    frontier.main(["--runs", *map(str, runs), *common])
    assert evaluated == ["run"]  # rl-2 only
    weights = next((runs[0] / "policy").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    frontier.main(["--runs", *map(str, runs), *common])
    assert evaluated == ["run", "run"]  # rl-0, whose weights changed


def test_the_frontier_report_groups_settings_and_finds_gold_at_equal_proxy(tmp_path):
    """Hand-made metrics: best-of-1 (proxy 0, gold 0.2) and best-of-4 (proxy 1, gold 0.4); a run at proxy 0.5 and
    gold 0.35 sits 0.05 above best-of-N's 0.30 there, and 0.017 under its 0.367 at the same KL (0.5 nats, with
    best-of-4 at 0.6); a run at proxy 2 is beyond best-of-N's range."""
    from pathlib import Path

    from benchmarks.text_frontier import Frontier, Point, group_points, plot, report, setting_of

    def metrics(kl, proxy, gold):
        return {"kl_to_reference": kl, "proxy_reward": proxy, "gold_reward": gold, "gold_positive_fraction": gold,
                "kl_analytic_bound": kl + 0.1, "samples": ["x"]}  # fmt: skip

    points = [
        Point(Path("a0"), "ppo", 0, {"algo.kl": 0.1, "env.task": "t"}, metrics(0.4, 0.5, 0.35)),
        Point(Path("a1"), "ppo", 1, {"algo.kl": 0.1, "env.task": "t"}, metrics(0.6, 0.5, 0.35)),
        Point(Path("b0"), "ppo", 0, {"algo.kl": 0.2, "env.task": "t"}, metrics(3.0, 2.0, 0.5)),
    ]
    assert setting_of({"seed": 3, "algo": {"kl": 0.1}, "peer": {"config": {"seed": 3, "output_dir": "r3/trl"}}}) == {
        "algo.kl": 0.1
    }
    assert setting_of({"env": {"new_setting": None}, "algo": {"kl": 0.1}}) == setting_of({"algo": {"kl": 0.1}})
    best = {1: metrics(0.0, 0.0, 0.2), 4: metrics(0.6, 1.0, 0.4)}
    frontier = Frontier(["p"], 4, 16, best, points)
    groups = group_points(points)
    assert [(g.label, len(g.points)) for g in groups] == [("algo.kl=0.1", 2), ("algo.kl=0.2", 1)]
    rows = [line.split(" | ") for line in report(frontier, groups, "cmd").splitlines() if line.startswith("| ppo")]
    assert rows[0][-2] == "0.300 (+0.050)" and rows[0][-1] == "0.367 (-0.017) |"
    assert rows[1][-2] == "n/a (outside best-of-N's range)"
    plot(frontier, groups, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
