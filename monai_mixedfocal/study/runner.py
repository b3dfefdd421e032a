# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Runs the study's bundle commands one after the other, resumably, with progress and an ETA.

- A finished run (its per-case CSV exists) is skipped; a trained run only re-runs its evaluation; an interrupted
  training is started again and the bundle resumes from its ``checkpoints/last.pt``.
- A failed command is reported with its log path and the other runs go on; the failure is recorded in the run folder
  (``failed.json``) and retried by the next invocation of the study.
- Progress: each run's epoch (read from the bundle's own log lines), its elapsed time and ETA, and the study's ETA.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monai_mixedfocal.study.runs import FAILED_MARKER, TRAINED_MARKER, Run

# MONAI's StatsHandler iteration log: "Epoch: 3/10, Iter: 7/12 -- train_loss: 0.4321"
_ITERATION = re.compile(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+)")
_POLL_SECONDS = 2.0
_MAX_PENDING = 1 << 20  # bytes of an unfinished line read again at most, see _last_epoch


def format_seconds(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; ``3700`` -> ``"1h01m"``."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass
class StudyProgress:
    """Counts and timings of the runs of one invocation, for the study's ETA."""

    total: int
    done: int = 0
    failed: list[Run] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def eta(self, current_fraction: float = 0.0) -> float | None:
        """Seconds left for the runs still to do, from the mean time of the runs executed so far."""
        remaining = self.total - self.done - len(self.failed) - current_fraction
        if self.run_seconds:
            return remaining * sum(self.run_seconds) / len(self.run_seconds)
        elapsed = time.monotonic() - self.started
        return remaining * elapsed / current_fraction if current_fraction > 0.05 else None


def _last_epoch(log: Path, offset: int) -> tuple[tuple[int, int, int, int] | None, int]:
    """The last ``(epoch, epochs, iteration, iterations)`` logged after ``offset``, and the new offset.

    Only complete lines are used: the new offset is the byte offset just after the last line end (``\\n`` or
    ``\\r``) read, so a line still being written (and a UTF-8 character split at the end of the read) is read again,
    whole, by the next call. A stretch of :data:`_MAX_PENDING` bytes or more without a line end is used up to its last
    complete UTF-8 character instead, so that an endless line is not read again and again.

    Args:
        log: the log file.
        offset: byte offset of the first byte not read yet (the previous call's result).

    Returns:
        The last iteration logged in the complete lines after ``offset`` (``None`` if none, or if the log cannot be
        read), and the byte offset to pass to the next call.
    """
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return None, offset
    end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1  # ASCII bytes: never inside a multi-byte character
    if end == 0 and len(data) >= _MAX_PENDING:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        decoder.decode(data, final=False)
        end = len(data) - len(decoder.getstate()[0])  # the bytes of a split last character are kept for later
    matches = _ITERATION.findall(data[:end].decode("utf-8", errors="replace"))
    last = tuple(int(v) for v in matches[-1]) if matches else None
    return last, offset + end  # type: ignore[return-value]


def run_logged(
    cmd: Sequence[str],
    log: Path,
    on_progress: Callable[[tuple[int, int, int, int]], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``cmd`` with its output appended to ``log``; call ``on_progress`` whenever a new epoch shows in the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        offset = out.tell()
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        seen_epoch = None
        try:
            while process.poll() is None:
                time.sleep(_POLL_SECONDS)
                last, offset = _last_epoch(log, offset)
                if last is not None and on_progress is not None and last[0] != seen_epoch:
                    seen_epoch = last[0]
                    on_progress(last)
        except BaseException:  # KeyboardInterrupt: stop the child too, the run resumes next time
            process.terminate()
            process.wait(timeout=60)
            raise
    return process.returncode


def _record_failure(run: Run, step: str, returncode: int, log: Path) -> None:
    marker = run.root / FAILED_MARKER
    marker.write_text(json.dumps({"run": run.name, "step": step, "returncode": returncode, "log": str(log)}, indent=2))


def execute_runs(runs: Sequence[Run], echo: Callable[[str], None] = print) -> StudyProgress:
    """Execute every unfinished run; returns the counts (failed runs are listed, not raised).

    Args:
        runs: the study's runs (see :func:`monai_mixedfocal.study.runs.plan_runs`).
        echo: where progress lines go.
    """
    progress = StudyProgress(total=len(runs))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for index, run in enumerate(runs, start=1):
        tag = f"[{index}/{len(runs)}] {run.name}"
        changes = run.settings_changes()
        if changes:
            echo(
                f"{tag}: WARNING: made with other settings ({'; '.join(changes)}); kept as it is (delete {run.root} "
                "to run it again with the current ones)"
            )
        if run.is_finished:
            progress.done += 1
            echo(f"{tag}: finished earlier, skipped ({run.per_case_csv})")
            continue
        run.root.mkdir(parents=True, exist_ok=True)
        (run.root / FAILED_MARKER).unlink(missing_ok=True)
        if not run.is_trained and not run.resume_checkpoint.is_file():
            run.record_settings()  # a training from scratch: these settings are the run's
        start = time.monotonic()

        def report(state: tuple[int, int, int, int], tag: str = tag, start: float = start) -> None:
            epoch, epochs = state[0], state[1]
            fraction = (epoch - 1 + state[2] / max(state[3], 1)) / max(epochs, 1)
            elapsed = time.monotonic() - start
            run_eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
            study_eta = progress.eta(fraction)
            echo(
                f"{tag}: epoch {epoch}/{epochs}, {format_seconds(elapsed)} elapsed"
                + (f", run ETA {format_seconds(run_eta)}" if run_eta is not None else "")
                + (f", study ETA {format_seconds(study_eta)}" if study_eta is not None else "")
            )

        steps = [] if run.is_trained else [("training", run.train_command(), run.train_log, report)]
        steps.append(("evaluation", run.evaluate_command(), run.evaluate_log, None))
        echo(f"{tag}: {'resuming ' if run.resume_checkpoint.is_file() else ''}{steps[0][0]} ...")
        for step, cmd, log, on_progress in steps:
            code = run_logged(cmd, log, on_progress, env)
            if code != 0:
                _record_failure(run, step, code, log)
                progress.failed.append(run)
                echo(f"{tag}: {step} FAILED (exit code {code}); see {log}")
                break
            if step == "training":
                (run.root / TRAINED_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
                echo(f"{tag}: evaluation ...")
        else:
            if not run.is_finished:
                _record_failure(run, "evaluation", 0, run.evaluate_log)
                progress.failed.append(run)
                echo(f"{tag}: evaluation wrote no {run.per_case_csv.name}; see {run.evaluate_log}")
                continue
            progress.done += 1
            progress.run_seconds.append(time.monotonic() - start)
            echo(f"{tag}: done in {format_seconds(progress.run_seconds[-1])}")
    return progress
