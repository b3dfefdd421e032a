# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Runs the study's bundle commands one after the other, resumably, with progress and an ETA.

- A finished run (its per-case CSV exists and is complete) is skipped; a trained run (``trained.ok``, or a
  ``checkpoints/last.pt`` that records the end of this run's schedule beside ``models/model.pt``) only runs its
  evaluation; an interrupted training is started again and the bundle resumes from its ``checkpoints/last.pt``.
- A failed command is reported with its log path (and the signal that killed it) and the other runs go on; the failure
  is recorded in the run folder (``failed.json``) and retried by the next invocation of the study.
- On Linux a bundle command is stopped (SIGTERM) when the study process dies, even by SIGKILL, so that no training goes
  on alone in a run folder that the next invocation of the study uses.
- Progress: each run's epoch (read from the bundle's own log lines), its elapsed time and ETA, and the study's ETA.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monai_mixedfocal.bundle.output_dirs import lock_training, release_training_lock
from monai_mixedfocal.study.log_error import log_error
from monai_mixedfocal.study.runs import FAILED_MARKER, TRAINED_MARKER, Run

# MONAI's StatsHandler iteration log: "Epoch: 3/10, Iter: 7/12 -- train_loss: 0.4321"
_ITERATION = re.compile(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+)")
_POLL_SECONDS = 2.0
_MAX_PENDING = 1 << 20  # bytes of an unfinished line read again at most, see _last_epoch
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


def describe_returncode(code: int) -> str:
    """A command's return code in words: ``"exit code 1"``; ``-9`` -> ``"killed by SIGKILL (out of memory?)"``."""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"killed by signal {-code}"
    return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")


def _stop_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when the process starting it dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so that a killed study leaves no bundle command running; ``None`` elsewhere.

    The signal comes when the thread that started the child ends: :func:`run_logged` waits for its child in that thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    option, sigterm = ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM)  # made before the fork

    def stop_with_parent() -> None:  # runs in the child between fork and exec: as little work as possible
        prctl(option, sigterm)
        if os.getppid() != parent:  # the parent died before the prctl call
            os.kill(os.getpid(), signal.SIGTERM)

    return stop_with_parent


def run_logged(
    cmd: Sequence[str],
    log: Path,
    on_progress: Callable[[tuple[int, int, int, int]], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``cmd`` with its output appended to ``log``; call ``on_progress`` whenever a new epoch shows in the log.

    The child is stopped when this function is interrupted (e.g. Ctrl-C) and, on Linux, when this process dies.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        offset = out.tell()
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_stop_with_parent())
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


def _another_training(run: Run) -> str | None:
    """The bundle's refusal (``another training (pid N) is running in ...``) when another process trains ``run`` (it
    holds ``checkpoints/.lock``, :func:`~monai_mixedfocal.bundle.output_dirs.lock_training`), else ``None``. The lock
    is taken and released at once: the bundle's training takes it again."""
    try:
        lock_training(run.resume_checkpoint, run.root)
    except RuntimeError as err:
        return str(err)
    except OSError:  # a lock file that cannot be made: the bundle's own check names it
        return None
    release_training_lock(run.resume_checkpoint)
    return None


def _record_failure(run: Run, step: str, returncode: int, log: Path, error: str | None = None) -> None:
    record = {"run": run.name, "step": step, "returncode": returncode, "log": str(log), "error": error}
    (run.root / FAILED_MARKER).write_text(json.dumps(record, indent=2))


def _start_message(run: Run, kind: str) -> str:
    """What the run does first, for the progress line (``kind`` as :meth:`Run.training_start`, or ``"trained"``)."""
    record = run.recorded_training()
    done = f"epoch {record['epoch']} of {record['max_epochs']}" if record else ""
    if kind == "trained":
        marker = (run.root / TRAINED_MARKER).is_file()
        return "evaluation" if marker or not record else f"training finished earlier ({done}), evaluation"
    if kind == "resume":
        return f"resuming training after {done}"
    if kind == "over":
        finished = record is not None and record["epoch"] >= record["max_epochs"]
        held = "a finished run" if finished else "a run with no epoch left to train in this schedule"
        return f"training from scratch ({run.resume_checkpoint.name} holds {held}, {done})"
    if kind == "unknown":
        return f"training (the bundle resumes {run.resume_checkpoint} if it holds an interrupted run)"
    return "training"


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
        warning = run.settings_warning
        if warning:
            echo(f"{tag}: {warning}")
        if run.is_finished:
            progress.done += 1
            echo(f"{tag}: finished earlier, skipped ({run.per_case_csv})")
            continue
        trained = run.is_trained
        problem = run.per_case_problem
        if problem is not None:
            again = "evaluated again" if trained else "run again"
            echo(f"{tag}: WARNING: {problem}; the run is not counted as finished and is {again}")
        busy = None if trained else _another_training(run)
        if busy is not None:  # another study command trains it: its files, settings.json included, are left alone
            progress.failed.append(run)
            echo(f"{tag}: skipped: {busy}")
            continue
        run.root.mkdir(parents=True, exist_ok=True)
        (run.root / FAILED_MARKER).unlink(missing_ok=True)
        start_kind = "trained" if trained else run.training_start()
        if start_kind in ("new", "over"):
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

        steps = [] if trained else [("training", run.train_command(), run.train_log, report)]
        steps.append(("evaluation", run.evaluate_command(), run.evaluate_log, None))
        echo(f"{tag}: {_start_message(run, start_kind)} ...")
        for step, cmd, log, on_progress in steps:
            code = run_logged(cmd, log, on_progress, env)
            if code != 0:
                error = log_error(log)  # the bundle's own message, which the end of the log buries
                _record_failure(run, step, code, log, error)
                progress.failed.append(run)
                why = describe_returncode(code)
                why = f" ({why})" if code > 0 else f": {why}, exit code {code}"
                echo(f"{tag}: {step} FAILED{why}{f': {error}' if error else ''}; see {log}")
                break
            if step == "training":
                (run.root / TRAINED_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
                echo(f"{tag}: evaluation ...")
        else:
            if not run.is_finished:
                _record_failure(run, "evaluation", 0, run.evaluate_log)
                progress.failed.append(run)
                problem = run.per_case_problem
                wrote = f"wrote an incomplete {problem}" if problem else f"wrote no {run.per_case_csv.name}"
                echo(f"{tag}: evaluation {wrote}; see {run.evaluate_log}")
                continue
            progress.done += 1
            progress.run_seconds.append(time.monotonic() - start)
            echo(f"{tag}: done in {format_seconds(progress.run_seconds[-1])}")
    return progress
