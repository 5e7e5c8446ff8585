"""benchmarks/gpu_check.py without a GPU: part (a) compares the CPU with itself, which must agree exactly; the smoke
run goes through every part on the CPU and says so; without --smoke and without CUDA the script refuses."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from algos.registry import ALGORITHMS
from benchmarks.gpu_check import NO_GPU, Difference, compare_losses

REPO = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "benchmarks.gpu_check"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`--smoke`, started once, before the in-process comparison, which it runs beside (it is mostly child
    processes' start-up); (report path, log path, the process)."""
    folder = tmp_path_factory.mktemp("gpu-check")
    out, log = folder / "gpu_check.md", folder / "log.txt"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [*COMMAND, "--smoke", "--out", str(out)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,  # its training children in its process group, ended with it on a failure
        )
    yield out, log, process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.usefixtures("smoke_run")
def test_every_algorithm_agrees_exactly_cpu_with_cpu():
    rows = compare_losses("cpu")
    assert {row.algorithm for row in rows} == set(ALGORITHMS)
    networks = {(row.algorithm, row.network.split(" ")[0]) for row in rows}
    assert {("ppo_clip", "Nature"), ("ppo_clip", "text"), ("grpo", "text")} <= networks
    for row in rows:
        assert row.passed, row
        assert row.loss.abs == row.gradient.abs == 0.0, row
        assert row.tensors > 0 and row.compared, row


def test_a_difference_beyond_the_tolerance_fails():
    difference = Difference()
    difference.add(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
    assert difference.agree and difference.abs == 0.0
    difference.add(torch.tensor([1.0, 2.001]), torch.tensor([1.0, 2.0]))
    assert not difference.agree and 0.0009 < difference.abs < 0.0011 and 0.0004 < difference.rel < 0.0006


def test_smoke_run_writes_a_cpu_report_that_says_smoke(smoke_run):
    out, log, process = smoke_run
    assert process.wait(timeout=300) == 0, log.read_text()[-5000:]
    report = out.read_text()
    assert "SMOKE RUN on the CPU" in report and "CPU only" in report
    assert re.search(r"(\d+) of \1 agree within the tolerance", report)
    for part in ("## Targets", "## (a)", "## (b)", "## (c)"):
        assert part in report
    assert "not measured" not in report and "## Failures" not in report


def test_without_a_gpu_and_without_smoke_it_exits_2():
    done = subprocess.run(
        COMMAND, capture_output=True, text=True, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    )
    assert done.returncode == 2
    assert NO_GPU in done.stderr
