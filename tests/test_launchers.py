"""Sweeps through each launcher (joblib, a real local Ray head, submitit's local executor) with the progress
display, the SLURM preset, and the multi-seed Optuna objective with a resumed study. Tiny budgets throughout."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import report
from tests.test_report import read_csv

REPO = Path(__file__).resolve().parent.parent
TINY = ["algo=a2c", "env=cartpole", "total_timesteps=2048", "eval_episodes=1"]


def run(*args: str, module: str = "algos", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
    )


def finished_runs(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.rglob("summary.json")}


def test_joblib_sweep_shows_progress_and_lists_the_failed_job(tmp_path):
    out = run(
        "-m", *TINY, "seed=0,-1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}"
    )
    assert out.returncode != 0  # Hydra raises the failed job's error once the sweep is over
    assert "[sweep] 2/2 jobs finished: 1 done, 1 failed, 0 running" in out.stderr, out.stderr
    assert "1-a2c-cartpole-seed-1: failed: ValueError: Seed must be between 0 and 2**32 - 1" in out.stderr
    assert list(finished_runs(tmp_path)) == ["0-a2c-cartpole-seed0"]
    assert report.main([str(tmp_path)]) == 0
    row = read_csv(tmp_path / "report" / "cartpole-v1.csv")["a2c"]
    assert (row["runs"], row["failed"]) == ("1", "1")
    assert "1-a2c-cartpole-seed-1: failed: ValueError" in (tmp_path / "report" / "report.md").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ports(*ports: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not open port {port} within {timeout_s} s")
            time.sleep(0.5)


@pytest.fixture
def ray_head():
    """A real local Ray head (`ray start --head --block`), ended with SIGINT to its own process group."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    port, client_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--ray-client-server-port={client_port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # a background pytest ignores SIGINT
    try:
        wait_for_ports(port, client_port)
        yield port, client_port, Path(temp_dir)
    finally:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def ray_logs(temp_dir: Path) -> str:
    """The head's client-server and runtime-env logs, for a failure message."""
    logs = sorted((temp_dir / "session_latest" / "logs").glob("*client_server*.err"))
    logs += sorted((temp_dir / "session_latest" / "logs").glob("runtime_env*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs)


def test_ray_launcher_on_a_local_head_and_as_a_remote_cluster(ray_head, tmp_path):
    port, client_port, temp_dir = ray_head
    local = run(
        "-m",
        *TINY,
        "seed=0,1",
        "hydra/launcher=ray_cluster",
        f"hydra.sweep.dir={tmp_path / 'local'}",
        env={"RAY_ADDRESS": f"127.0.0.1:{port}"},
    )
    assert local.returncode == 0, local.stderr[-3000:]
    assert "[sweep] 2/2 jobs finished: 2 done, 0 failed, 0 running" in local.stderr
    # The remote preset, by configuration alone: Ray client to the head, the project shipped to the workers.
    remote = run(
        "-m",
        *TINY,
        "seed=0,1",
        "hydra/launcher=ray_remote",
        f"hydra.launcher.ray.init.address=ray://127.0.0.1:{client_port}",
        f"hydra.sweep.dir={tmp_path / 'remote'}",
    )
    assert remote.returncode == 0, remote.stderr[-3000:] + ray_logs(temp_dir)
    for name in ("local", "remote"):
        runs = finished_runs(tmp_path / name)
        assert sorted((r["algo"], r["seed"]) for r in runs.values()) == [("a2c", 0), ("a2c", 1)]
    # Same seed, same config: the Ray workers reproduce each other's runs exactly.
    returns = {
        name: {r["seed"]: r["eval"]["returns"] for r in finished_runs(tmp_path / name).values()}
        for name in ("local", "remote")
    }
    assert returns["local"] == returns["remote"]


def test_submitit_local_sweep(tmp_path):
    out = run("-m", *TINY, "seed=0,1", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[sweep] 2/2 jobs finished: 2 done, 0 failed, 0 running" in out.stderr
    assert sorted(r["seed"] for r in finished_runs(tmp_path).values()) == [0, 1]


def test_slurm_preset_sets_partition_time_and_one_cpu_per_job():
    out = run(
        "algo=a2c",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=cpu",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
    )
    assert out.returncode == 0, out.stderr
    launcher = yaml.safe_load(out.stdout)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["cpus_per_task"], launcher["timeout_min"]) == ("cpu", 1, 60)


def test_optuna_search_scores_trials_on_several_seeds_and_resumes(tmp_path):
    optuna = pytest.importorskip("optuna")
    args = [
        "-m",
        "+sweep=ppo_clip_cartpole",
        "total_timesteps=512",
        "eval_episodes=1",
        "seeds=[0,1]",
        "hydra.sweeper.n_trials=2",
        f"run_root={tmp_path}",
    ]
    for _ in range(2):  # the second invocation resumes the study
        out = run(*args, module="algos.sweeps")
        assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "optuna-ppo_clip_cartpole"
    study = optuna.load_study(study_name="ppo_clip_cartpole", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    objectives = []
    for trial in sorted(sweep.glob("trial-*")):
        seed_means = [json.loads((trial / f"seed{s}" / "summary.json").read_text())["eval"]["mean"] for s in (0, 1)]
        objectives.append(json.loads((trial / "objective.json").read_text())["objective"])
        assert objectives[-1] == pytest.approx(np.mean(seed_means))
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(objectives))
