"""Tables with confidence intervals and learning curves, read back from run folders.

    python -m benchmarks.report <sweep folder> [<more folders> ...] [--out DIR]

A run is a folder holding summary.json, config.yaml or Hydra's .hydra/ (the innermost such folder: a multi-seed
trial's seed<s>/ folders are its runs). Finished runs (summary.json) give the final return, steps, wall time and
steps per second; their TensorBoard events give the training curve (`charts/episodic_return`, x = environment
steps). Runs of one algorithm with different command-line settings (a sweep over `algo.learning_rate`, say) get
separate rows, labelled with the settings that differ. Written to --out (default: <first folder>/report):

    <env>.md, <env>.csv, <env>.png   per environment: algorithm, runs, failed, final return mean and 95%
                                     bootstrap CI, steps to the reward threshold, wall time, SPS; learning curves
    aggregate.md, aggregate.csv      normalised scores over environments: IQM and mean with stratified
                                     bootstrap CIs (Agarwal et al. 2021)
    report.md                        all of it, and every run left out or partly used, with the reason

Failed or unfinished runs (no summary.json) are counted in the `failed` column and listed with the job's own
status where a sweep recorded one (algos/sweeps.py); a finished run whose events file is corrupt or truncated
keeps its final return and loses its curve, and says so.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import yaml

from benchmarks import stats

ORDER = ["pg", "a2c", "sb3_a2c", "trpo", "sb3_trpo", "ppo_penalty", "ppo_clip", "sb3_ppo"]  # peers beside ours
IDENTITY_KEYS = {"algo", "env", "seed", "seeds"}  # overrides that name the run rather than vary its settings
WINDOW = 10  # training episodes averaged for the curves and for steps-to-threshold
END_WINDOW = 100  # training episodes averaged for the score at the end of training, as published curves report
RANDOM_EPISODES = 100
RETURN_TAG, EVAL_TAG = "charts/episodic_return", "eval/mean_return"
SUMMARY_KEYS = {"algo", "env", "total_env_steps", "wall_clock_s", "steps_per_second", "eval"}


class ReportError(Exception):
    """Nothing to report on; the message says what was looked for."""


# --------------------------------------------------------------------------------------------------- reading
@dataclass
class Run:
    folder: Path
    algo: str
    env: str
    seed: int | None
    summary: dict | None = None
    episodes: tuple[np.ndarray, np.ndarray] | None = None  # (env step, return) of each finished training episode
    tags: frozenset[str] = frozenset()
    overrides: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # why the run, or its curve, is left out
    label: str = ""


def is_run_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("summary.json", "config.yaml", ".hydra"))


def find_run_folders(root: Path) -> list[Path]:
    candidates = [
        d
        for d in [root, *root.rglob("*")]
        if d.is_dir() and ".hydra" not in d.relative_to(root).parts and is_run_folder(d)
    ]
    return sorted(d for d in candidates if not any(d in other.parents for other in candidates))


def load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        return None


def job_overrides(folder: Path) -> dict[str, str]:
    """The command-line settings of the Hydra job that made this run (a multi-seed trial's are one level up)."""
    for candidate in (folder, folder.parent):
        overrides = load_yaml(candidate / ".hydra" / "overrides.yaml")
        if overrides is not None:
            pairs = [o.lstrip("+~").split("=", 1) for o in overrides if "=" in o]
            return {k: v for k, v in pairs if k not in IDENTITY_KEYS and not k.startswith("hydra")}
    return {}


def failure_reason(folder: Path) -> str:
    status_file = folder / "job_status.txt"  # written by each sweep job (algos/sweeps.py)
    status = status_file.read_text().strip() if status_file.exists() else None
    if status is None:
        return "no summary.json: failed or unfinished"
    if status.startswith("failed"):
        return status
    return f"no summary.json: the job is marked '{status}' (still running, or killed before it finished)"


def read_episodes(folder: Path, summary: dict) -> tuple[tuple[np.ndarray, np.ndarray], frozenset[str]]:
    """The training episodes from the run's TensorBoard events; ValueError says why they cannot be used."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(folder.glob("events.out.tfevents.*")):
        raise ValueError("no TensorBoard events file")
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = frozenset(accumulator.Tags()["scalars"])
    if not tags:
        raise ValueError("events file unreadable: no scalars in it (corrupt, or not an events file)")
    if RETURN_TAG not in tags:
        raise ValueError(
            f"no {RETURN_TAG} in its events: no training episode finished, or not one of our runs "
            f"(tags: {', '.join(sorted(tags))})"
        )
    scalars = accumulator.Scalars(RETURN_TAG)
    if EVAL_TAG not in tags:
        raise ValueError(
            f"events file corrupt or truncated: it ends at step {scalars[-1].step:,}, before the final "
            f"{EVAL_TAG} of a run that reached {summary['total_env_steps']:,} steps"
        )
    steps = np.array([s.step for s in scalars], dtype=float)
    returns = np.array([s.value for s in scalars], dtype=float)
    order = np.argsort(steps, kind="stable")
    return (steps[order], returns[order]), tags


def read_run(folder: Path) -> Run:
    config = load_yaml(folder / "config.yaml") or load_yaml(folder / ".hydra" / "config.yaml") or {}
    summary, problem = None, None
    if (folder / "summary.json").exists():
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except json.JSONDecodeError as err:
            problem = f"summary.json unreadable ({err})"
        missing = SUMMARY_KEYS - set(summary or {})
        if summary is not None and missing:
            summary, problem = None, f"summary.json lacks {', '.join(sorted(missing))}"
    if summary is not None:
        run = Run(folder, summary["algo"], summary["env"], summary.get("seed"), summary=summary)
        try:
            run.episodes, run.tags = read_episodes(folder, summary)
        except Exception as err:  # any unreadable events file: keep the final return, lose the curve, say why
            run.problem = f"curve left out: {err}"
    else:
        algo = (config.get("peer") or {}).get("name") or (config.get("algo") or {}).get("name", "?")
        env = (config.get("env") or {}).get("id", "?")
        run = Run(folder, algo, env, config.get("seed"))
        run.problem = problem or failure_reason(folder)
    run.overrides = job_overrides(folder)
    return run


def short(value: str) -> str:
    try:
        return format(float(value), ".4g")
    except ValueError:
        return value


def label_variants(runs: list[Run]) -> None:
    """Label = algorithm, plus the command-line settings that differ between that algorithm's runs (numbers to 4
    significant digits where that keeps the labels apart, as for an Optuna study's sampled values)."""
    for algo in {r.algo for r in runs}:
        group = [r for r in runs if r.algo == algo]
        keys = {k for r in group for k in r.overrides}
        varying = sorted(k for k in keys if len({r.overrides.get(k) for r in group}) > 1)
        full = [" ".join([algo, *(f"{k}={r.overrides.get(k, '-')}" for k in varying)]) for r in group]
        brief = [" ".join([algo, *(f"{k}={short(r.overrides.get(k, '-'))}" for k in varying)]) for r in group]
        for r, label in zip(group, brief if len(set(brief)) == len(set(full)) else full):
            r.label = label


def read_runs(roots: list[Path]) -> list[Run]:
    folders = [f for root in roots for f in find_run_folders(root)]
    if not folders:
        raise ReportError(
            f"no run folders under {', '.join(map(str, roots))}: a run folder holds summary.json, "
            f"config.yaml or .hydra/ (give a sweep folder such as results/runs/multirun-<time>)"
        )
    runs = [read_run(f) for f in folders]
    label_variants(runs)
    return runs


def label_order(label: str) -> tuple[int, str]:
    algo = label.split(" ")[0]
    return (ORDER.index(algo) if algo in ORDER else len(ORDER), label)


# --------------------------------------------------------------------------------------------------- measures
def reward_threshold(env_id: str) -> float | None:
    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None


@functools.cache
def random_policy_return(env_id: str) -> float:
    """Mean return of a uniform random policy over RANDOM_EPISODES episodes (episode i reset with seed i)."""
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for episode in range(RANDOM_EPISODES):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def trailing_mean(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean of the last `window` values at each position (fewer at the start)."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


def steps_to_threshold(steps: np.ndarray, returns: np.ndarray, threshold: float, window: int = WINDOW) -> float:
    """First env step at which the mean of the last `window` training episodes reaches `threshold` (inf: never)."""
    if len(returns) < window:
        return np.inf
    full = np.convolve(returns, np.ones(window) / window, mode="valid")  # full[i]: episodes i .. i + window - 1
    hits = np.flatnonzero(full >= threshold)
    return float(steps[hits[0] + window - 1]) if hits.size else np.inf


def curve_on_grid(steps: np.ndarray, returns: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The trailing mean as of the last episode finished at or before each grid step."""
    index = np.searchsorted(steps, grid, side="right") - 1
    return trailing_mean(returns)[np.clip(index, 0, None)]


# --------------------------------------------------------------------------------------------------- tables
def env_row(label: str, runs: list[Run], threshold: float | None) -> dict:
    done = [r for r in runs if r.summary is not None]
    summaries = [r.summary for r in done if r.summary is not None]  # the same runs, typed as finished
    finals = np.array([s["eval"]["mean"] for s in summaries])
    row = {"algorithm": label, "runs": len(done), "failed": len(runs) - len(done)}
    if not done:
        return row
    low, high = stats.stratified_bootstrap_ci([finals], stats.mean) if len(done) > 1 else (np.nan, np.nan)
    row.update(
        {
            "env_steps": np.mean([s["total_env_steps"] for s in summaries]),
            "final_return_mean": finals.mean(),
            "ci_low": low,
            "ci_high": high,
        }
    )
    curves = [r.episodes for r in done if r.episodes is not None]
    if curves:
        row["end_training_return_mean"] = np.mean([returns[-END_WINDOW:].mean() for _, returns in curves])
    if threshold is not None and curves:
        hits = np.array([steps_to_threshold(steps, returns, threshold) for steps, returns in curves])
        row.update(
            {"steps_to_threshold_median": float(np.median(hits)), "reached": f"{np.isfinite(hits).sum()}/{len(hits)}"}
        )
    row.update(
        {
            "wall_time_s": np.mean([s["wall_clock_s"] for s in summaries]),
            "steps_per_second": np.mean([s["steps_per_second"] for s in summaries]),
            "per_seed_final_returns": " ".join(f"{r.seed}:{s['eval']['mean']:g}" for r, s in zip(done, summaries)),
        }
    )
    return row


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and np.isinf(value):
        return "not reached"
    return format(value, spec)


def env_markdown(env_id: str, rows: list[dict], threshold: float | None, image: str | None) -> str:
    target = f"steps to {threshold:g}" if threshold is not None else "steps to threshold"
    lines = [
        f"## {env_id}",
        "",
        "Final return: mean over seeds of each run's final evaluation (summary.json `eval.mean`: deterministic "
        "policy); 95% CI: percentile bootstrap over seeds, 10,000 resamples (blank with one seed). "
        + (
            f"Steps to {threshold:g} (the registered reward threshold): first environment step at which the "
            f"mean of the last {WINDOW} training episodes reaches it, median over seeds (runs that never reach "
            f"it count as never); reached: seeds that did. "
            if threshold is not None
            else "No registered reward threshold, so no steps-to-threshold. "
        )
        + f"End of training: mean over seeds of each run's last {END_WINDOW} training episodes (the return the "
        "environment logs, e.g. Atari's raw whole-game score), the figure published learning curves end on. "
        + "Wall time and SPS: training, mean over seeds. Failed: runs without summary.json (listed below).",
        "",
        f"| algorithm | runs | failed | env steps | final return | 95% CI | end of training | {target} | reached "
        f"| wall time (s) | SPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = f"[{fmt(r.get('ci_low'), '.1f')}, {fmt(r.get('ci_high'), '.1f')}]" if r.get("runs", 0) > 1 else ""
        lines.append(
            f"| {r['algorithm']} | {r['runs']} | {r['failed']} | {fmt(r.get('env_steps'), ',.0f')} | "
            f"{fmt(r.get('final_return_mean'), '.1f')} | {ci} | "
            f"{fmt(r.get('end_training_return_mean'), '.1f')} | "
            f"{fmt(r.get('steps_to_threshold_median'), ',.0f')} | {r.get('reached', '')} | "
            f"{fmt(r.get('wall_time_s'), '.1f')} | {fmt(r.get('steps_per_second'), ',.0f')} |"
        )
    if image:
        lines += ["", f"![{env_id} learning curves]({image})"]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def final_return(run: Run) -> float:
    """The final evaluation's mean return of a finished run."""
    if run.summary is None:
        raise ReportError(f"{run.folder} has no summary.json: the run did not finish")
    return run.summary["eval"]["mean"]


def normalised_scores(runs: list[Run], env_id: str) -> np.ndarray:
    """(final return - random policy's) / (reward threshold - random policy's): 0 = random, 1 = threshold."""
    random_score = random_policy_return(env_id)
    threshold = reward_threshold(env_id)
    if threshold is None:
        raise ReportError(f"{env_id} has no registered reward threshold to normalise scores by")
    return np.array([(final_return(r) - random_score) / (threshold - random_score) for r in runs])


def aggregate_rows(runs: list[Run], env_ids: list[str]) -> list[dict]:
    rows = []
    for label in sorted({r.label for r in runs}, key=label_order):
        per_env = {e: [r for r in runs if r.label == label and r.env == e and r.summary is not None] for e in env_ids}
        scores = [normalised_scores(group, e) for e, group in per_env.items() if group]
        if not scores:
            continue
        pooled = np.concatenate(scores)
        rows.append(
            {
                "algorithm": label,
                "environments": " ".join(e for e, g in per_env.items() if g),
                "runs": len(pooled),
                "iqm": float(stats.iqm(pooled)),
                **dict(zip(("iqm_ci_low", "iqm_ci_high"), stats.stratified_bootstrap_ci(scores, stats.iqm))),
                "mean": float(pooled.mean()),
                **dict(zip(("mean_ci_low", "mean_ci_high"), stats.stratified_bootstrap_ci(scores, stats.mean))),
            }
        )
    return rows


def aggregate_markdown(rows: list[dict], env_ids: list[str]) -> str:
    lines = [
        "## Aggregate over environments",
        "",
        "Normalised score = (final return - random policy's return) / (reward threshold - random policy's "
        "return): 0 is a uniform random policy, 1 the registered reward threshold. IQM: mean of the middle 50% "
        "of all runs' normalised scores pooled over environments; 95% CIs: stratified percentile bootstrap "
        "(runs resampled within each environment, 10,000 resamples), after Agarwal et al. 2021. Compare rows "
        "that cover the same environments.",
        "",
        "| environment | random policy | reward threshold |",
        "|---|---|---|",
    ]
    lines += [f"| {e} | {random_policy_return(e):.1f} | {reward_threshold(e):g} |" for e in env_ids]
    lines += ["", "| algorithm | environments | runs | IQM | 95% CI | mean | 95% CI |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['algorithm']} | {r['environments']} | {r['runs']} | {r['iqm']:.3f} | "
        f"[{r['iqm_ci_low']:.3f}, {r['iqm_ci_high']:.3f}] | {r['mean']:.3f} | "
        f"[{r['mean_ci_low']:.3f}, {r['mean_ci_high']:.3f}] |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- curves
def plot_env(env_id: str, runs: list[Run], colors: dict[str, str], path: Path) -> bool:
    """Mean training curve per algorithm with its 95% bootstrap band over seeds; False if no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    plotted = False
    for label in sorted({r.label for r in runs}, key=label_order):
        curves = [r.episodes for r in runs if r.label == label and r.episodes is not None]
        if not curves:
            continue
        start, end = max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves)  # steps every seed covers
        grid = np.linspace(start, end, 200)
        values = np.stack([curve_on_grid(s, v, grid) for s, v in curves])
        low, high = stats.bootstrap_mean_bands(values)
        style = "--" if label.startswith("sb3") else "-"
        ax.plot(grid, values.mean(0), style, color=colors[label], label=f"{label} ({len(curves)} seeds)")
        ax.fill_between(grid, low, high, color=colors[label], alpha=0.2, linewidth=0)
        plotted = True
    if plotted:
        threshold = reward_threshold(env_id)
        if threshold is not None:
            ax.axhline(threshold, color="grey", linewidth=0.8, linestyle=":")
        ax.set(title=env_id, xlabel="environment steps", ylabel=f"training return (mean of last {WINDOW} episodes)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return plotted


def label_colors(labels: list[str]) -> dict[str, str]:
    import matplotlib

    # the registry is typed as Colormap; tab10 and tab20 are ListedColormaps, whose .colors is the list of colours
    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"].colors  # type: ignore[attr-defined]
    return {
        label: matplotlib.colors.to_hex(palette[i % len(palette)])
        for i, label in enumerate(sorted(labels, key=label_order))
    }


# --------------------------------------------------------------------------------------------------- report
def tag_differences(runs: list[Run]) -> str | None:
    tags_by_algo: dict[str, set[str]] = {}
    for r in runs:
        if r.tags:
            tags_by_algo.setdefault(r.algo, set()).update(r.tags)
    if len(tags_by_algo) < 2:
        return None
    shared = set.intersection(*tags_by_algo.values())
    partial = sorted(set.union(*tags_by_algo.values()) - shared)
    if not partial:
        return None
    owners = [
        f"{t} ({', '.join(sorted((a for a, ts in tags_by_algo.items() if t in ts), key=label_order))})" for t in partial
    ]
    return (
        f"Algorithms log different TensorBoard tags, so only what every run has is compared: summary.json for "
        f"the tables and {RETURN_TAG} for the curves. Tags only some log: {'; '.join(owners)}."
    )


def write_report(roots: list[Path], out: Path, made_by: str, note: str | None = None) -> list[str]:
    """Write every file; returns the notes on runs left out or partly used (also in report.md)."""
    runs = read_runs(roots)
    out.mkdir(parents=True, exist_ok=True)
    colors = label_colors(sorted({r.label for r in runs}))
    env_ids = sorted({r.env for r in runs})
    problems = [f"{r.folder}: {r.problem}" for r in runs if r.problem]
    sections = []
    for env_id in env_ids:
        env_runs = [r for r in runs if r.env == env_id]
        threshold = reward_threshold(env_id)
        rows = [
            env_row(label, [r for r in env_runs if r.label == label], threshold)
            for label in sorted({r.label for r in env_runs}, key=label_order)
        ]
        slug = env_id.replace("/", "_").lower()
        image = f"{slug}.png" if plot_env(env_id, env_runs, colors, out / f"{slug}.png") else None
        markdown = env_markdown(env_id, rows, threshold, image)
        (out / f"{slug}.md").write_text(markdown)
        write_csv(out / f"{slug}.csv", rows)
        sections.append(markdown)

    normalisable = [
        e
        for e in env_ids
        if e != "?" and reward_threshold(e) is not None and any(r.env == e and r.summary is not None for r in runs)
    ]
    problems += [
        f"{e}: left out of the aggregate: no registered reward threshold to normalise by"
        for e in env_ids
        if e not in normalisable
    ]
    if normalisable:
        rows = aggregate_rows(runs, normalisable)
        markdown = aggregate_markdown(rows, normalisable)
        (out / "aggregate.md").write_text(markdown)
        write_csv(out / "aggregate.csv", rows)
        sections.append(markdown)

    done = sum(r.summary is not None for r in runs)
    header = [
        f"# Report: {', '.join(map(str, roots))}",
        "",
        f"Made by: `{made_by}`  ",
        f"{len(runs)} runs: {done} finished, {len(runs) - done} failed or unfinished.",
        "",
    ]
    if note:
        header += [note, ""]
    notes = [n for n in [tag_differences(runs)] if n]
    if notes:
        header += [*notes, ""]
    if problems:
        header += ["Runs left out or partly used:", "", *[f"- {p}" for p in problems], ""]
    (out / "report.md").write_text("\n".join(header) + "\n" + "\n".join(sections))
    return notes + problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders")
    parser.add_argument("--out", type=Path, help="where the tables and plots go (default: <first folder>/report)")
    parser.add_argument("--made-by", help="the command to name in report.md (default: this one)")
    parser.add_argument("--note", help="a paragraph for report.md's header (how and where the runs were made)")
    args = parser.parse_args(argv)
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    missing = [f for f in args.folders if not f.is_dir()]
    if missing:
        print(f"report: error: not a folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    out = args.out or args.folders[0] / "report"
    made_by = args.made_by or shlex.join(["python", "-m", "benchmarks.report", *(argv or sys.argv[1:])])
    try:
        notes = write_report(args.folders, out, made_by, args.note)
    except ReportError as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"report: {note}", file=sys.stderr)
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
