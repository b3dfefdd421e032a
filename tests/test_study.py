# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The loss study: plan, commands, resumable execution, collection and the end-to-end demo through the bundles."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import monai_mixedfocal.study.runner as runner_module
from monai_mixedfocal.bundle.run_settings import checkpoint_progress
from monai_mixedfocal.bundle.startup import load_split
from monai_mixedfocal.data import read_datalist, synthesize_brats20, synthesize_kits19
from monai_mixedfocal.study.collect import collect_per_case, overlay_slices
from monai_mixedfocal.study.runner import _last_epoch, execute_runs, format_seconds, run_logged
from monai_mixedfocal.study.runs import PER_CASE_CSV, Run, default_bundle_dir, format_override, plan_runs
from monai_mixedfocal.study.study import PAPER_LOSSES, StudySpec, collect_and_report, parse_losses, prepare_datalist

BUNDLE = default_bundle_dir("kits19")
# a study small enough for CI: tiny network, tiny patches, 1 epoch of 2 iterations
TINY = [
    "-O", "epochs=1",
    "-O", "iterations_per_epoch=2",
    "-O", "patch_size=[32,32,16]",
    "-O", "network_def#features=[4,4,8,8,16,4]",
    "-O", "num_workers=0",
]  # fmt: skip


def _study(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai_mixedfocal", "study", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800, **kwargs)


def test_parse_losses() -> None:
    # "all" is the paper's Table 1 (Section III-D): cosine Tversky in, no plain cross entropy
    assert parse_losses("all") == list(PAPER_LOSSES)
    assert PAPER_LOSSES == ("focal", "dice", "tversky", "cosine_tversky", "focal_tversky", "combo", "mixed_focal")
    assert parse_losses("dice, mixed_focal") == ["dice", "mixed_focal"]
    with pytest.raises(ValueError, match=r"unknown loss name.*nope.*mixed_focal"):
        parse_losses("dice,nope")
    with pytest.raises(ValueError, match=r"loss name\(s\) \['dice'\] given more than once in 'dice,focal,dice'"):
        parse_losses("dice,focal,dice")
    with pytest.raises(ValueError, match=r"no loss named in ' , '; use 'all'"):
        parse_losses(" , ")


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [("kits19", list(PAPER_LOSSES)), ("brats20", ["focal_tversky", "combo", "mixed_focal"])],
)
def test_the_study_runs_the_papers_losses_of_each_data_set_by_default(dataset: str, expected: list[str]) -> None:
    """The paper compares its top three of KiTS19 on BraTS20 (Table 3): 3 pairs for Holm-Bonferroni, not 21."""
    from monai_mixedfocal.cli import build_parser
    from monai_mixedfocal.study.cli import _spec

    args = build_parser().parse_args(["study", "--dataset", dataset, "--data", "/nowhere"])
    assert _spec(args).losses == expected
    args = build_parser().parse_args(["study", "--dataset", dataset, "--data", "/nowhere", "--losses", "all"])
    assert _spec(args).losses == list(PAPER_LOSSES)


def test_format_override_round_trips_through_python_literals() -> None:
    for value in ([8, 16, 32], (64, 64, 32), True, {"a": [1, 2]}, 3e-4, 7):
        text = format_override(value)
        expected = list(value) if isinstance(value, tuple) else value
        assert ast.literal_eval(text) == expected
    assert format_override("mixed_focal") == "mixed_focal"


def test_plan_is_fold_major_with_one_folder_per_run(tmp_path: Path) -> None:
    runs = plan_runs(["dice", "focal"], [0, 1], tmp_path, BUNDLE, {"epochs": 2})
    assert [(r.loss, r.fold) for r in runs] == [("dice", 0), ("focal", 0), ("dice", 1), ("focal", 1)]
    assert len({r.root for r in runs}) == 4
    train, evaluate = runs[0].train_command(), runs[0].evaluate_command()
    assert train[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert ast.literal_eval(evaluate[evaluate.index("--config_file") + 1])[-1].endswith("evaluate.json")
    for cmd in (train, evaluate):
        assert cmd[cmd.index("--bundle_root") + 1] == str(runs[0].root)
        assert cmd[cmd.index("--loss") + 1] == "dice" and cmd[cmd.index("--epochs") + 1] == "2"


def test_spec_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        StudySpec(dataset="lits", data_root=tmp_path, out_dir=tmp_path, losses=["dice"])
    with pytest.raises(ValueError, match=r"fold\(s\) \[5\] out of range"):
        StudySpec(dataset="kits19", data_root=tmp_path, out_dir=tmp_path, losses=["dice"], folds=[5])
    with pytest.raises(ValueError, match="not a bundle"):
        StudySpec(dataset="kits19", data_root=tmp_path, out_dir=tmp_path, losses=["dice"], bundle_dir=tmp_path)


def test_run_logged_reports_epochs_from_the_log(tmp_path: Path) -> None:
    script = "import time\nfor e in (1, 2):\n    print(f'Epoch: {e}/2, Iter: 3/3 -- train_loss: 0.5', flush=True)\n"
    script += "    time.sleep(2.5)\n"
    seen: list[tuple[int, int, int, int]] = []
    code = run_logged([sys.executable, "-c", script], tmp_path / "run.log", seen.append)
    assert code == 0
    assert [s[0] for s in seen] == [1, 2] and seen[0][1] == 2
    assert "Epoch: 2/2" in (tmp_path / "run.log").read_text()
    assert format_seconds(75) == "1m15s" and format_seconds(3700) == "1h01m" and format_seconds(3) == "3s"


def test_log_read_in_chunks_split_inside_a_character_and_a_line(tmp_path: Path) -> None:
    """A read ending inside a multi-byte UTF-8 character or a line reads it again, whole, with the next chunk."""
    log = tmp_path / "run.log"
    log.write_bytes(b"abc\xc3")  # the first byte of "é"
    last, offset = _last_epoch(log, 0)
    assert last is None and offset <= 4  # never past the bytes actually in the file
    with log.open("ab") as handle:
        handle.write("\xa9 Epoch: 3/10, Iter: 7/1".encode()[1:])  # the rest of "é" and a line still being written
    last, offset = _last_epoch(log, offset)
    assert last is None and offset <= 4  # "Iter: 7/1" is not read as 1 iteration of 1
    with log.open("ab") as handle:
        handle.write("2 -- train_loss: 0.4321 ✓\nEpoch: 4/1".encode())
    last, offset = _last_epoch(log, offset)
    assert last == (3, 10, 7, 12)
    assert log.read_bytes()[:offset].decode() == "abcé Epoch: 3/10, Iter: 7/12 -- train_loss: 0.4321 ✓\n"
    with log.open("ab") as handle:
        handle.write(b"0, Iter: 1/12 -- train_loss: 0.4\r")
    assert _last_epoch(log, offset) == ((4, 10, 1, 12), log.stat().st_size)


def test_log_without_line_ends_is_read_up_to_its_last_complete_character(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "_MAX_PENDING", 8)
    log = tmp_path / "run.log"
    log.write_bytes("abcdefgh€".encode()[:-1])  # 10 bytes, the last two of them an incomplete "€"
    assert _last_epoch(log, 0) == (None, 8)
    assert _last_epoch(log, 8) == (None, 8)  # 2 bytes pending: under the limit, read again later


#: a complete per-case CSV of one case (the study reads it as a finished run)
_COMPLETE_CSV = "case,class,dsc,precision,recall,iou,absent\na,kidney,0.5,0.5,0.5,0.33,False\na,tumor,,,,,True\n"


def test_failed_run_is_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    good = Run("dice", 0, tmp_path / "good", BUNDLE)
    good.per_case_csv.parent.mkdir(parents=True)
    good.per_case_csv.write_text(_COMPLETE_CSV)
    # a real bundle command that fails at start: the dataset folder does not exist
    bad = Run("dice", 1, tmp_path / "bad", BUNDLE, {"dataset_dir": str(tmp_path / "missing"), "num_workers": 0})
    lines: list[str] = []
    progress = execute_runs([bad, good], echo=lines.append)
    assert progress.failed == [bad] and progress.done == 1
    assert bad.has_failed and not bad.is_finished and "training FAILED" in "\n".join(lines)
    assert "finished earlier, skipped" in "\n".join(lines)
    # the bundle's own message, which the end of its log buries under MONAI's "Failed to evaluate" traceback
    error = f"monai_mixedfocal.data.errors.DataError: {tmp_path / 'missing'}: KiTS19 root does not exist"
    assert f"[1/2] dice/fold_1: training FAILED (exit code 1): {error}; see {bad.train_log}" in lines
    assert bad.failure_error == error and bad.failure_log == bad.train_log


def test_collect_per_case_and_overlays(tmp_path: Path) -> None:
    runs = plan_runs(["dice", "focal"], [1], tmp_path / "runs", BUNDLE, {})
    label = np.zeros((6, 5, 4), dtype=np.uint8)
    label[2:4, 1:3, 1] = 1
    label[3, 2, 1] = 2
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    case_dir = tmp_path / "data" / "case_00001"  # the KiTS19 layout
    case_dir.mkdir(parents=True)
    nib.save(nib.Nifti1Image(label, affine), case_dir / "segmentation.nii.gz")
    nib.save(nib.Nifti1Image(label.astype(np.float32) * 100, affine), case_dir / "imaging.nii.gz")
    for i, run in enumerate(runs):
        run.per_case_csv.parent.mkdir(parents=True)
        rows = "case,class,dsc,precision,recall,iou,absent\n"
        rows += f"case_00001,kidney,0.{i + 5},0.5,0.5,0.4,False\ncase_00001,tumor,,,,,True\n"
        run.per_case_csv.write_text(rows)
        pred_dir = run.root / "eval" / "case_00001"
        pred_dir.mkdir()
        nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), affine), pred_dir / "imaging_seg.nii.gz")
    table = collect_per_case(runs)
    assert list(table.columns) == ["case", "method", "class", "fold", "dsc", "precision", "recall", "iou"]
    assert table["method"].tolist() == ["dice", "dice", "focal", "focal"] and table["dsc"].isna().sum() == 2
    assert table["fold"].tolist() == [1, 1, 1, 1]  # each run's own fold
    slices = overlay_slices(runs, case_dir / "imaging.nii.gz", case_dir / "segmentation.nii.gz")
    assert slices is not None and set(slices) == {"dice", "focal"}
    image, lab, pred = slices["dice"]
    assert lab.max() == 2 and pred.max() == 1 and image.shape == lab.shape == (5, 6)
    other = tmp_path / "data" / "case_00002"
    assert overlay_slices(runs, other / "imaging.nii.gz", other / "segmentation.nii.gz") is None


def test_overlays_find_the_case_s_own_prediction_not_one_whose_name_starts_alike(tmp_path: Path) -> None:
    """Predictions saved flat (an MSD-style ``imagesTr/spleen_1.nii.gz``): ``spleen_1`` is not ``spleen_10``."""
    (run,) = plan_runs(["dice"], [0], tmp_path / "runs", BUNDLE, {})
    label = np.zeros((6, 5, 4), dtype=np.uint8)
    label[2:4, 1:3, 1] = 1
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(label.astype(np.float32), np.eye(4)), tmp_path / "imagesTr" / "spleen_1.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "labelsTr" / "spleen_1.nii.gz")
    (run.root / "eval").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones_like(label), np.eye(4)), run.root / "eval" / "spleen_10_seg.nii.gz")
    assert (
        overlay_slices([run], tmp_path / "imagesTr" / "spleen_1.nii.gz", tmp_path / "labelsTr" / "spleen_1.nii.gz")
        is None
    )
    nib.save(nib.Nifti1Image(label, np.eye(4)), run.root / "eval" / "spleen_1_seg.nii.gz")
    slices = overlay_slices([run], tmp_path / "imagesTr" / "spleen_1.nii.gz", tmp_path / "labelsTr" / "spleen_1.nii.gz")
    assert slices is not None and slices["dice"][2].sum() == label[..., 1].sum()


def _finish_with_labels_as_predictions(spec: StudySpec, run: Run) -> None:
    """Make ``run`` look evaluated: a per-case CSV and, as prediction, each validation case's own label."""
    content = read_datalist(spec.datalist_path)
    base = spec.datalist_path.parent / content["dataset_root"]
    for item in (item for item in content["training"] if item["fold"] == run.fold):
        (run.root / "eval" / item["case"]).mkdir(parents=True)
        nib.save(nib.load(base / item["label"]), run.root / "eval" / item["case"] / "imaging_seg.nii.gz")
    run.per_case_csv.write_text(_per_case_rows(spec, run.fold))


def _per_case_rows(spec: StudySpec, fold: int) -> str:
    """A complete per-case CSV of ``fold``'s validation cases."""
    rows = "case,class,dsc,precision,recall,iou,absent\n"
    for item in (item for item in read_datalist(spec.datalist_path)["training"] if item["fold"] == fold):
        rows += f"{item['case']},kidney,0.8,0.8,0.8,0.67,False\n{item['case']},tumor,0.5,0.5,0.5,0.33,False\n"
    return rows


def test_report_of_a_partial_study_says_what_is_missing(tmp_path: Path) -> None:
    """Fold 0 failed for every loss, fold 1 finished: the report is written (overlays from fold 1) and names the
    missing runs; a different --data for the same study folder is refused."""
    data = tmp_path / "data"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    out = tmp_path / "study"
    spec = StudySpec(dataset="kits19", data_root=data, out_dir=out, losses=["dice", "focal"], num_folds=2)
    prepare_datalist(spec)
    runs = spec.runs()
    for run in runs:
        if run.fold == 1:
            _finish_with_labels_as_predictions(spec, run)
        else:
            run.root.mkdir(parents=True)
            (run.root / "failed.json").write_text('{"step": "training", "log": "train.log"}')
    text = collect_and_report(spec, echo=lambda line: None).read_text()
    assert "> **Note:** incomplete study: 2 of 4 runs have finished" in text
    assert "dice/fold_0 (failed), focal/fold_0 (failed)" in text
    assert (spec.out_dir / "overlays.png").is_file()
    other = tmp_path / "other"
    synthesize_kits19(other, cases=5, seed=1, shape=(16, 16, 16))
    moved = StudySpec(dataset="kits19", data_root=other, out_dir=spec.out_dir, losses=["dice"], num_folds=2)
    with pytest.raises(ValueError, match=r"lists the data set in .*data, not --data .*other"):
        prepare_datalist(moved)
    same = StudySpec(dataset="kits19", data_root=data / "data", out_dir=spec.out_dir, losses=["dice"], num_folds=2)
    assert prepare_datalist(same) == spec.datalist_path  # the repository's data/ folder is the same data set


def test_a_command_with_only_folds_reports_every_fold_of_the_study(tmp_path: Path) -> None:
    """Against the bug (the report of the folds given): ``--only-folds 1`` run again to redo one fold, or on one node
    of a cluster, replaced the complete report and per_case.csv with that fold's."""
    data = tmp_path / "data"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    spec = StudySpec(dataset="kits19", data_root=data, out_dir=tmp_path / "study", losses=["dice"], num_folds=2)
    prepare_datalist(spec)
    for run in spec.runs():
        run.root.mkdir(parents=True)
        _finish_with_labels_as_predictions(spec, run)
    one_fold = StudySpec(
        dataset="kits19", data_root=data, out_dir=spec.out_dir, losses=["dice"], num_folds=2, folds=[1]
    )
    lines: list[str] = []
    text = collect_and_report(one_fold, echo=lines.append).read_text()
    assert set(pd.read_csv(spec.out_dir / "per_case.csv")["fold"]) == {0, 1} and "incomplete study" not in text
    assert lines[-1].endswith("(2/2 runs, 4 cases)")
    shutil.rmtree(spec.runs()[0].root)  # fold 0 not run yet: named as missing, not left out without a word
    text = collect_and_report(one_fold, echo=lines.append).read_text()
    assert "incomplete study: 1 of 2 runs have finished; missing: dice/fold_0 (not finished)" in text


def test_a_study_folder_moved_away_from_its_data_is_collected_there(tmp_path: Path) -> None:
    """Against the bugs: a study folder moved or copied elsewhere (from scratch space to a project folder), its data
    set left where it was, was refused ("lists the data set in <nowhere>, not --data ...": datalist.json records the
    data set relative to itself), and its runs were flagged as made with other settings (settings.json records
    absolute paths). datalist.json is written again for the data's place; another data set is still refused, a
    --data that does not hold the cases is named as such, and a setting changed otherwise is still flagged."""
    data = tmp_path / "kits19"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    spec = StudySpec(
        dataset="kits19", data_root=data, out_dir=tmp_path / "scratch" / "study", losses=["dice"], num_folds=2
    )
    prepare_datalist(spec)
    before = read_datalist(spec.datalist_path)
    for run in spec.runs():
        run.root.mkdir(parents=True)
        run.record_settings()
        _finish_with_labels_as_predictions(spec, run)
    moved = tmp_path / "home" / "me" / "study"
    moved.parent.mkdir(parents=True)
    shutil.move(spec.out_dir, moved)
    there = StudySpec(dataset="kits19", data_root=data, out_dir=moved, losses=["dice"], num_folds=2)
    elsewhere = StudySpec(dataset="kits19", data_root=tmp_path / "nowhere", out_dir=moved, losses=["dice"], num_folds=2)
    with pytest.raises(
        ValueError, match=r"under .*/home/kits19, which does not hold them \(was the study folder moved"
    ):
        prepare_datalist(elsewhere)
    assert prepare_datalist(there) == moved / "datalist.json"
    after = read_datalist(there.datalist_path)
    assert after["dataset_root"] == "../../../kits19" and after["training"] == before["training"]
    assert [run.settings_changes() for run in there.runs()] == [[], []]
    text = collect_and_report(there, echo=lambda line: None).read_text()
    assert "incomplete study" not in text and "mixed settings" not in text and (moved / "overlays.png").is_file()
    changed = StudySpec(
        dataset="kits19", data_root=data, out_dir=moved, losses=["dice"], num_folds=2, overrides={"epochs": 3}
    )
    assert changed.runs()[0].settings_changes() == ["epochs: (unset) -> '3'"]
    other = tmp_path / "home" / "kits19"  # another data set
    synthesize_kits19(other, cases=4, seed=1, shape=(16, 16, 16))
    with pytest.raises(ValueError, match=r"lists the data set in .*/kits19, not --data .*home/kits19"):
        prepare_datalist(StudySpec(dataset="kits19", data_root=other, out_dir=moved, losses=["dice"], num_folds=2))


@pytest.mark.parametrize("place", ["deeper", "same depth"])
def test_a_brats20_study_moved_away_from_its_data_keeps_its_masks_in_the_study_folder(
    tmp_path: Path, place: str
) -> None:
    """Against the bug: the enhancing-tumour masks, written into the study folder, are named in datalist.json relative
    to the data set; a study moved away from its data read (and wrote) them in the old study folder, and its report
    failed once that was deleted. Also when the move keeps the data set's root valid (the same depth)."""
    data = tmp_path / "BraTS2020"
    synthesize_brats20(data, cases=4, seed=0, shape=(16, 16, 16))
    scratch = tmp_path / "scratch" / "study"
    spec = StudySpec(dataset="brats20", data_root=data, out_dir=scratch, losses=["dice"], num_folds=2)
    prepare_datalist(spec)
    before = read_datalist(spec.datalist_path)
    moved = tmp_path / "home" / "me" / "study" if place == "deeper" else tmp_path / "home" / "study"
    moved.parent.mkdir(parents=True)
    shutil.copytree(spec.out_dir, moved)
    shutil.rmtree(tmp_path / "scratch")  # the scratch space purged
    there = replace(spec, out_dir=moved)
    prepare_datalist(there)
    content = read_datalist(there.datalist_path)
    base = there.datalist_path.parent / content["dataset_root"]
    labels = [Path(os.path.normpath(base / item["label"])) for item in content["training"]]
    assert all(label.parent == moved / "labels_et" and label.is_file() for label in labels)
    assert [(item["case"], item["fold"], item["image"]) for item in content["training"]] == [
        (item["case"], item["fold"], item["image"]) for item in before["training"]
    ]
    train, _ = load_split("brats20", str(data), 0, datalist=str(there.datalist_path), num_folds=2)
    assert all(Path(item["label"]).parent == moved / "labels_et" for item in train)
    assert not (tmp_path / "scratch").exists()


def test_a_study_whose_data_lost_a_file_is_not_taken_for_moved(tmp_path: Path) -> None:
    """Against the rewrite of an unmoved study's datalist: the data set missing one file, a backup given as --data
    was taken for the data's new place and datalist.json pointed at it. It is refused, as another data set."""
    data, backup = tmp_path / "d" / "kits19", tmp_path / "backup" / "deep" / "kits19"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    shutil.copytree(data, backup)
    spec = StudySpec(dataset="kits19", data_root=data, out_dir=tmp_path / "s" / "study", losses=["dice"], num_folds=2)
    prepare_datalist(spec)
    written = spec.datalist_path.read_bytes()
    first = read_datalist(spec.datalist_path)["training"][0]["image"]
    (data / first).unlink()
    with pytest.raises(ValueError, match=r"lists the data set in .*/d/kits19, not --data .*backup"):
        prepare_datalist(replace(spec, data_root=backup))
    assert spec.datalist_path.read_bytes() == written


def test_a_kits19_study_made_on_the_data_folder_follows_the_repository(tmp_path: Path) -> None:
    """A study made with --data kits19/data, moved away from it, then run with --data kits19 (the repository, the
    same data set): it was refused, saying that --data did not hold the cases."""
    synthesize_kits19(tmp_path / "kits19", cases=4, seed=0, shape=(16, 16, 16))
    made = {"dataset": "kits19", "data_root": tmp_path / "kits19" / "data", "out_dir": tmp_path / "a" / "study"}
    spec = StudySpec(**made, losses=["dice"], num_folds=2)
    prepare_datalist(spec)
    shutil.move(tmp_path / "a", tmp_path / "b" / "c")
    there = replace(spec, data_root=tmp_path / "kits19", out_dir=tmp_path / "b" / "c" / "study")
    assert prepare_datalist(there) == there.datalist_path
    assert read_datalist(there.datalist_path)["dataset_root"] == "../../../kits19/data"


def test_the_overlays_show_a_case_of_the_fold_with_the_most_finished_runs_the_first_on_a_tie(tmp_path: Path) -> None:
    """As ``_overlay_case`` says: against the bug (tie broken to the highest fold), which no test saw. Both folds
    finished: a fold 0 case; fold 0 with one run fewer: a fold 1 case."""
    data = tmp_path / "data"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    spec = StudySpec(dataset="kits19", data_root=data, out_dir=tmp_path / "out", losses=["dice", "focal"], num_folds=2)
    prepare_datalist(spec)
    fold_of = {item["case"]: item["fold"] for item in read_datalist(spec.datalist_path)["training"]}
    runs = spec.runs()
    for run in runs:
        _finish_with_labels_as_predictions(spec, run)

    def overlay_fold() -> int:
        text = collect_and_report(spec, echo=lambda line: None).read_text()
        (case,) = (case for case in fold_of if f"![Segmentations of {case}]" in text)
        return fold_of[case]

    assert overlay_fold() == 0
    next(run for run in runs if run.fold == 0).per_case_csv.unlink()
    assert overlay_fold() == 1


@pytest.mark.parametrize("axes", [("R", "A", "S"), ("L", "P", "S"), ("I", "P", "L")], ids=["RAS", "LPS", "KiTS19"])
def test_the_overlays_show_axial_slices_as_radiologists_do(tmp_path: Path, axes: tuple[str, str, str]) -> None:
    """Against the bug (the view mirrored left to right): the patient's right on the viewer's left and anterior at the
    top, whatever the files' orientation (KiTS19 stores slices x rows x columns, the slice spacing in the affine's
    first column). Marker: the rarest class at the patient's right anterior corner of one slice."""
    ras = np.zeros((6, 5, 4), dtype=np.uint8)  # x (to the patient's right), y (to anterior), z (to superior)
    ras[1:5, 1:4, :] = 1
    ras[-1, -1, 2] = 2  # right, anterior, slice 2
    image = np.arange(ras.size, dtype=np.float32).reshape(ras.shape)
    to_axes = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(axes))
    paths = {}
    for name, volume in {"imaging": image, "segmentation": ras}.items():
        written = nib.Nifti1Image(volume, np.diag([0.8, 0.8, 5.0, 1.0])).as_reoriented(to_axes)
        assert nib.aff2axcodes(written.affine) == axes
        paths[name] = tmp_path / "case_00000" / f"{name}.nii.gz"
        paths[name].parent.mkdir(exist_ok=True)
        nib.save(written, paths[name])
    run = Run("dice", 0, tmp_path / "run", BUNDLE, {})
    (run.root / "eval").mkdir(parents=True)
    nib.save(nib.load(paths["segmentation"]), run.root / "eval" / "imaging_seg.nii.gz")
    slices = overlay_slices([run], paths["imaging"], paths["segmentation"])
    assert slices is not None
    shown_image, shown_label, shown_prediction = slices["dice"]
    assert shown_label[0, 0] == 2 and (shown_label == 2).sum() == 1  # top left: the patient's right, anterior
    np.testing.assert_array_equal(shown_prediction, shown_label)
    np.testing.assert_array_equal(shown_image, image[::-1, ::-1, 2].T)  # rows: y falling, columns: x falling


def test_the_study_says_when_it_draws_no_overlays(tmp_path: Path) -> None:
    """Finished runs whose evaluation saved no segmentation: the report has no overlays.png, and the study says why
    (it left the figure out without a word)."""
    data = tmp_path / "data"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    spec = StudySpec(dataset="kits19", data_root=data, out_dir=tmp_path / "out", losses=["dice"], num_folds=2)
    prepare_datalist(spec)
    for run in spec.runs():
        run.per_case_csv.parent.mkdir(parents=True)
        run.per_case_csv.write_text(_per_case_rows(spec, run.fold))
    lines: list[str] = []
    collect_and_report(spec, echo=lines.append)
    assert not (spec.out_dir / "overlays.png").exists()
    assert lines[0].startswith("no overlays.png: no validation case has a saved segmentation") and len(lines) == 2


def test_a_run_made_with_other_settings_is_flagged(tmp_path: Path) -> None:
    run = Run("dice", 0, tmp_path / "run", BUNDLE, {"epochs": 2})
    run.root.mkdir()
    run.record_settings()
    run.per_case_csv.parent.mkdir()
    run.per_case_csv.write_text(_COMPLETE_CSV)
    lines: list[str] = []
    execute_runs([Run("dice", 0, run.root, BUNDLE, {"epochs": 3, "seed": 1})], echo=lines.append)
    assert "made with other settings (epochs: '2' -> '3'; seed: (unset) -> '1')" in lines[0]
    lines.clear()
    execute_runs([run], echo=lines.append)
    assert "other settings" not in "\n".join(lines)


def test_collect_only_and_dry_run_check_and_warn_as_a_study_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--collect-only`` (the cluster workflow) refuses another fold assignment and warns of runs made with other
    settings and of damaged CSVs, as a study run does, and its report says so; ``--dry-run`` too, on stderr."""
    from monai_mixedfocal.cli import main as cli_main

    data, out = tmp_path / "data", tmp_path / "study"
    synthesize_kits19(data, cases=4, seed=0, shape=(16, 16, 16))
    spec = StudySpec(
        dataset="kits19", data_root=data, out_dir=out, losses=["dice"], num_folds=2, overrides={"epochs": 2}
    )
    prepare_datalist(spec)
    for run in spec.runs():
        run.record_settings()
        _finish_with_labels_as_predictions(spec, run)

    def study(*options: str) -> tuple[int, str, str]:
        args = ["study", "--dataset", "kits19", "--data", str(data), "--folds", "2", "--losses", "dice"]
        code = cli_main([*args, "--out", str(out), *options])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, stdout, stderr = study("-O", "epochs=2", "--collect-only")
    assert code == 0 and stderr == "" and "(2/2 runs, 4 cases)" in stdout
    report = (out / "report.md").read_text()
    assert "> **Note:**" not in report
    code, stdout, stderr = study("-O", "epochs=2", "--seed", "3", "--collect-only")
    assert (
        code == 2
        and stderr.startswith("error: ")
        and "2-fold assignment with seed 0, not 2 folds with seed 3" in stderr
    )
    assert (out / "report.md").read_text() == report  # not rewritten
    code, stdout, stderr = study("-O", "epochs=3", "--collect-only")
    assert code == 0 and stderr.count("WARNING: made with other settings (epochs: '2' -> '3')") == 2
    assert "mixed settings: 2 finished run(s) were made with other settings" in (out / "report.md").read_text()
    damaged = spec.runs()[1].per_case_csv
    damaged.write_text(damaged.read_text()[:60])
    code, stdout, stderr = study("-O", "epochs=2", "--collect-only")
    assert code == 0 and f"dice/fold_1: WARNING: {damaged}" in stderr and "; not collected" in stderr
    assert "missing: dice/fold_1 (damaged per-case CSV)" in (out / "report.md").read_text()
    code, stdout, stderr = study("-O", "epochs=2", "--dry-run")
    assert code == 0 and stdout.count("monai.bundle run training") == 1 and "dice/fold_1: WARNING" in stderr
    damaged.write_text(_per_case_rows(spec, 1))
    code, stdout, stderr = study("-O", "epochs=2", "--dry-run")
    assert code == 0 and stdout == "" and stderr == "all 2 runs have finished; nothing to run\n"
    code, stdout, stderr = study("--losses", "dice,dice", "--dry-run")
    assert code == 2 and "given more than once" in stderr


def test_collect_without_finished_runs_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no finished run"):
        collect_per_case(plan_runs(["dice"], [0], tmp_path, BUNDLE, {}))


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = _study("--dataset", "kits19", "--data", str(tmp_path / "none"), "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    result = _study("--demo", "--losses", "dice,nope", "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "nope" in result.stderr


def test_dry_run_prints_one_line_per_run(tmp_path: Path) -> None:
    result = _study("--demo", "--out", str(tmp_path / "s"), "--dry-run", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 * 2 and all(" -m monai.bundle run training " in line for line in lines)
    assert (tmp_path / "s" / "datalist.json").is_file() and not (tmp_path / "s" / "runs").exists()


@pytest.mark.slow
def test_a_dry_run_line_run_again_evaluates_without_training_again(tmp_path: Path) -> None:
    """A cluster job requeued after its training ended (preempted during the evaluation, say): the printed line
    evaluates the trained model; it trained the run over from scratch (the bundle starts over from a finished
    last.pt)."""
    printed = _study("--demo", "--losses", "dice", "--only-folds", "0", "--out", "s", "--dry-run", *TINY, cwd=tmp_path)
    (line,) = printed.stdout.strip().splitlines()
    root = tmp_path / "s" / "runs" / "dice" / "fold_0"
    first = subprocess.run(["bash", "-c", line], cwd="/", capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (root / "trained.ok").is_file() and (root / "eval" / PER_CASE_CSV).is_file()
    trained = (root / "checkpoints" / "last.pt").stat().st_mtime_ns
    (root / "eval" / PER_CASE_CSV).unlink()
    again = subprocess.run(["bash", "-c", line], cwd="/", capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (root / "checkpoints" / "last.pt").stat().st_mtime_ns == trained
    assert not (root / "checkpoints" / "model_of_finished_run.pt").exists()
    assert (root / "eval" / PER_CASE_CSV).is_file()


@pytest.mark.slow
def test_interrupted_study_resumes_and_reports_like_an_uninterrupted_one(tmp_path: Path) -> None:
    args = ["--demo", "--losses", "dice", *TINY]
    reference = _study(*args, "--out", str(tmp_path / "ref"), cwd=tmp_path)
    assert reference.returncode == 0, reference.stdout + reference.stderr

    out = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "monai_mixedfocal", "study", *args, "--out", str(out)]
    first = out / "runs" / "dice" / "fold_0" / "eval" / PER_CASE_CSV
    second_log = out / "runs" / "dice" / "fold_1" / "train.log"
    process = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1200
    while not second_log.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # killed mid-way: during the second run's training start
    process.wait()
    assert first.is_file() and not (out / "runs" / "dice" / "fold_1" / "eval" / PER_CASE_CSV).exists()
    finished_at = first.stat().st_mtime_ns

    resumed = _study(*args, "--out", str(out), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "[1/2] dice/fold_0: finished earlier, skipped" in resumed.stdout
    assert first.stat().st_mtime_ns == finished_at  # the finished run was not redone
    expected = pd.read_csv(tmp_path / "ref" / "per_case.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out / "per_case.csv"), expected)
    assert (out / "summary.csv").read_text() == (tmp_path / "ref" / "summary.csv").read_text()


@pytest.mark.slow
def test_a_study_moved_while_interrupted_resumes_where_it_lies_now(tmp_path: Path) -> None:
    """Against the bug (paths compared as recorded): a study interrupted during a training and moved to another path,
    its data set left where it was, could not resume there (the bundle took its own interrupted run for another's,
    its datalist at a new path; the study refused the datalist, whose data set root is relative to it)."""
    data = tmp_path / "kits19"
    synthesize_kits19(data, cases=4, seed=0, shape=(32, 64, 64))
    two_epochs = [value.replace("epochs=1", "epochs=2") if value.startswith("epochs=") else value for value in TINY]
    args = ["--dataset", "kits19", "--data", str(data), "--losses", "dice", "--folds", "2", *two_epochs]
    out = tmp_path / "scratch" / "study"
    checkpoint = out / "runs" / "dice" / "fold_1" / "checkpoints" / "last.pt"
    cmd = [sys.executable, "-m", "monai_mixedfocal", "study", *args, "--out", str(out)]
    process = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1200
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # killed after the second run's first epoch
    process.wait()
    assert checkpoint_progress(checkpoint)[:2] == (1, 2), "the training was not interrupted mid-way"
    moved = tmp_path / "home" / "me" / "study"
    moved.parent.mkdir(parents=True)
    shutil.move(out, moved)
    resumed = _study(*args, "--out", str(moved), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "[1/2] dice/fold_0: finished earlier, skipped" in resumed.stdout and "WARNING" not in resumed.stdout
    log = (moved / "runs" / "dice" / "fold_1" / "train.log").read_text()
    assert f"resumed from {moved}/runs/dice/fold_1/checkpoints/last.pt at epoch 1 of 2" in log
    assert pd.read_csv(moved / "per_case.csv")["case"].nunique() == 4


@pytest.mark.slow
def test_demo_study_end_to_end(tmp_path: Path) -> None:
    """The README's main job, with a shortened schedule: 3 losses x 2 folds, every table and figure."""
    result = _study("--demo", "--out", str(tmp_path / "demo"), *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "demo"
    table = pd.read_csv(out / "per_case.csv")
    assert set(table["method"]) == {"cross_entropy", "dice", "mixed_focal"} and set(table["fold"]) == {0, 1}
    assert table.groupby("method")["case"].nunique().eq(10).all()  # every generated case validated once per loss
    report = (out / "report.md").read_text()
    assert "## Table 1" in report and report.count("## Table 2") == 2
    for name in ("summary.csv", "summary.tex", "boxplot_dsc.png", "precision_recall.png", "overlays.png"):
        assert (out / name).stat().st_size > 1000, name


def _fake_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training does nothing; the evaluation copies ``ready.csv`` to the per-case CSV."""
    import sys

    import monai_mixedfocal.study.runner as runner_module
    from monai_mixedfocal.study.runs import Run

    script = (
        "import os, shutil, sys; os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True); shutil.copy(*sys.argv[1:])"
    )
    monkeypatch.setattr(runner_module, "_POLL_SECONDS", 0.05)
    monkeypatch.setattr(Run, "train_command", lambda self: [sys.executable, "-c", "pass"])
    monkeypatch.setattr(
        Run,
        "evaluate_command",
        lambda self: [sys.executable, "-c", script, str(self.root / "ready.csv"), str(self.per_case_csv)],
    )


def test_a_retried_run_that_succeeds_is_no_longer_marked_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the bug (drop the ``failed.json`` unlink before a retry): a run that failed once stayed "failed"
    (``has_failed``, the report's "(failed)") after a successful retry."""
    from monai_mixedfocal.study.runner import execute_runs
    from monai_mixedfocal.study.runs import Run, default_bundle_dir

    _fake_commands(monkeypatch)
    run = Run("dice", 0, tmp_path / "run", default_bundle_dir("kits19"))
    run.root.mkdir(parents=True)
    (run.root / "failed.json").write_text('{"step": "training", "log": "train.log"}')
    (run.root / "ready.csv").write_text(_COMPLETE_CSV)
    progress = execute_runs([run], echo=lambda line: None)
    assert progress.done == 1 and not progress.failed and run.is_finished and not run.has_failed


def test_a_training_started_over_records_its_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the bug ``start_kind in ("new", "over")`` -> ``== "new"``: a run trained from scratch over a finished
    last.pt kept the settings.json of the old run, and was then reported as "made with other settings"."""
    from monai_mixedfocal.bundle.run_settings import run_settings
    from monai_mixedfocal.study.runner import execute_runs
    from monai_mixedfocal.study.runs import SETTINGS_FILE, Run, default_bundle_dir
    from monai_mixedfocal.utils import atomic_write_json

    _fake_commands(monkeypatch)
    overrides = {"dataset_dir": str(tmp_path / "data"), "datalist": str(tmp_path / "none.json"), "num_folds": 2}
    run = Run("dice", 0, tmp_path / "run", default_bundle_dir("kits19"), {**overrides, "epochs": 2})
    run.resume_checkpoint.parent.mkdir(parents=True)
    settings = run_settings(tmp_path / "data", tmp_path / "none.json", 0, 2, 0, "dice", {}, 0)
    atomic_write_json(
        run.resume_checkpoint.with_suffix(".json"), {"run_settings": settings, "epoch": 2, "max_epochs": 2}
    )
    run.resume_checkpoint.write_bytes(b"checkpoint")  # unreadable: last.json decides; no model.pt: not trained
    assert run.training_start() == "over"
    atomic_write_json(run.root / SETTINGS_FILE, {**run.settings, "loss": "focal"})  # the old run's
    (run.root / "ready.csv").write_text(_COMPLETE_CSV)
    execute_runs([run], echo=lambda line: None)
    assert run.is_finished and run.settings_changes() == []


def test_the_study_eta_leaves_out_the_failed_runs() -> None:
    """Against the bug (``remaining`` counts failed runs too): the ETA included runs that will not run again."""
    from monai_mixedfocal.study.runner import StudyProgress

    progress = StudyProgress(total=5, done=1, failed=["x"], run_seconds=[10.0, 30.0])
    assert progress.eta() == pytest.approx(3 * 20.0)


def test_a_brats20_study_writes_its_masks_into_the_study_folder(tmp_path: Path) -> None:
    """Against the bug (``labels_dir`` not passed): the study wrote its enhancing-tumour masks into the data set folder
    (often read-only, and shared with other studies) instead of OUT/labels_et."""
    from monai_mixedfocal.study.study import StudySpec, prepare_datalist

    data, out = tmp_path / "brats", tmp_path / "study"
    synthesize_brats20(data, cases=2, shape=(24, 24, 16))
    spec = StudySpec(dataset="brats20", data_root=data, out_dir=out, losses=["dice"], num_folds=2)
    prepare_datalist(spec)
    assert len(list((out / "labels_et").glob("*_et.nii.gz"))) == 2
    assert not list(data.rglob("*_et.nii.gz"))


def test_run_logged_reports_each_epoch_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the bug (drop ``last[0] != seen_epoch``): a progress line per poll instead of per epoch; the existing
    test logs one line per epoch, so each poll sees a new epoch anyway."""
    import sys

    import monai_mixedfocal.study.runner as runner_module

    monkeypatch.setattr(runner_module, "_POLL_SECONDS", 0.05)
    script = "import time\nfor e, i in ((1, 1), (1, 2), (1, 3), (2, 1), (2, 2)):\n"
    script += "    print(f'Epoch: {e}/2, Iter: {i}/3 -- train_loss: 0.5', flush=True)\n    time.sleep(0.4)\n"
    seen: list[tuple[int, int, int, int]] = []
    assert runner_module.run_logged([sys.executable, "-c", script], tmp_path / "run.log", seen.append) == 0
    assert [state[0] for state in seen] == [1, 2]
