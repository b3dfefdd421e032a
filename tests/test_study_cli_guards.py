# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The study command's guards: overrides it refuses, unwritable output, line-buffered progress and stopping on a
signal (Ctrl-C, SIGTERM, SIGHUP) with its bundle command and a one-line message."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import monai_mixedfocal.study.demo as demo_module
import monai_mixedfocal.study.study as study_module
from monai_mixedfocal.cli import main as cli_main
from monai_mixedfocal.data import synthesize_kits19
from monai_mixedfocal.study.study import RESERVED_OVERRIDES, StudySpec

REPO = Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted: run the same command again to resume"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tiny generated KiTS19-like cases."""
    root = tmp_path_factory.mktemp("data") / "kits19"
    synthesize_kits19(root, cases=4, seed=0, shape=(16, 16, 16))
    return root


def _study(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m monai_mixedfocal study ARGS`` in this process: the exit code, stdout and stderr."""
    try:
        code = cli_main(["study", *args])
    except KeyboardInterrupt:  # would end the whole pytest session
        pytest.fail("KeyboardInterrupt escaped the study command")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused_dry_run(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, losses: str, *options: str) -> str:
    """Run ``study --dry-run`` on ``data`` with ``options``; assert that it is refused with one ``error:`` line, exit
    code 2 and nothing written; return that line."""
    out = tmp_path / "study"
    args = ["--dataset", "kits19", "--data", str(data), "--folds", "2", "--losses", losses, "--out", str(out)]
    code, stdout, stderr = _study(capsys, *args, *options, "--dry-run")
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and not out.exists()  # one line, nothing written
    return stderr


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("loss=focal", "use --losses"),
        ("fold=1", "use --only-folds"),
        ("num_folds=3", "use --folds"),
        ("dataset_dir=/elsewhere", "use --data"),
        ("datalist=/elsewhere/datalist.json", "OUT/datalist.json"),
        ("bundle_root=/elsewhere", "OUT/runs"),
        ("save_predictions=False", "overlays"),
    ],
)
def test_ids_set_by_the_study_are_refused_as_overrides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, override: str, hint: str
) -> None:
    """``-O loss=focal`` used to train every run with the focal loss while the report named them apart."""
    stderr = _refused_dry_run(capsys, tmp_path, data, "dice,focal", "-O", "epochs=1", "-O", override)
    key = override.split("=")[0]
    assert stderr.startswith(f"error: -O {key} is set by the study (") and hint in stderr
    assert "reserved ids: loss, fold, num_folds, dataset_dir, datalist, bundle_root" in stderr


def test_reserved_ids_are_refused_by_the_python_api_and_the_demo(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"-O fold is set by the study"):
        StudySpec(dataset="kits19", data_root=data, out_dir=tmp_path, losses=["dice"], overrides={"fold": 1})
    spec = StudySpec(dataset="kits19", data_root=data, out_dir=tmp_path, losses=["dice"], num_folds=2)
    spec.overrides = {"loss": "focal"}  # changed after the check of __post_init__
    with pytest.raises(ValueError, match=r"-O loss is set by the study"):
        spec.runs()
    monkeypatch.setattr(demo_module, "demo_data", lambda out: data)
    code, stdout, stderr = _study(capsys, "--demo", "--out", str(tmp_path / "demo"), "-O", "loss=focal", "--dry-run")
    assert code == 2 and stdout == "" and stderr.startswith("error: -O loss is set by the study")
    assert set(RESERVED_OVERRIDES) >= {"loss", "fold", "num_folds", "dataset_dir", "datalist", "bundle_root"}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("epoch=1", "(did you mean 'epochs'?)"),
        ("network_def#featurs=[4,4,8,8,16,4]", "(did you mean 'network_def#features'"),
        ("folds=3", "'num_folds' (use --folds)"),
    ],
)
def test_unknown_override_ids_are_refused_with_the_closest_ids(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, override: str, expected: str
) -> None:
    """``-O epoch=100`` (for ``epochs``) used to be ignored: every run trained the bundle's 500 epochs."""
    stderr = _refused_dry_run(capsys, tmp_path, data, "dice", "-O", override)
    key = override.split("=")[0]
    assert stderr.startswith(f"error: -O {key}: no such id in ") and "train.json or evaluate.json" in stderr
    assert expected in stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("learning_rate=-1", "--learning_rate must be a number > 0, got -1."),
        ("amp=maybe", "--amp must be true or false, got 'maybe'."),
        ("sw_overlap=1.5", "--sw_overlap must be in [0, 1)"),
        ("num_workers=-2", "--num_workers must be an integer >= 0, got -2."),
    ],
)
def test_bad_override_values_are_refused_before_any_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, override: str, expected: str
) -> None:
    """Against the waste: a bad value passed the dry run and failed every run (every cluster job, after its wait in
    the queue) at its start, about 7 s each; the bundle's check of option values now runs once, before any run."""
    stderr = _refused_dry_run(capsys, tmp_path, data, "dice,focal", "-O", override)
    assert stderr.startswith(f"error: -O: {expected}") and "before any run" in stderr


def test_values_that_depend_on_the_machine_are_left_to_the_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    """The commands of a dry run may run on other machines (GPU nodes, printed on a login node without one)."""
    args = ["--dataset", "kits19", "--data", str(data), "--folds", "2", "--losses", "dice", "--out", str(tmp_path)]
    code, stdout, stderr = _study(capsys, *args, "-O", "device=cuda:7", "-O", "amp=True", "--dry-run")
    assert code == 0, stderr
    assert "--device cuda:7" in stdout


def test_override_ids_of_either_config_are_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    args = ["--dataset", "kits19", "--data", str(data), "--folds", "2", "--losses", "dice", "--out", str(tmp_path)]
    overrides = ["epochs=1", "network_def#features=[4,4,8,8,16,4]", "network_def::act=RELU", "per_case_csv=x.csv"]
    overrides += ["loss_kwargs#delta=0.6", "network_def#dropout=0.1"]  # new entries: refused before, as docs offer
    code, stdout, stderr = _study(capsys, *args, *[a for o in overrides for a in ("-O", o)], "--dry-run")
    assert code == 0, stderr
    assert len(stdout.splitlines()) == 2 and "--epochs 1" in stdout and "--per_case_csv x.csv" in stdout


def test_an_unwritable_output_folder_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    """A folder that cannot be made (here under a file; read-only for a user) gave an OSError traceback."""
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "study"
    code, _, stderr = _study(capsys, "--dataset", "kits19", "--data", str(data), "--folds", "2", "--out", str(out))
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1 and "file" in stderr


def test_progress_is_line_buffered_when_redirected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redirected to a file, stdout was block-buffered: a study killed later left an empty log."""
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8", line_buffering=False)
    written: list[bytes] = []

    def run_study(spec: StudySpec, echo=print) -> tuple[object, None]:
        echo("[1/2] dice/fold_0: epoch 1/500")
        written.append(raw.getvalue())  # what a `tail -f` of the log shows now
        return None, None

    monkeypatch.setattr(study_module, "run_study", run_study)
    monkeypatch.setattr(sys, "stdout", stdout)
    code, _, stderr = _study(capsys, "--dataset", "kits19", "--data", str(data), "--out", str(tmp_path))
    assert code == 1 and "no run finished" in stderr
    assert written == [b"[1/2] dice/fold_0: epoch 1/500\n"]
    assert not stdout.line_buffering  # restored


def test_ctrl_c_prints_one_line_and_exits_130(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGHUP")}
    seen: dict[str, object] = {}

    def run_study(spec: StudySpec, echo=print) -> None:
        seen.update({name: signal.getsignal(getattr(signal, name)) for name in handlers})
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "run_study", run_study)
    code, _, stderr = _study(capsys, "--dataset", "kits19", "--data", str(data), "--out", str(tmp_path))
    assert code == 130 and stderr == INTERRUPTED + "\n" and "Traceback" not in stderr
    assert all(seen[name] is not handlers[name] for name in handlers)  # installed while the study runs
    assert {name: signal.getsignal(getattr(signal, name)) for name in handlers} == handlers  # and restored


_STOPPED_STUDY = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import monai_mixedfocal.study.study as study
    from monai_mixedfocal.cli import main
    from monai_mixedfocal.study.runner import run_logged

    def run_study(spec, echo=print):
        child = "import os, time; print('child', os.getpid(), flush=True); time.sleep(120)"
        run_logged([sys.executable, "-c", child], Path(sys.argv[1]))
        raise AssertionError("the bundle command was not stopped")

    study.run_study = run_study
    sys.exit(main(["study", "--dataset", "kits19", "--data", sys.argv[2], "--out", sys.argv[3]]))
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_stops_the_bundle_command_too(tmp_path: Path, data: Path, signum: signal.Signals) -> None:
    """SIGTERM (``kill``, ``docker stop``, a job manager) or SIGHUP killed the study and left its training running
    alone; a rerun then trained twice in one run folder."""
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-c", _STOPPED_STUDY, str(log), str(data), str(tmp_path / "study")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    child = None
    try:
        deadline = time.monotonic() + 60
        while child is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            lines = [line for line in log.read_text().splitlines() if line.startswith("child ")] if log.exists() else []
            child = int(lines[0].split()[1]) if lines else None
        assert child is not None, process.communicate(timeout=10)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the bundle command was left running"
        assert process.returncode == 128 + signum, stderr
        assert stderr.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_an_override_value_may_hold_an_equals_sign() -> None:
    """Against the bug ``split("=", 1)`` -> ``split("=")[:2]``: ``-O key=a=b`` passed ``a``."""
    from monai_mixedfocal.study.cli import _override

    assert _override("per_case_csv=a=b.csv") == ("per_case_csv", "a=b.csv")
    assert _override("patch_size=[96, 96, 64]") == ("patch_size", [96, 96, 64])


def test_demo_overrides_give_way_to_the_user_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the bug (demo defaults applied after ``-O``): ``study --demo -O epochs=3`` trained 24 epochs."""
    import monai_mixedfocal.study.demo as demo_module
    from monai_mixedfocal.cli import build_parser
    from monai_mixedfocal.study.cli import _spec

    monkeypatch.setattr(demo_module, "demo_data", lambda out: tmp_path / "data")
    args = build_parser().parse_args(["study", "--demo", "--out", str(tmp_path / "s"), "-O", "epochs=3"])
    spec = _spec(args)
    assert spec.overrides["epochs"] == 3 and spec.overrides["iterations_per_epoch"] == 10


@pytest.mark.parametrize(
    ("options", "expected"),
    [(["--folds", "0"], "--folds must be at least 2; got 0"), (["--only-folds", "1", "1"], "[1] given more than once")],
)
def test_fold_options_that_the_study_cannot_run_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, options: list[str], expected: str
) -> None:
    """Against the bugs: ``--folds 0`` ran the default 5 folds; ``--only-folds 1 1`` ran every run twice."""
    assert expected in _refused_dry_run(capsys, tmp_path, data, "dice", *options)
