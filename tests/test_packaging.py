# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The package as a user installs it from a wheel (not the editable checkout): it carries the bundles, finds them,
and they train from outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from bundle_utils import REPO, cli_args, make_data, overrides

from monai_mixedfocal.cli import main
from monai_mixedfocal.shipped_bundles import BUNDLE_NAMES, DATA_FILES_FOLDER, bundle_dir, bundles_root, copy_bundles


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _checkout_files() -> list[str]:
    """The checkout's files that git tracks or would track (what a clean clone of the change holds)."""
    proc = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.skip("not a git checkout: its files are unknown")
    return [line for line in proc.stdout.splitlines() if (REPO / line).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the checkout's files with this environment's setuptools (no
    download, and setuptools' build folders stay out of the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in _checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."], source)
    (found,) = out.glob("monai_mixedfocal-*.whl")
    return found


@pytest.fixture(scope="module")
def installed_python(wheel: Path, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; the dependencies come from this environment's
    site-packages through a path file (which does not run this environment's editable-install hook)."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], venv)
    return python


@pytest.mark.slow
def test_the_wheel_carries_every_tracked_bundle_file_and_no_weights(wheel: Path) -> None:
    prefix = "monai_mixedfocal-" + wheel.name.split("-")[1] + ".data/data/" + "/".join(DATA_FILES_FOLDER[:-1]) + "/"
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name[len(prefix) :] for name in archive.namelist() if name.startswith(prefix)}
    assert shipped == {name for name in _checkout_files() if name.startswith("bundles/")}
    assert not any(name.endswith(".pt") for name in shipped)


@pytest.mark.slow
def test_an_installed_wheel_finds_and_trains_its_bundles(installed_python: Path, tmp_path: Path) -> None:
    where = _run([str(installed_python), "-m", "monai_mixedfocal", "bundles"], tmp_path).stdout.split()
    prefix = installed_python.parents[1].resolve()
    assert [Path(path).name for path in where] == list(BUNDLE_NAMES.values())
    assert all(Path(path).is_relative_to(prefix / "share") for path in where), where

    kits = Path(where[0])
    data = make_data("kits19", tmp_path / "kits19", cases=6)
    values = overrides("kits19", dataset_dir=str(data), bundle_root=str(tmp_path / "run"), epochs=1)
    values["iterations_per_epoch"] = 2
    configs = kits / "configs"
    command = ["run", "training", "--meta_file", str(configs / "metadata.json")]
    command += ["--config_file", str(configs / "train.json"), *cli_args(values)]
    _run([str(installed_python), "-m", "monai.bundle", *command], tmp_path)
    assert (tmp_path / "run" / "models" / "model.pt").is_file()

    study = ["study", "--dataset", "kits19", "--data", str(data), "--losses", "dice", "--folds", "3"]
    study += ["--out", str(tmp_path / "study"), "--dry-run"]
    printed = _run([str(installed_python), "-m", "monai_mixedfocal", *study], tmp_path).stdout
    assert str(configs / "train.json") in printed


def test_the_checkout_s_bundles_are_found_and_copied(tmp_path: Path) -> None:
    assert bundles_root() == REPO / "bundles"
    assert bundle_dir("kits19") == bundle_dir(BUNDLE_NAMES["kits19"]) == REPO / "bundles" / BUNDLE_NAMES["kits19"]
    with pytest.raises(ValueError, match="unknown bundle 'kits'; valid: kits19, brats20"):
        bundle_dir("kits")
    (copy,) = copy_bundles(["brats20", BUNDLE_NAMES["brats20"]], tmp_path)  # a data set and its bundle name are one
    original = bundle_dir("brats20") / "configs" / "train.json"
    assert (copy / "configs" / "train.json").read_bytes() == original.read_bytes()
    with pytest.raises(FileExistsError, match="these exist already"):
        copy_bundles(["kits19", "brats20"], tmp_path)
    assert not (tmp_path / BUNDLE_NAMES["kits19"]).exists()  # nothing copied when one of them exists


def test_a_copy_leaves_out_what_runs_left_in_the_bundle_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy of a checkout's bundle holds what the wheel ships: no weights, checkpoints, evaluations or masks that
    runs in the bundle's folder wrote (MONAI Label would continue a copied checkpoint)."""
    shipped = [name for name in _checkout_files() if name.startswith(f"bundles/{BUNDLE_NAMES['kits19']}/")]
    checkout = tmp_path / "checkout"
    for name in shipped:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, checkout / name)
    bundle = checkout / "bundles" / BUNDLE_NAMES["kits19"]
    for leftover in ("models/model.pt", "models/model.ts", "checkpoints/last.pt", "eval/per_case_metrics.csv"):
        (bundle / leftover).parent.mkdir(parents=True, exist_ok=True)
        (bundle / leftover).write_text("left by a run")
    for leftover in ("runs/probe/models/model.pt", "labels_et/BraTS20_Training_001_et.nii.gz"):
        (bundle / leftover).parent.mkdir(parents=True, exist_ok=True)
        (bundle / leftover).write_text("left by a run")
    monkeypatch.setattr("monai_mixedfocal.shipped_bundles.bundles_root", lambda: checkout / "bundles")
    (copy,) = copy_bundles(["kits19"], tmp_path / "copies")
    copied = {str(path.relative_to(tmp_path / "copies")) for path in copy.rglob("*") if path.is_file()}
    assert copied == {name.removeprefix("bundles/") for name in shipped}


def test_the_bundles_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundles"]) == 0
    assert capsys.readouterr().out.split() == [str(bundle_dir(name)) for name in BUNDLE_NAMES]
    assert main(["bundles", "kits19", "--copy-to", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / BUNDLE_NAMES["kits19"])]
    assert main(["bundles", "kits19", "--copy-to", str(tmp_path)]) == 2
    assert "these exist already" in capsys.readouterr().err
    assert main(["bundles", "kits"]) == 2
    assert "unknown bundle 'kits'" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    for destination in (tmp_path / "a_file", tmp_path / "a_file" / "models"):
        assert main(["bundles", "kits19", "--copy-to", str(destination)]) == 2
        assert capsys.readouterr().err == (
            f"error: cannot copy the bundles into {destination}: {tmp_path / 'a_file'} is a file, not a folder\n"
        )


def test_the_bundle_package_exports_every_public_name() -> None:
    """Against the bug (a name dropped from __all__): what the package imports for the configs is in __all__ and
    exists."""
    import types

    import monai_mixedfocal.bundle as bundle

    public = {
        name
        for name, value in vars(bundle).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert set(bundle.__all__) == public
