# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""``python -m monai_mixedfocal study``: the loss study from the command line.

Examples::

    python -m monai_mixedfocal study --dataset kits19 --data /data/kits19 --losses all --folds 5 --out results/
    python -m monai_mixedfocal study --demo                       # generated data, CPU-sized schedule
    python -m monai_mixedfocal study ... --dry-run                # print one command line per run (e.g. cluster jobs)
    python -m monai_mixedfocal study ... --collect-only           # only collect finished runs and write the report
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from monai_mixedfocal.cli_errors import print_error
from monai_mixedfocal.data.errors import DataError


def _override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (VALUE parsed as JSON when it is JSON, else kept as a string)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` sub-command."""
    parser = subparsers.add_parser(
        "study",
        help="train and evaluate losses x folds through the bundles, then write the statistics report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", action="store_true", help="the embedded default: generated KiTS19-like data")
    parser.add_argument("--dataset", choices=("kits19", "brats20"), help="the data set (and its bundle)")
    parser.add_argument("--data", help="the data set folder in its real layout")
    parser.add_argument(
        "--losses",
        default=None,
        help="'all' (the paper's 7), 'every' (the registry) or a,b,c; default: the paper's for the data set "
        "(KiTS19: all, BraTS20: focal_tversky,combo,mixed_focal)",
    )
    parser.add_argument("--folds", type=int, default=None, help="number of cross-validation folds (default 5)")
    parser.add_argument("--only-folds", type=int, nargs="+", default=None, help="run only these validation folds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    parser.add_argument("--out", default=None, help="the study folder (default results/ or results/demo)")
    parser.add_argument("--bundle", default=None, help="the bundle folder (default: the package's own)")
    parser.add_argument(
        "--override",
        "-O",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a bundle override for every run, e.g. -O epochs=100 -O 'patch_size=[96,96,64]' (repeatable)",
    )
    parser.add_argument("--test", choices=("ranksum", "signedrank"), default="ranksum", help="pairwise test")
    parser.add_argument(
        "--ci-over", choices=("cases", "folds"), default="cases", help="Table 1's intervals over cases or fold means"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands of the unfinished runs and exit")
    parser.add_argument("--collect-only", action="store_true", help="collect finished runs and write the report")
    parser.set_defaults(func=main)


def _spec(args: argparse.Namespace):
    from monai_mixedfocal.study.demo import demo_spec
    from monai_mixedfocal.study.study import StudySpec, paper_losses, parse_losses

    changes: dict[str, Any] = {"test": args.test, "ci_over": args.ci_over, "seed": args.seed}
    if args.losses is not None:
        changes["losses"] = parse_losses(args.losses)
    if args.folds is not None:  # --folds 0 is refused by StudySpec, not taken for the default
        changes["num_folds"] = args.folds
    if args.only_folds is not None:
        changes["folds"] = args.only_folds
    if args.bundle:
        changes["bundle_dir"] = args.bundle
    if args.demo:
        from monai_mixedfocal.study.demo import DEMO_OVERRIDES

        changes["overrides"] = {**DEMO_OVERRIDES, **dict(args.override)}  # checked by StudySpec, as any override
        return demo_spec(args.out or "results/demo", **changes)
    if not args.dataset or not args.data:
        raise ValueError("--dataset and --data are required (or use --demo)")
    changes.setdefault("losses", paper_losses(args.dataset))
    return StudySpec(
        dataset=args.dataset,
        data_root=args.data,
        out_dir=args.out or "results",
        overrides=dict(args.override),
        **changes,
    )


#: the signals that stop the study as Ctrl-C does (its running bundle command is terminated, the run resumes later)
_STOP_SIGNALS: tuple[str, ...] = ("SIGTERM", "SIGHUP")
INTERRUPTED = "interrupted: run the same command again to resume"


class _Stopped(KeyboardInterrupt):
    """A stop signal (:data:`_STOP_SIGNALS`) turned into a ``KeyboardInterrupt``; ``signum`` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`_Stopped` (a ``KeyboardInterrupt``), so that the runner stops
    its bundle command as on Ctrl-C instead of leaving it running alone; the previous handlers are restored after.
    Outside the main thread (where handlers cannot be set) nothing changes."""
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in _STOP_SIGNALS:
            number = getattr(signal, name, None)  # no SIGHUP on Windows
            if number is not None:
                previous[number] = signal.signal(number, _raise_stopped)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _line_buffered_stdout() -> Iterator[None]:
    """Within the block, stdout is line-buffered also when redirected to a file, so that the progress of a study
    killed later (a ``nohup`` or cluster job) is in its log; the previous buffering is restored after."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    previous = getattr(sys.stdout, "line_buffering", None)
    if reconfigure is None or previous is None:  # not an io.TextIOWrapper (replaced by the caller)
        yield
        return
    stream = sys.stdout
    try:
        reconfigure(line_buffering=True)
    except (OSError, ValueError):  # a closed or detached stream
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            stream.reconfigure(line_buffering=previous)


def main(args: argparse.Namespace) -> int:
    """Run the ``study`` command.

    Returns:
        0; 1 when a run failed; 2 for bad arguments or data, or an output folder that cannot be written; 130 after
        Ctrl-C and 128 + the signal number after SIGTERM or SIGHUP (the running bundle command is stopped as well,
        and the same command resumes the study).
    """
    try:
        with _line_buffered_stdout(), _stop_signals_interrupt():
            return _main(args)
    except KeyboardInterrupt as err:
        print(INTERRUPTED, file=sys.stderr)
        return 128 + (err.signum if isinstance(err, _Stopped) else signal.SIGINT)


def _main(args: argparse.Namespace) -> int:
    """:func:`main` without the signal and stdout handling."""
    from monai_mixedfocal.study.study import (
        check_datalist,
        collect_and_report,
        prepare_datalist,
        run_study,
        run_warnings,
    )

    try:
        spec = _spec(args)
        if args.collect_only or args.dry_run:
            # the checks and warnings of a study run (on stderr: a dry run's stdout is its command lines)
            (check_datalist if args.collect_only else prepare_datalist)(spec)
            runs = spec.runs()
            for line in run_warnings(runs):
                print(line, file=sys.stderr)
        if args.collect_only:
            collect_and_report(spec)
            return 0
        if args.dry_run:
            unfinished = [run for run in runs if not run.is_finished]
            for run in unfinished:
                print(run.shell_line())
            if not unfinished:
                print(f"all {len(runs)} runs have finished; nothing to run", file=sys.stderr)
            return 0
        progress, report = run_study(spec)
    except BrokenPipeError:  # stdout closed by the reader (`--dry-run | head -1`): main() stops quietly
        raise
    except (ValueError, DataError, OSError) as err:  # OSError: e.g. an output folder that cannot be written
        print_error(err)
        return 2
    if report is None:
        print("no run finished; see the logs in the runs' folders", file=sys.stderr)
        return 1
    return 1 if progress.failed else 0
