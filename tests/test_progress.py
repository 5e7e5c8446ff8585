"""What a running job shows: a plain progress line where the output is not a terminal, nothing with progress=false."""

import io
import re
import subprocess
import sys
from pathlib import Path

from algos.progress import Progress

REPO = Path(__file__).resolve().parent.parent
RUN = ["algo=ppo_clip", "env=cartpole", "total_timesteps=4096", "eval_episodes=2"]


def run_cli(tmp_path: Path, *overrides: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "algos", *RUN, *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return proc.stderr


def test_the_plain_line_gives_steps_rate_return_and_times():
    stream = io.StringIO()  # not a terminal: plain lines, no bar
    progress = Progress("run-a", total_steps=1000, enabled=True, interval_s=0, stream=stream)
    progress.begin(0)
    progress.update(250, [10.0, 20.0])
    progress.update(500, [])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r"run-a: 500/1,000 steps \(50\.0%\), [\d,]+ steps/s, return 15 \(last 2 episodes\), "
        r"elapsed 0:00:\d\d, remaining [\d:]+",
        lines[1],
    ), lines[1]


def test_lines_come_no_more_often_than_the_interval():
    stream = io.StringIO()
    progress = Progress("run-b", total_steps=1000, enabled=True, interval_s=3600, stream=stream)
    for step in range(0, 1000, 100):
        progress.update(step, [1.0])
    assert len(stream.getvalue().splitlines()) == 1


def test_a_job_writes_plain_progress_lines_named_after_its_run_folder(tmp_path):
    stderr = run_cli(tmp_path, "progress_interval_s=0")
    lines = [line for line in stderr.splitlines() if line.startswith(f"{tmp_path.name}: ")]
    assert lines and "4,096/4,096 steps (100.0%)" in lines[-1] and "steps/s" in lines[-1], stderr


def test_progress_false_shows_no_progress(tmp_path):
    stderr = run_cli(tmp_path, "progress=false", "progress_interval_s=0")
    assert "steps/s" not in stderr and "run folder:" in stderr
