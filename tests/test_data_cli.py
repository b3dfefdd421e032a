# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The ``synthesize`` and ``datalist`` commands, through ``python -m monai_mixedfocal`` and in-process ``main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data_msd import make_msd

from monai_mixedfocal.cli import main
from monai_mixedfocal.data import synthesize_kits19
from monai_mixedfocal.data.io import save_nifti


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai_mixedfocal", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_synthesize_then_datalist_in_a_subprocess(tmp_path: Path) -> None:
    root = tmp_path / "kits"
    ids = ["0", "1", "2", "3", "4", "15"]
    result = _run("synthesize", "kits19", str(root), "--case-ids", *ids, "--shape", "16", "32", "32")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (root / "data").iterdir())[-1] == "case_00015"
    out = tmp_path / "lists" / "datalist.json"
    result = _run("datalist", "kits19", str(root), "--out", str(out), "--folds", "5", "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert "KiTS19: 5 cases kept, 1 excluded" in result.stdout
    assert "fold 0: 1, fold 1: 1, fold 2: 1, fold 3: 1, fold 4: 1" in result.stdout
    assert "excluded 1: in the exclusion list" in result.stdout and "case_00015" in result.stdout
    content = json.loads(out.read_text())
    assert content["dataset_root"] == "../kits" and len(content["training"]) == 5
    assert content["excluded"][0]["case"] == "case_00015"


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = _run("datalist", "kits19", str(tmp_path / "missing"), "--out", str(tmp_path / "d.json"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert str(tmp_path / "missing") in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "d.json").exists()


def test_folds_are_protected_and_brats_masks_go_beside_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "brats"
    small = ["--shape", "24", "24", "16"]
    assert main(["synthesize", "brats20", str(root), "--cases", "4", "--no-enhancing", "2", *small]) == 0
    out = tmp_path / "runs" / "brats20.json"
    assert main(["datalist", "brats20", str(root), "--out", str(out), "--folds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "BraTS20: 3 cases kept, 1 excluded" in printed and "BraTS20_Training_002" in printed
    first = out.read_bytes()
    masks = sorted(p.name for p in (tmp_path / "runs" / "brats20_labels_et").iterdir())  # one folder per datalist
    assert masks == [f"BraTS20_Training_00{i}_et.nii.gz" for i in range(1, 5)]
    assert all(item["label"].startswith("../runs/brats20_labels_et/") for item in json.loads(first)["training"])
    assert main(["datalist", "brats20", str(root), "--out", str(out), "--folds", "3"]) == 0
    assert out.read_bytes() == first and "unchanged" in capsys.readouterr().out  # same seed: same folds
    assert main(["datalist", "brats20", str(root), "--out", str(out), "--folds", "3", "--seed", "1"]) == 2
    assert "exists with other content (seed: 0 -> 1;" in capsys.readouterr().err
    assert out.read_bytes() == first
    assert main(["datalist", "brats20", str(root), "--out", str(out), "--folds", "3", "--seed", "1", "--force"]) == 0
    assert json.loads(out.read_text())["seed"] == 1
    assert main(["datalist", "brats20", str(root), "--out", str(out), "--folds", "9", "--force"]) == 2
    assert "cannot assign 9 folds" in capsys.readouterr().err
    # another data set with the same case names: refused before a mask of this datalist is rewritten
    other = tmp_path / "other"
    assert main(["synthesize", "brats20", str(other), "--cases", "4", "--seed", "5", *small]) == 0
    masks_before = {p.name: p.read_bytes() for p in (tmp_path / "runs" / "brats20_labels_et").iterdir()}
    assert main(["datalist", "brats20", str(other), "--out", str(out), "--folds", "3"]) == 2
    assert f"exists for the data set in {root.resolve()}, not {other}" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "runs" / "brats20_labels_et").iterdir()} == masks_before
    blocked = ["--labels-dir", str(out)]  # a file: the masks cannot be written below it
    assert main(["datalist", "brats20", str(root), "--out", str(tmp_path / "b.json"), *blocked]) == 2
    assert "cannot write the enhancing-tumour mask" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
    assert main(["synthesize", "brats20", str(tmp_path / "b"), "--case-ids", "1", "1000", *small]) == 2
    assert "case ids must lie in 1..999" in capsys.readouterr().err
    assert main(["synthesize", "kits19", str(tmp_path / "k"), "--cases", "0"]) == 2


def test_synthesize_brats20_as_the_official_release_ships_it_uncompressed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "brats"
    assert (
        main(["synthesize", "brats20", str(root), "--cases", "2", "--suffix", ".nii", "--shape", "24", "24", "16"]) == 0
    )
    names = sorted(p.name for p in (root / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_001").iterdir())
    assert names == [f"BraTS20_Training_001_{m}.nii" for m in ("flair", "seg", "t1", "t1ce", "t2")]
    assert main(["datalist", "brats20", str(root), "--out", str(tmp_path / "b.json"), "--folds", "2"]) == 0
    training = json.loads((tmp_path / "b.json").read_text())["training"]
    assert [item["image"].rsplit("/", 1)[-1] for item in training] == [
        "BraTS20_Training_001_t1ce.nii",
        "BraTS20_Training_002_t1ce.nii",
    ]
    assert main(["synthesize", "kits19", str(tmp_path / "k"), "--suffix", ".nii"]) == 2
    assert "--suffix is for brats20" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["kits19", "brats20"])
def test_synthesize_refuses_to_write_over_existing_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    """A mistyped output folder (the real data set's) had its scans replaced by valid-looking phantoms, without a word;
    now nothing is written unless --force."""
    root, small = tmp_path / source, ["--shape", "16", "24", "24"]
    assert main(["synthesize", source, str(root), "--cases", "3", *small]) == 0
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert main(["synthesize", source, str(root), "--cases", "2", "--seed", "4", *small]) == 2
    assert "exists (and 1 more case folder(s)): generated cases are not written over" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files  # not one file changed
    assert main(["synthesize", source, str(root), "--cases", "2", "--seed", "4", "--force", *small]) == 0
    changed = {p.parent.name for p in files if p.read_bytes() != files[p]}
    assert changed == (
        {"case_00000", "case_00001"} if source == "kits19" else {f"BraTS20_Training_00{i}" for i in (1, 2)}
    )


def test_synthesize_kits19_with_a_ct_like_spacing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--spacing`` sets the nominal voxel size (jittered by up to 10% per case); BraTS20 refuses it (1 mm)."""
    import nibabel as nib

    args = ["--cases", "1", "--shape", "16", "16", "16", "--spacing", "3", "0.78", "0.78"]
    assert main(["synthesize", "kits19", str(tmp_path / "k"), *args]) == 0
    zooms = nib.load(tmp_path / "k" / "data" / "case_00000" / "imaging.nii.gz").header.get_zooms()
    assert zooms == pytest.approx((3.0, 0.78, 0.78), rel=0.1) and zooms != pytest.approx((2.5, 1.25, 1.25), rel=0.1)
    assert main(["synthesize", "brats20", str(tmp_path / "b"), *args]) == 2
    assert capsys.readouterr().err == "error: --spacing is for kits19: the BraTS20 layout is 1 mm isotropic\n"
    assert main(["synthesize", "kits19", str(tmp_path / "n"), *args[:6], "--spacing", "3", "0", "1"]) == 2
    assert "spacing must be three positive voxel sizes in mm" in capsys.readouterr().err


def test_a_kits19_repository_and_its_data_folder_are_one_data_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "another data set": the refusal names what differs, the paths of the same cases."""
    root, out = tmp_path / "kits19", tmp_path / "kits19.json"
    assert main(["synthesize", "kits19", str(root), "--cases", "3", "--shape", "16", "16", "16"]) == 0
    assert main(["datalist", "kits19", str(root), "--out", str(out), "--folds", "2"]) == 0
    capsys.readouterr()
    assert main(["datalist", "kits19", str(root / "data"), "--out", str(out), "--folds", "2"]) == 2
    err = capsys.readouterr().err
    assert "exists for the data set" not in err and "3 case(s) listed with other paths" in err


def test_datalist_keep_all_keeps_the_kits19_exclusions(tmp_path: Path, capsys) -> None:
    """Against the bug (``--keep-all`` ignored for KiTS19): the paper's exclusion list always applied."""
    root = tmp_path / "kits19"
    synthesize_kits19(root, case_ids=[0, 1, 2, 15], shape=(16, 16, 16))
    out = tmp_path / "all.json"
    assert main(["datalist", "kits19", str(root), "--out", str(out), "--folds", "2", "--keep-all"]) == 0
    assert [item["case"] for item in json.loads(out.read_text())["training"]][-1] == "case_00015"
    assert main(["datalist", "kits19", str(root), "--out", str(tmp_path / "paper.json"), "--folds", "2"]) == 0
    assert "case_00015" not in [item["case"] for item in json.loads((tmp_path / "paper.json").read_text())["training"]]


def test_datalist_msd_given_its_dataset_json_twice_is_unchanged(tmp_path: Path, capsys) -> None:
    """Against the bug (``folder = root`` for a root naming dataset.json): writing the same MSD datalist again was
    refused as "exists for the data set in <folder>, not <folder>/dataset.json"."""
    root = make_msd(tmp_path / "msd", [(8, 8, 6)] * 2, {"0": "background"})
    args = ["datalist", "msd", str(root / "dataset.json"), "--out", str(tmp_path / "msd.json"), "--folds", "2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    assert "unchanged" in capsys.readouterr().out


def test_datalist_msd_check_labels_reads_the_labels(tmp_path: Path, capsys) -> None:
    """Against the bug (``--check-labels`` not passed to msd_datalist): an undefined label value was written into the
    datalist without a word."""
    root = make_msd(tmp_path / "msd", [(8, 8, 6)] * 2, {"0": "background"})
    label = np.zeros((8, 8, 6), np.uint8)
    label[0, 0, 0] = 3
    save_nifti(root / "labelsTr" / "img_001.nii.gz", label, np.eye(4))
    args = ["datalist", "msd", str(root), "--out", str(tmp_path / "msd.json"), "--folds", "2"]
    assert main([*args, "--check-labels"]) == 2
    assert "label value(s) 3 not defined for Toy" in capsys.readouterr().err
    assert main(args) == 0  # headers only without the option


def test_a_datalist_in_a_linked_folder_is_written_again_for_its_own_data(tmp_path: Path) -> None:
    """A datalist written into ``runs -> real/sub`` records its root from ``real/sub``; writing it again for the same
    data is not refused as another data set's."""
    synthesize_kits19(tmp_path / "kits19", cases=3, shape=(16, 32, 32))
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "runs").symlink_to(tmp_path / "real" / "sub")
    out = tmp_path / "runs" / "datalist.json"
    assert main(["datalist", "kits19", str(tmp_path / "kits19"), "--out", str(out), "--folds", "3"]) == 0
    assert json.loads(out.read_text())["dataset_root"] == "../../kits19"
    assert main(["datalist", "kits19", str(tmp_path / "kits19"), "--out", str(out), "--folds", "3"]) == 0
