# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The study's run state after interruptions and damage: a training finished without its marker, a per-case CSV cut
short or damaged, a study killed while its bundle command runs, and how a killed command is reported."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import BasicUNet

import monai_mixedfocal.study.runner as runner_module
from monai_mixedfocal.bundle.moved_runs import recorded_folders
from monai_mixedfocal.bundle.run_settings import describe_network, run_settings
from monai_mixedfocal.data import read_datalist, synthesize_kits19
from monai_mixedfocal.metrics import per_case_table, write_csv_atomic
from monai_mixedfocal.study.collect import collect_per_case
from monai_mixedfocal.study.per_case_csv import read_per_case_csv
from monai_mixedfocal.study.runner import describe_returncode, execute_runs
from monai_mixedfocal.study.runs import TRAINED_MARKER, Run, default_bundle_dir
from monai_mixedfocal.study.study import StudySpec, collect_and_report, prepare_datalist
from monai_mixedfocal.utils import atomic_write_json

BUNDLE = default_bundle_dir("kits19")
CLASSES = {1: "kidney", 2: "tumor"}  # the KiTS19 bundle's output classes without the background
# the KiTS19 bundle's own defaults of what run_settings records (configs/train.json)
BUNDLE_LOSS_KWARGS = {"softmax": True, "to_onehot_y": True}
FOLD_CASES = {0: ["case_00000", "case_00002", "case_00004"], 1: ["case_00001", "case_00003", "case_00005"]}


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "_POLL_SECONDS", 0.05)


def _datalist(tmp_path: Path) -> Path:
    """A two-fold datalist of six cases (the files need not exist: no command here reads them)."""
    path = tmp_path / "datalist.json"
    items = [
        {"case": case, "image": f"data/{case}/imaging.nii.gz", "label": f"data/{case}/segmentation.nii.gz", "fold": k}
        for k, cases in FOLD_CASES.items()
        for case in cases
    ]
    if not path.is_file():
        atomic_write_json(path, {"dataset_root": ".", "num_folds": 2, "seed": 0, "training": items})
    return path


def _run(tmp_path: Path, loss: str = "dice", fold: int = 0, **overrides) -> Run:
    """A run as the study plans it: the shared data set and datalist, two folds, a 2-epoch schedule."""
    settings = {"dataset_dir": str(tmp_path / "data"), "datalist": str(_datalist(tmp_path)), "num_folds": 2}
    root = tmp_path / "runs" / loss / f"fold_{fold}"
    return Run(loss, fold, root, BUNDLE, {**settings, "epochs": 2, **overrides})


def _write_per_case(path: Path, cases: list[str], seed: int = 0) -> pd.DataFrame:
    """The bundles' per-case CSV (their own writer's table) for ``cases``, the second class absent from the first."""
    counts = np.random.default_rng(seed).integers(1, 50, size=(len(cases), len(CLASSES), 3))
    counts[0, 1] = 0  # tumor absent from label and prediction: NaN metrics, absent=True
    table = per_case_table(counts, cases, CLASSES)
    write_csv_atomic(table, path)
    return table


def _finish_training(
    run: Run, epoch: int = 2, max_epochs: int = 2, model: bool = True, checkpoint_epoch: int | None = None, **changed
) -> None:
    """What a training of ``run`` leaves behind (without the runner's marker): ``models/model.pt``,
    ``checkpoints/last.pt`` and its ``last.json`` with the settings the bundle records (``changed`` replaces some).
    ``last.pt`` is a real resume checkpoint at ``checkpoint_epoch`` when given, else bytes that cannot be read."""
    (run.root / "models").mkdir(parents=True, exist_ok=True)
    if model:
        (run.root / "models" / "model.pt").write_bytes(b"weights")
    run.resume_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    args = {
        "dataset_dir": run.overrides["dataset_dir"],
        "datalist": run.overrides["datalist"],
        "fold": run.fold,
        "num_folds": 2,
        "fold_seed": 0,
        "loss": run.loss,
        "loss_kwargs": BUNDLE_LOSS_KWARGS,
        "seed": 0,
        **changed,
    }
    settings = {**run_settings(**args), **recorded_folders(run.resume_checkpoint)}  # as ResumeCheckpoint records it
    record = {"run_settings": settings, "epoch": epoch, "max_epochs": max_epochs}
    atomic_write_json(run.resume_checkpoint.with_suffix(".json"), record)
    if checkpoint_epoch is None:
        run.resume_checkpoint.write_bytes(b"checkpoint")
    else:
        trainer = {"epoch": checkpoint_epoch, "max_epochs": max_epochs, "epoch_length": 3}
        torch.save({"trainer": trainer, "run_settings": record["run_settings"]}, run.resume_checkpoint)


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the bundle commands: the training leaves ``trained_by_test`` in the run folder, the evaluation
    copies ``ready.csv`` (written by the test) to the per-case CSV."""

    def train(run: Run) -> list[str]:
        return [sys.executable, "-c", f"open({str(run.root / 'trained_by_test')!r}, 'a').write('trained\\n')"]

    def evaluate(run: Run) -> list[str]:
        script = "import os, shutil, sys; os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)\n"
        script += "shutil.copy(*sys.argv[1:])"
        return [sys.executable, "-c", script, str(run.root / "ready.csv"), str(run.per_case_csv)]

    monkeypatch.setattr(Run, "train_command", train)
    monkeypatch.setattr(Run, "evaluate_command", evaluate)


# --- H3 / L4: a finished training without trained.ok ------------------------------------------------------------------


def test_a_finished_training_without_its_marker_is_evaluated_not_trained_again(tmp_path: Path, commands) -> None:
    """A cluster job whose evaluation was lost, or a study killed before writing trained.ok: last.json records the
    last epoch with this run's settings and model.pt exists, so the run goes straight to its evaluation."""
    run = _run(tmp_path)
    _finish_training(run)
    _write_per_case(run.root / "ready.csv", FOLD_CASES[0])
    assert not (run.root / TRAINED_MARKER).exists()
    assert run.is_trained
    lines: list[str] = []
    progress = execute_runs([run], echo=lines.append)
    assert not (run.root / "trained_by_test").exists(), "the finished training was run again"
    assert progress.done == 1 and not progress.failed and run.is_finished
    assert "[1/1] dice/fold_0: training finished earlier (epoch 2 of 2), evaluation ..." in lines
    assert not any("resuming" in line for line in lines)


def test_a_training_killed_before_its_last_json_was_written_counts_as_trained(tmp_path: Path, commands) -> None:
    """The bundle writes last.pt, then its copy last.json: killed in between after the last epoch, last.json says one
    epoch short. The run is still trained (last.pt says so); training it again would start over from scratch."""
    run = _run(tmp_path)
    _finish_training(run, epoch=1, checkpoint_epoch=2)
    _write_per_case(run.root / "ready.csv", FOLD_CASES[0])
    assert run.recorded_training()["epoch"] == 2 and run.is_trained
    lines: list[str] = []
    progress = execute_runs([run], echo=lines.append)
    assert not (run.root / "trained_by_test").exists(), "the finished training was run again"
    assert progress.done == 1 and "[1/1] dice/fold_0: training finished earlier (epoch 2 of 2), evaluation ..." in lines

    interrupted = _run(tmp_path, fold=1)
    _finish_training(interrupted, epoch=2, checkpoint_epoch=1)  # a last.json newer than last.pt: last.pt decides
    assert interrupted.training_start() == "resume" and not interrupted.is_trained


def test_the_settings_of_the_bundle_command_are_those_the_bundle_records(tmp_path: Path) -> None:
    """The study works out the run_settings and schedule of a run from the bundle's configs and its overrides."""
    run = _run(
        tmp_path, "focal", 1, seed=3, loss_kwargs={"gamma": 2.0}, learning_rate=0.01, **{"train#trainer#max_epochs": 4}
    )
    settings, epochs = run.bundle_run_settings()
    options = {  # the bundle's defaults, but for the override
        "learning_rate": 0.01,
        "min_learning_rate": 1e-06,
        "lr_factor": 0.1,
        "lr_patience": 10,
        "iterations_per_epoch": 100,
        "batch_size": 2,
        "patch_size": [160, 160, 80],
        "patch_sampling": "random",
        "crop_ratios": [1, 1, 1],
        "aug_prob": 0.15,
        "pixdim": [1.62, 1.62, 3.22],
        "hu_range": [-79, 304],
        "network": describe_network(
            BasicUNet(3, 1, 3, features=(32, 64, 128, 256, 512, 32), norm="batch", act="relu", upsample="deconv")
        ),
    }
    expected = run_settings(
        tmp_path / "data", tmp_path / "datalist.json", 1, 2, 0, "focal", {"gamma": 2.0}, 3, options=options
    )
    assert settings == expected and epochs == 4


def test_the_dry_run_line_of_a_trained_run_only_evaluates(tmp_path: Path) -> None:
    """A cluster job for a trained run must not train it again: the bundle would start over from a finished last.pt."""
    run = _run(tmp_path)
    assert " run training " in run.shell_line() and " && " in run.shell_line()
    _finish_training(run)
    assert run.is_trained
    assert " run training " not in run.shell_line() and run.shell_line().endswith("--save_predictions True")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("interrupted", "resuming training after epoch 1 of 2 ..."),
        ("longer_schedule", "training from scratch (last.pt holds a finished run, epoch 2 of 2) ..."),
        ("shorter_schedule", "training from scratch (last.pt holds a run with no epoch left to train in this schedule"),
        ("no_model", "training from scratch (last.pt holds a finished run, epoch 2 of 2) ..."),
        ("other_fold", "training from scratch (last.pt holds a finished run, epoch 2 of 2) ..."),
        ("other_seed", "training from scratch (last.pt holds a finished run, epoch 2 of 2) ..."),
        ("unreadable_record", "training (the bundle resumes"),
    ],
)
def test_a_training_that_is_not_finished_is_run_and_the_message_says_how(
    tmp_path: Path, commands, case: str, message: str
) -> None:
    """Only the end of this run's schedule with its settings and a model counts as trained; "resuming" is printed only
    when the bundle will resume (L4), not when it starts over from a finished last.pt."""
    run = _run(tmp_path, epochs=3 if case == "longer_schedule" else 2)
    if case == "interrupted":
        _finish_training(run, epoch=1)
    elif case == "shorter_schedule":
        _finish_training(run, epoch=2, max_epochs=5)
    else:
        _finish_training(
            run,
            model=case != "no_model",
            **({"fold": 1} if case == "other_fold" else {}),
            **({"seed": 7} if case == "other_seed" else {}),
        )
    if case == "unreadable_record":
        run.resume_checkpoint.with_suffix(".json").write_text('{"epoch": 2, "max_')
    _write_per_case(run.root / "ready.csv", FOLD_CASES[0])
    assert not run.is_trained
    lines: list[str] = []
    progress = execute_runs([run], echo=lines.append)
    assert (run.root / "trained_by_test").exists() and progress.done == 1
    start = next(line for line in lines if line.startswith("[1/1] dice/fold_0: ") and line.endswith(" ..."))
    assert start.startswith(f"[1/1] dice/fold_0: {message}"), start
    assert ("resuming" in start) == (case == "interrupted")


# --- H5: damaged per-case CSVs ----------------------------------------------------------------------------------------


def _cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _drop_last_row(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _drop_column(path: Path, column: str) -> None:
    pd.read_csv(path).drop(columns=[column]).to_csv(path, index=False)


def _edit_cell(path: Path, row: int, column: str, value: str) -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[row, column] = value
    table.to_csv(path, index=False)


DAMAGE = {
    "truncated_mid_row": lambda p: _cut(p, 0.7),
    "truncated_at_a_row_end": _drop_last_row,
    "header_only": lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"),
    "empty": lambda p: p.write_bytes(b""),
    "binary_garbage": lambda p: p.write_bytes(bytes(np.random.default_rng(0).integers(128, 256, 300, dtype=np.uint8))),
    "missing_dsc_column": lambda p: _drop_column(p, "dsc"),
    "missing_absent_column": lambda p: _drop_column(p, "absent"),
    "text_metric": lambda p: _edit_cell(p, 2, "dsc", "abc"),
    "nan_where_present": lambda p: _edit_cell(p, 2, "recall", ""),
    "metric_out_of_range": lambda p: _edit_cell(p, 2, "iou", "7.5"),
    "bad_absent": lambda p: _edit_cell(p, 3, "absent", "Fal"),
    "nan_absent": lambda p: _edit_cell(p, 3, "absent", "nan"),  # not read as a missing value, nor as true
    "blank_absent": lambda p: _edit_cell(p, 3, "absent", ""),
    "other_fold": lambda p: _write_per_case(p, FOLD_CASES[1]),
    "a_case_missing": lambda p: _write_per_case(p, FOLD_CASES[0][:2]),
    "an_extra_case": lambda p: _write_per_case(p, [*FOLD_CASES[0], FOLD_CASES[1][0]]),
    "a_class_missing": lambda p: write_csv_atomic(pd.read_csv(p).iloc[1:], p),
    "repeated_row": lambda p: write_csv_atomic(pd.concat([pd.read_csv(p), pd.read_csv(p).iloc[[2]]]), p),
}


def test_a_complete_per_case_csv_is_read_as_written(tmp_path: Path) -> None:
    run = _run(tmp_path)
    written = _write_per_case(run.per_case_csv, FOLD_CASES[0])
    assert run.is_finished and run.per_case_problem is None
    table = run.per_case_table()
    assert table["absent"].dtype == bool and table["absent"].tolist() == written["absent"].tolist()
    np.testing.assert_allclose(table["dsc"].to_numpy(), written["dsc"].to_numpy())
    assert table["dsc"].isna().sum() == 1  # the absent class


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_per_case_csv_leaves_the_run_unfinished(tmp_path: Path, damage: str) -> None:
    """A per-case CSV cut short (e.g. when copied back from a cluster job) or otherwise damaged is not collected: the
    run counts as unfinished, and the problem names the file."""
    good, bad = _run(tmp_path, "focal"), _run(tmp_path, "dice")
    _write_per_case(good.per_case_csv, FOLD_CASES[0])
    _write_per_case(bad.per_case_csv, FOLD_CASES[0], seed=1)
    DAMAGE[damage](bad.per_case_csv)
    assert not bad.is_finished
    assert bad.per_case_problem is not None and str(bad.per_case_csv) in bad.per_case_problem
    with pytest.raises(ValueError, match=str(bad.per_case_csv)):
        read_per_case_csv(bad.per_case_csv, FOLD_CASES[0], [list(CLASSES.values())])
    table = collect_per_case([bad, good])
    assert set(table["method"]) == {"focal"} and len(table) == 2 * len(FOLD_CASES[0])
    with pytest.raises(ValueError, match=rf"no finished run to collect.*{bad.per_case_csv}"):
        collect_per_case([bad])


def _mark_trained(run: Run) -> None:
    """What the runner leaves after a training: ``trained.ok`` beside ``models/model.pt``."""
    (run.root / "models").mkdir(parents=True)
    (run.root / "models" / "model.pt").write_bytes(b"weights")
    (run.root / TRAINED_MARKER).write_text("done\n")


def test_a_damaged_per_case_csv_is_evaluated_again(tmp_path: Path, commands) -> None:
    run = _run(tmp_path)
    _mark_trained(run)
    _write_per_case(run.per_case_csv, FOLD_CASES[0])
    _cut(run.per_case_csv, 0.6)
    _write_per_case(run.root / "ready.csv", FOLD_CASES[0])
    lines: list[str] = []
    progress = execute_runs([run], echo=lines.append)
    assert any(line.startswith(f"[1/1] dice/fold_0: WARNING: {run.per_case_csv}: ") for line in lines), lines
    assert progress.done == 1 and run.is_finished and not (run.root / "trained_by_test").exists()
    assert "finished earlier" not in "\n".join(lines)


def test_an_evaluation_that_writes_a_damaged_csv_fails_naming_it(tmp_path: Path, commands) -> None:
    run = _run(tmp_path)
    _mark_trained(run)
    _write_per_case(run.root / "ready.csv", FOLD_CASES[1])  # the other fold's cases
    lines: list[str] = []
    progress = execute_runs([run], echo=lines.append)
    assert progress.failed == [run] and run.has_failed
    assert f"evaluation wrote an incomplete {run.per_case_csv}: " in lines[-1]


def test_the_report_counts_a_run_with_a_damaged_csv_as_unfinished(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    spec = StudySpec(
        dataset="kits19", data_root=data, out_dir=tmp_path / "study", losses=["dice", "focal"], num_folds=2
    )
    prepare_datalist(spec)
    runs = [run for run in spec.runs() if run.fold == 0]
    cases = [item["case"] for item in read_datalist(spec.datalist_path)["training"] if item["fold"] == 0]
    for seed, run in enumerate(runs):
        _write_per_case(run.per_case_csv, cases, seed)
    _cut(runs[0].per_case_csv, 0.7)
    lines: list[str] = []
    text = collect_and_report(spec, echo=lines.append).read_text()
    assert "incomplete study: 1 of 4 runs have finished" in text and "dice/fold_0" in text
    table = pd.read_csv(spec.out_dir / "per_case.csv")
    assert set(table["method"]) == {"focal"} and len(table) == 2 * len(cases)
    assert "(1/4 runs" in lines[-1]


# --- H4: a killed study leaves no bundle command running --------------------------------------------------------------


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait for a container's init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_killed_study_stops_its_bundle_command(tmp_path: Path) -> None:
    """SIGKILL to the study (no handler can run): its child gets SIGTERM from the kernel instead of going on alone."""
    log = tmp_path / "child.log"
    child = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(120)"
    study = (
        "import sys; from pathlib import Path; from monai_mixedfocal.study.runner import run_logged; "
        f"run_logged([sys.executable, '-c', {child!r}], Path({str(log)!r}))"
    )
    parent = subprocess.Popen([sys.executable, "-c", study])
    pid = None
    try:
        deadline = time.monotonic() + 60
        while pid is None and time.monotonic() < deadline:
            time.sleep(0.1)
            words = log.read_text().split() if log.is_file() else []
            pid = int(words[words.index("pid") + 1]) if "pid" in words[:-1] else None
        assert pid is not None, "the child did not start"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the bundle command outlived the killed study"
    finally:
        parent.kill()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- L5: a killed command is reported as such -------------------------------------------------------------------------


def test_a_command_killed_by_a_signal_is_reported_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert describe_returncode(1) == "exit code 1"
    assert describe_returncode(-signal.SIGKILL) == "killed by SIGKILL (out of memory?)"
    assert describe_returncode(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_returncode(-200) == "killed by signal 200"
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(Run, "train_command", lambda self: [sys.executable, "-c", script])
    run = _run(tmp_path)
    lines: list[str] = []
    progress = execute_runs([run], echo=lines.append)
    assert progress.failed == [run]
    assert (
        f"[1/1] dice/fold_0: training FAILED: killed by SIGKILL (out of memory?), exit code -9; see {run.train_log}"
        in lines
    )


@pytest.mark.slow
def test_a_real_training_without_its_marker_counts_as_trained(tmp_path: Path) -> None:
    """The settings the study works out for a run are those the bundle's training records in last.json."""
    data = tmp_path / "data"
    synthesize_kits19(data, cases=4, seed=0, shape=(24, 48, 48))
    tiny = {
        "epochs": 1,
        "iterations_per_epoch": 2,
        "batch_size": 1,
        "patch_size": [32, 32, 16],
        "network_def#features": [4, 4, 8, 8, 16, 4],
        "num_workers": 0,
        "cache_rate": 0,
    }
    spec = StudySpec(
        dataset="kits19", data_root=data, out_dir=tmp_path / "study", losses=["dice"], num_folds=2, overrides=tiny
    )
    prepare_datalist(spec)
    run = spec.runs()[0]
    assert runner_module.run_logged(run.train_command(), run.train_log) == 0, run.train_log.read_text()[-3000:]
    assert not (run.root / TRAINED_MARKER).exists() and run.model.is_file()
    assert run.recorded_training()["epoch"] == 1
    assert run.training_finished and run.is_trained and run.training_start() == "over"


def test_a_marker_without_the_model_is_not_a_trained_run(tmp_path: Path) -> None:
    """Against the bug (the marker trusted alone): trained.ok without models/model.pt (deleted, or lost in a copy)
    was evaluated at every rerun, which failed every time (no such model file), and never trained again."""
    run = _run(tmp_path)
    run.root.mkdir(parents=True)
    (run.root / TRAINED_MARKER).write_text("2026-11-30T00:00:00\n")
    assert not run.is_trained and " run training " in run.shell_line()
    _finish_training(run, model=False, seed=1)  # last.pt of the same run's finished training, the model lost
    assert not run.is_trained
    (run.root / "models" / "model.pt").write_bytes(b"weights")
    assert run.is_trained and " run training " not in run.shell_line()


def test_a_run_without_settings_json_is_checked_against_its_own_training_record(tmp_path: Path) -> None:
    """Against the bug (no settings.json, no check): the commands of --dry-run do not write settings.json, so a run
    trained by them with another schedule or seed was collected without a word. Its last.pt record is compared."""
    run = _run(tmp_path)
    _finish_training(run)
    assert run.settings_changes() == [] and run.settings_warning is None
    longer = Run(run.loss, run.fold, run.root, BUNDLE, {**run.overrides, "epochs": 3})
    assert longer.settings_changes() == ["epochs: 2 -> 3"]
    _finish_training(run, seed=1)
    assert run.settings_changes() == ["seed: '1' -> '0'"]
    assert "WARNING: made with other settings (seed: '1' -> '0')" in str(run.settings_warning)
    run.record_settings()  # the runner's record, when there is one, decides
    assert run.settings_changes() == []


def test_a_run_copied_with_its_study_folder_is_checked_where_it_lies_now(tmp_path: Path) -> None:
    """Against the bug (absolute paths compared as recorded): a run trained by the --dry-run commands (no
    settings.json) in a study folder copied elsewhere counted as made with other settings (its datalist and data set
    at the new paths), so it was neither finished nor collected without a warning."""
    run = _run(tmp_path / "scratch")
    _finish_training(run)
    shutil.copytree(tmp_path / "scratch", tmp_path / "home" / "study")
    copied = _run(tmp_path / "home" / "study")
    assert copied.settings_changes() == [] and copied.training_finished and copied.is_trained
    elsewhere = Run(copied.loss, copied.fold, copied.root, BUNDLE, {**copied.overrides, "dataset_dir": str(tmp_path)})
    (change,) = elsewhere.settings_changes()  # the data set did not move along: another data set
    assert change.startswith("dataset_dir: ")
    assert not elsewhere.training_finished


def test_a_copied_study_beside_another_data_set_or_bundle_is_flagged(tmp_path: Path) -> None:
    """Against the false "same run": a study copied from clone1/results/study to clone2/results/study, where clone2
    holds another bundle (other configs) and another data set at the place relative to the study where clone1's is
    (data outside the copied folder), counted as the same settings. The same tree moved whole (clone1 gone) is the
    same; so is a data set that stayed where it was, and one inside the copied study folder."""
    old, new = tmp_path / "clone1" / "results" / "study", tmp_path / "clone2" / "results" / "study"

    def run_in(study: Path, bundle: Path, data: Path) -> Run:
        overrides = {"dataset_dir": str(data), "datalist": str(study / "datalist.json"), "num_folds": 2}
        return Run("dice", 0, study / "runs" / "dice" / "fold_0", bundle, overrides)

    (tmp_path / "clone1" / "data").mkdir(parents=True)
    recorded = run_in(old, tmp_path / "clone1" / "bundles" / "kits19", tmp_path / "clone1" / "data")
    recorded.root.mkdir(parents=True)
    recorded.record_settings()
    shutil.copytree(tmp_path / "clone1" / "results", tmp_path / "clone2" / "results")
    (change,) = run_in(new, recorded.bundle_dir, tmp_path / "clone2" / "data").settings_changes()
    assert change.startswith("dataset_dir: ")  # clone1/data is still there: not moved with the study
    assert run_in(new, recorded.bundle_dir, tmp_path / "clone1" / "data").settings_changes() == []
    (change,) = run_in(new, tmp_path / "clone2" / "bundles" / "kits19", tmp_path / "clone1" / "data").settings_changes()
    assert change.startswith("bundle_dir: ")
    shutil.rmtree(tmp_path / "clone2")
    shutil.move(tmp_path / "clone1", tmp_path / "clone2")  # the whole tree moved: its data set with it
    assert run_in(new, recorded.bundle_dir, tmp_path / "clone2" / "data").settings_changes() == []
    inside = run_in(old, recorded.bundle_dir, old / "data")
    inside.root.mkdir(parents=True)
    inside.record_settings()
    shutil.copytree(old, tmp_path / "copy")
    assert run_in(tmp_path / "copy", recorded.bundle_dir, tmp_path / "copy" / "data").settings_changes() == []


def test_the_dry_run_line_guards_the_training_as_the_runner_does(tmp_path: Path) -> None:
    """Against the bug (a fixed ``train && evaluate`` line): a job run again after its training ended (requeued after
    a preemption during the evaluation) trained the run over from scratch."""
    run = _run(tmp_path)
    line = run.shell_line()
    marker, model = run.root / TRAINED_MARKER, run.root / "models" / "model.pt"
    assert line.startswith(f"{{ [ -f {marker} ] && [ -f {model} ] || {{ {sys.executable} -m monai.bundle run training ")
    assert f" && touch {marker}; }}; }} && {sys.executable} -m monai.bundle run run " in line


def test_study_spec_refuses_a_repeated_fold_and_names_its_bundle_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the bugs: ``--only-folds 0 0`` ran and collected every run twice, then failed on duplicate rows after
    all the training; a relative ``--bundle`` gave commands that ran only from the folder they were printed in."""
    with pytest.raises(ValueError, match=r"fold\(s\) \[0\] given more than once in --only-folds"):
        StudySpec(dataset="kits19", data_root=tmp_path, out_dir=tmp_path / "out", losses=["dice"], folds=[0, 1, 0])
    monkeypatch.chdir(BUNDLE.parent)
    spec = StudySpec(
        dataset="kits19", data_root=tmp_path, out_dir=tmp_path / "out", losses=["dice"], bundle_dir=BUNDLE.name
    )
    assert spec.bundle_dir == BUNDLE and spec.bundle_dir.is_absolute()


def test_a_refused_collection_leaves_the_last_per_case_csv(tmp_path: Path) -> None:
    """Against the bug (per_case.csv written before the report was made): a collection that failed, e.g. without
    the study's datalist.json, replaced the last good per_case.csv."""
    synthesize_kits19(tmp_path / "data", cases=4, seed=0, shape=(16, 16, 16))
    out = tmp_path / "out"
    spec = StudySpec(dataset="kits19", data_root=tmp_path / "data", out_dir=out, losses=["dice"], num_folds=2)
    prepare_datalist(spec)
    for run in spec.runs():
        cases = [item["case"] for item in read_datalist(spec.datalist_path)["training"] if item["fold"] == run.fold]
        _write_per_case(run.per_case_csv, cases)
    collect_and_report(spec, echo=lambda line: None)
    (spec.out_dir / "per_case.csv").write_text("the last good table\n")
    spec.datalist_path.unlink()
    with pytest.raises(ValueError, match="datalist"):
        collect_and_report(spec, echo=lambda line: None)
    assert (spec.out_dir / "per_case.csv").read_text() == "the last good table\n"


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_a_run_another_process_trains_is_skipped_untouched(tmp_path: Path, commands, lock_holder) -> None:
    """Against the bug (settings.json written before the bundle's lock was tried): a second study command on the same
    --out replaced the settings.json of a run the first was training, so the first one's report flagged it."""
    run = _run(tmp_path)
    other = lock_holder(run.resume_checkpoint.parent)
    lines: list[str] = []
    progress = execute_runs([run], echo=lines.append)
    assert progress.failed == [run] and progress.done == 0
    (line,) = lines
    lock = run.resume_checkpoint.parent / ".lock"
    assert line == f"[1/1] dice/fold_0: skipped: another training (pid {other.pid}) is running in {run.root} " + (
        f"(it holds {lock}): wait for it to end or stop it, or use another --bundle_root"
    )
    assert not (run.root / "settings.json").exists() and not (run.root / "trained_by_test").exists()
    other.kill()
    other.wait(30)
    _write_per_case(run.root / "ready.csv", FOLD_CASES[0])
    assert execute_runs([run], echo=lines.append).done == 1 and (run.root / "settings.json").is_file()
