"""benchmarks.report and benchmarks.stats on synthetic run folders with known values."""

import csv
import itertools
import json

import numpy as np
import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from benchmarks import report, stats


def write_run(
    folder,
    algo="ppo_clip",
    env="CartPole-v1",
    seed=0,
    final=None,
    episodes=(),
    extra_tags=(),
    status=None,
    overrides=(),
):
    """A run folder as a sweep leaves it: .hydra/, and for a finished run summary.json and events."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"algo": {"name": algo}, "env": {"id": env}, "seed": seed})
    )
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}", *overrides]))
    if status is not None:
        (folder / "job_status.txt").write_text(status + "\n")
    if final is None:
        return folder
    steps = episodes[-1][0] if episodes else 1000
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "algo": algo,
                "env": env,
                "seed": seed,
                "total_env_steps": steps,
                "wall_clock_s": 10.0 + seed,
                "steps_per_second": 1000.0,
                "eval": {"mean": final},
            }
        )
    )
    writer = SummaryWriter(str(folder))
    for step, value in episodes:
        writer.add_scalar("charts/episodic_return", value, step)
        for tag in extra_tags:
            writer.add_scalar(tag, 0.0, step)
    writer.add_scalar("eval/mean_return", final, steps)
    writer.close()
    return folder


def switch_episodes(switch_at, low=100.0, high=500.0, count=40):
    """Episode i (1-based) ends at step 1000 i with return `low` up to `switch_at`, then `high`."""
    return [(1000 * i, high if i > switch_at else low) for i in range(1, count + 1)]


def read_csv(path):
    with open(path) as f:
        return {row["algorithm"]: row for row in csv.DictReader(f)}


# ---------------------------------------------------------------------------------------------------- statistics
def test_iqm_and_bootstrap_cis_agree_with_rliable():
    from rliable import library as rly
    from rliable import metrics

    scores = np.random.default_rng(1).normal(size=(5, 3)) + np.array([0.0, 1.0, 2.0])  # runs x tasks
    point, interval = rly.get_interval_estimates(
        {"x": scores}, lambda m: np.array([metrics.aggregate_iqm(m), metrics.aggregate_mean(m)]), reps=5_000
    )
    per_task = [scores[:, j] for j in range(scores.shape[1])]
    assert stats.iqm(scores.reshape(-1)) == pytest.approx(point["x"][0], abs=1e-12)
    assert stats.iqm(scores.reshape(-1)) == pytest.approx(np.sort(scores.reshape(-1))[3:12].mean())  # 15 -> 9
    ours = [stats.stratified_bootstrap_ci(per_task, f) for f in (stats.iqm, stats.mean)]
    np.testing.assert_allclose(np.array(ours).T, interval["x"], atol=0.03)  # Monte Carlo error: about 0.01


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm(np.array([0.0, 1, 2, 3, 4, 5, 6, 100])) == pytest.approx(np.mean([2, 3, 4, 5]))


def test_bootstrap_of_two_values_spans_both():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 95% interval is [0, 1].
    assert stats.stratified_bootstrap_ci([np.array([0.0, 1.0])], stats.mean) == (0.0, 1.0)


def test_stratified_bootstrap_with_unequal_runs_per_task_matches_the_exact_distribution():
    # Every resample of 5 runs of one task and 4 of another, equally likely: the exact bootstrap distribution.
    normal = np.random.default_rng(3).normal
    tasks = [normal(size=5), normal(size=4) + 2.0]
    first, second = (np.array(list(itertools.product(t, repeat=len(t)))) for t in tasks)
    resamples = np.concatenate([np.repeat(first, len(second), 0), np.tile(second, (len(first), 1))], axis=1)
    exact = np.percentile(stats.iqm(resamples, axis=1), [2.5, 97.5])
    np.testing.assert_allclose(stats.stratified_bootstrap_ci(tasks, stats.iqm), exact, atol=0.03)


def test_steps_to_threshold_needs_a_full_window_at_the_threshold():
    steps, returns = np.array([s for s, _ in switch_episodes(20)], float), np.array([r for _, r in switch_episodes(20)])
    # Windows of 10 episodes: the first all-500 window ends at episode 30 (one 100 in it gives 460 < 475).
    assert report.steps_to_threshold(steps, returns, 475.0) == 30_000
    assert report.steps_to_threshold(steps, returns, 501.0) == np.inf
    assert report.steps_to_threshold(steps[:5], returns[:5], 0.0) == np.inf


# ---------------------------------------------------------------------------------------------------- report
def test_known_runs_give_known_table_aggregate_and_curves(tmp_path):
    sweep = tmp_path / "sweep"
    finals = {"CartPole-v1": [400.0, 450.0, 500.0], "Acrobot-v1": [-100.0, -90.0, -80.0]}
    for env, values in finals.items():
        for seed, final in enumerate(values):
            episodes = switch_episodes(20 + 5 * seed) if env == "CartPole-v1" else switch_episodes(10, -500, -85)
            write_run(sweep / f"{env}-{seed}", env=env, seed=seed, final=final, episodes=episodes)
    write_run(sweep / "failed", seed=3, status="failed: RuntimeError: boom")

    assert report.main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    row = read_csv(tmp_path / "out" / "cartpole-v1.csv")["ppo_clip"]
    assert (int(row["runs"]), int(row["failed"])) == (3, 1)
    assert float(row["final_return_mean"]) == pytest.approx(450.0)
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx(
        stats.stratified_bootstrap_ci([np.array(finals["CartPole-v1"])], stats.mean)
    )
    assert float(row["steps_to_threshold_median"]) == 35_000 and row["reached"] == "3/3"  # 30k, 35k, 40k
    assert float(row["end_training_return_mean"]) == pytest.approx(250.0)  # all 40 episodes: 300, 250, 200
    assert float(row["wall_time_s"]) == pytest.approx(11.0)

    normalised = np.concatenate(
        [
            (np.array(v) - report.random_policy_return(e))
            / (report.reward_threshold(e) - report.random_policy_return(e))
            for e, v in finals.items()
        ]
    )
    aggregate = read_csv(tmp_path / "out" / "aggregate.csv")["ppo_clip"]
    assert float(aggregate["iqm"]) == pytest.approx(np.sort(normalised)[1:5].mean())  # 6 scores: the middle 4
    assert float(aggregate["mean"]) == pytest.approx(normalised.mean())
    assert float(aggregate["iqm_ci_low"]) <= float(aggregate["iqm"]) <= float(aggregate["iqm_ci_high"])
    assert 15 < report.random_policy_return("CartPole-v1") < 30  # a random policy balances ~22 steps

    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| ppo_clip | 3 | 1 |" in markdown and "failed: RuntimeError: boom" in markdown
    for env in ("cartpole-v1", "acrobot-v1"):
        assert (tmp_path / "out" / f"{env}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"]({env}.png)" in (tmp_path / "out" / f"{env}.md").read_text()


def test_bad_runs_are_listed_and_the_good_ones_still_reported(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    good = switch_episodes(20)
    write_run(sweep / "good", seed=0, final=500.0, episodes=good, extra_tags=["losses/clipfrac"])
    garbage = write_run(sweep / "garbage-events", seed=1, final=480.0, episodes=good)
    truncated = write_run(sweep / "truncated-events", seed=2, final=490.0, episodes=good)
    write_run(sweep / "failed", seed=3, status="failed: ValueError: Seed must be between 0 and 2**32 - 1")
    write_run(sweep / "killed", seed=4, status="running")
    write_run(sweep / "a2c", algo="a2c", seed=0, final=300.0, episodes=good)
    (write_run(sweep / "bad-summary", seed=5, final=500.0, episodes=good) / "summary.json").write_text('{"algo"')
    next(garbage.glob("events.*")).write_bytes(b"not an events file" * 20)
    events = next(truncated.glob("events.*"))
    events.write_bytes(events.read_bytes()[: events.stat().st_size // 2])

    assert report.main([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert "garbage-events: curve left out: events file unreadable" in err
    assert "truncated-events: curve left out: events file corrupt or truncated: it ends at step" in err
    assert "failed: failed: ValueError: Seed must be" in err
    assert "killed: no summary.json: the job is marked 'running'" in err
    assert "bad-summary: summary.json unreadable" in err
    assert "Tags only some log: losses/clipfrac (ppo_clip)" in err
    row = read_csv(sweep / "report" / "cartpole-v1.csv")["ppo_clip"]
    assert (int(row["runs"]), int(row["failed"]), row["reached"]) == (3, 3, "1/1")
    assert float(row["final_return_mean"]) == pytest.approx(490.0)  # corrupt events keep their final return
    assert read_csv(sweep / "report" / "cartpole-v1.csv")["a2c"]["runs"] == "1"


def test_settings_that_differ_get_their_own_rows(tmp_path):
    for seed, lr in itertools.product((0, 1), ("0.001", "0.0003")):
        write_run(
            tmp_path / f"lr{lr}-{seed}",
            seed=seed,
            final=100.0 * seed + float(lr) * 1e5,
            episodes=switch_episodes(5),
            overrides=[f"algo.learning_rate={lr}"],
        )
    assert report.main([str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "report" / "cartpole-v1.csv")
    assert set(rows) == {"ppo_clip algo.learning_rate=0.001", "ppo_clip algo.learning_rate=0.0003"}
    assert float(rows["ppo_clip algo.learning_rate=0.001"]["final_return_mean"]) == pytest.approx(150.0)


def test_no_runs_or_no_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 1
    assert "no run folders under" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
