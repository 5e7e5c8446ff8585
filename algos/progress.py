"""What a running job shows: in a terminal, a live tqdm bar (environment steps of the total, steps per second, the
recent mean episodic return, elapsed and remaining time); elsewhere (a SLURM log, a multirun worker, a pipe) one
plain line every `interval_s` seconds, prefixed with the run folder so that interleaved jobs stay readable;
nothing with `progress=false`. tqdm rather than rich: it is already installed with transformers and draws one
line, which is all a training loop needs."""

from __future__ import annotations

import sys
import time
from collections import deque
from datetime import timedelta
from typing import TextIO

from tqdm import tqdm

RECENT_EPISODES = 20  # episodes averaged for the return shown


class Progress:
    def __init__(self, name: str, total_steps: int, enabled: bool, interval_s: float, stream: TextIO | None = None):
        self.name, self.total, self.enabled, self.interval_s = name, total_steps, enabled, interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.bar: tqdm | None = None
        self.start_step, self.start_time, self.last_line = 0, time.perf_counter(), float("-inf")
        if enabled and self.stream.isatty():
            self.bar = tqdm(
                total=total_steps, unit="step", unit_scale=True, dynamic_ncols=True, file=self.stream, desc=name
            )

    def begin(self, step: int) -> None:
        """Training starts (or resumes) at environment step `step`; rates count from here."""
        self.start_step, self.start_time = step, time.perf_counter()
        if self.bar is not None:
            self.bar.reset(total=self.total)
            self.bar.update(step)

    def update(self, step: int, episode_returns: list[float]) -> None:
        if not self.enabled:
            return
        self.returns.extend(episode_returns)
        recent = f"{sum(self.returns) / len(self.returns):.4g}" if self.returns else "n/a"
        if self.bar is not None:
            self.bar.set_postfix_str(f"return {recent}", refresh=False)
            self.bar.update(step - self.bar.n)
        elif time.perf_counter() - self.last_line >= self.interval_s:
            self.last_line = time.perf_counter()
            print(self.line(step, recent), file=self.stream, flush=True)

    def line(self, step: int, recent: str) -> str:
        elapsed = time.perf_counter() - self.start_time
        rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
        remaining = timedelta(seconds=round(max(self.total - step, 0) / rate)) if rate > 0 else "?"
        return (
            f"{self.name}: {step:,}/{self.total:,} steps ({100 * step / self.total:.1f}%), {rate:,.0f} steps/s, "
            f"return {recent} (last {len(self.returns)} episodes), elapsed "
            f"{timedelta(seconds=round(elapsed))}, remaining {remaining}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
