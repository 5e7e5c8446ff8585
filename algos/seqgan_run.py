"""SeqGAN's run plumbing (algos/seqgan.py holds its math): the run folder and checkpoint of Algorithm 1's three
networks, its schedule as resumable units, and the evaluation of the generator's samples."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from algos.run_folder import RunFolder
from algos.settings import Config
from core.errors import CheckpointError, ConfigError
from envs.sequences import Generator, SequenceTask, generate

log = logging.getLogger("tokengym")


def schedule(pretrain_epochs: int, dis_pretrain_rounds: int, adversarial_epochs: int) -> list[tuple[str, int]]:
    """Algorithm 1 as a flat list of units, so a resumed run continues at the unit after its checkpoint."""
    return (
        [("mle", e) for e in range(pretrain_epochs)]
        + [("dis", r) for r in range(dis_pretrain_rounds)]
        + [("adversarial", k) for k in range(adversarial_epochs)]
    )


class SeqGANRun(RunFolder):
    """The run folder of SeqGAN; the checkpoint holds the three networks, their optimisers and the metric
    history. The x-axis counts the units of Algorithm 1 done: MLE epochs, then discriminator pre-training
    rounds, then adversarial epochs."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        pretraining_units: int,
    ):
        super().__init__(config, "seqgan", run_dir)
        self.modules, self.optimizers, self.pretraining_units = modules, optimizers, pretraining_units
        self.on_gpu = config.placement.device.type == "cuda"
        self.history: list[dict] = []

    def start(self, init_from: str | None) -> int:
        """The unit to run first: 0 for a new run, the checkpoint's next unit when resuming, the first
        adversarial unit when starting from another run's pre-training."""
        next_unit, resuming = 0, self.checkpoint_path.exists()
        if resuming:
            checkpoint = self._restore(self.checkpoint_path)
            torch.set_rng_state(checkpoint["torch_rng"])
            if checkpoint.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(checkpoint["cuda_rng"], self.config.placement.device)
            next_unit, self.wall_before = checkpoint["meta"]["next_unit"], checkpoint["meta"]["wall_clock_s"]
            log.info("resuming %s at unit %d", self.checkpoint_path, next_unit)
        elif init_from is not None:
            next_unit = self._start_from_pretraining(Path(init_from))
        self.open(purge_step=next_unit + 1 if resuming else None)
        if init_from is not None and not resuming:  # the pre-training curve, so this run's plots are whole
            for entry in self.history:
                self.log(
                    entry["step"],
                    {f"seqgan/{k}": v for k, v in entry.items() if k not in ("step", "phase", "wall_clock_s")},
                )
        return next_unit

    def _start_from_pretraining(self, folder: Path) -> int:
        path = folder / "checkpoint.pt"
        if not path.exists():
            raise ConfigError(
                f"algo.init_from={folder}: no checkpoint.pt there; give a SeqGAN run "
                f"folder that finished pre-training (e.g. one run with adversarial_epochs=0)"
            )
        units = self._restore(path)["meta"]["next_unit"]
        if units != self.pretraining_units:
            raise ConfigError(
                f"algo.init_from={folder}: its checkpoint is at unit {units}, not at the end of pre-training "
                f"(unit {self.pretraining_units}); give a run made with algo.adversarial_epochs=0 and this run's "
                f"pretrain_epochs and dis_pretrain_rounds"
            )
        log.info("starting adversarial training from the pre-training in %s", folder)
        return self.pretraining_units

    def _restore(self, path: Path) -> dict:
        checkpoint = self.load(path)
        try:
            for name, module in self.modules.items():
                module.load_state_dict(checkpoint["modules"][name])
        except RuntimeError as err:
            raise CheckpointError(
                f"{path} was saved by networks of another shape ({str(err)[:300]}); use that run's own algo settings"
            ) from None
        missing = sorted(set(self.optimizers) - set(checkpoint["optimizers"]))
        if missing:
            raise CheckpointError(
                f"{path} holds no state for the optimiser(s) {', '.join(missing)}: it was "
                f"written by another version of algos/seqgan.py; start a new run"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        self.history = checkpoint["history"]
        return checkpoint

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.check_finite(f"step {step}", scalars)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def record(self, step: int, phase: str, metrics: dict[str, float], samples: list[str] | None) -> None:
        self.history.append({"step": step, "phase": phase, "wall_clock_s": round(self.wall_clock(), 1), **metrics})
        self.log(step, {f"seqgan/{k}": v for k, v in metrics.items()})
        if samples:
            self.writer.add_text("seqgan/samples", "\n".join(f"- `{s}`" for s in samples), step)
        log.info("%s step %d: %s", phase, step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def end_unit(self, next_unit: int, total_units: int) -> None:
        if self.checkpoint_due():
            self.save(next_unit)
        self.stop_if_signalled("unit", next_unit, total_units)

    def save(self, next_unit: int) -> None:
        self.write_checkpoint(
            {"next_unit": next_unit},
            {
                "modules": {name: m.state_dict() for name, m in self.modules.items()},
                "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.config.placement.device) if self.on_gpu else None,
                "history": self.history,
            },
        )

    def finish(self, total_units: int, task: SequenceTask) -> dict:
        self.save(total_units)
        final = self.history[-1]
        return self.write_summary(
            {
                "wall_clock_s": round(self.wall_clock(), 1),
                "final": final,
                "history": self.history,
                "eval": {
                    "mean": final[task.headline],
                    "metric": task.headline,
                    "lower_is_better": task.lower_is_better,
                },
            }
        )


def evaluate_generator(run: SeqGANRun, generator: Generator, task: SequenceTask, step: int, phase: str) -> None:
    """Metrics of fresh samples, drawn from their own random stream so that evaluating leaves training (and a
    resumed run) unchanged."""
    with torch.random.fork_rng():
        torch.manual_seed(run.config.run.seed * 100_003 + step)
        samples = generate(generator, task.num_eval, task.length).cpu()  # the task's metrics run on the CPU
    shown = task.decode(samples[:10]) if task.decode else [" ".join(map(str, s)) for s in samples[:3].tolist()]
    run.record(step, phase, task.metrics(samples), shown)
