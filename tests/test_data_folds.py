# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Fold assignment, the datalist JSON (MONAI load_decathlon_datalist format), atomic writes and fold splits."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from monai_mixedfocal.data import (
    DataError,
    Datalist,
    assign_folds,
    kits19_datalist,
    read_datalist,
    split_datalist,
    synthesize_kits19,
    write_datalist,
)
from monai_mixedfocal.data.io import atomic_write_bytes

IDS = [f"case_{i:05d}" for i in range(204)]


def test_assign_folds_deterministic_balanced_and_order_independent() -> None:
    folds = assign_folds(IDS, num_folds=5, seed=0)
    assert folds == assign_folds(list(reversed(IDS)), num_folds=5, seed=0)
    assert sorted(Counter(folds.values()).values()) == [40, 41, 41, 41, 41]
    other = assign_folds(IDS, num_folds=5, seed=1)
    assert other != folds and sorted(Counter(other.values()).values()) == [40, 41, 41, 41, 41]
    assert list(folds) == sorted(IDS)


@pytest.mark.parametrize(
    ("ids", "num_folds", "seed", "message"),
    [
        (IDS[:3], 5, 0, "at least num_folds=5"),
        (["a", "a", "b"], 2, 0, "unique"),
        (IDS, 1, 0, "num_folds must be an integer >= 2"),
        (IDS, True, 0, "num_folds must be an integer >= 2"),
        (IDS, 5, -1, "seed must be a non-negative integer"),
    ],
)
def test_assign_folds_rejects_bad_arguments(ids: list[str], num_folds: int, seed: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign_folds(ids, num_folds=num_folds, seed=seed)


@pytest.fixture(scope="module")
def kits_datalist(tmp_path_factory: pytest.TempPathFactory) -> Datalist:
    root = tmp_path_factory.mktemp("kits19")
    synthesize_kits19(root, cases=7, shape=(16, 32, 32))
    return kits19_datalist(root)


def test_json_loads_with_monai_and_reproduces_folds(kits_datalist: Datalist, tmp_path: Path) -> None:
    path = write_datalist(tmp_path / "lists" / "datalist.json", kits_datalist, num_folds=3, seed=4)
    content = json.loads(path.read_text())
    assert {"name", "source", "num_folds", "seed", "labels", "excluded", "training"} <= set(content)
    assert content["num_folds"] == 3 and content["seed"] == 4 and content["source"] == "kits19"
    expected = assign_folds(kits_datalist.case_ids, num_folds=3, seed=4)
    assert {item["case"]: item["fold"] for item in content["training"]} == expected
    items = load_decathlon_datalist(path, base_dir=kits_datalist.base_dir)
    assert len(items) == 7 and all(Path(item["image"]).is_file() and Path(item["label"]).is_file() for item in items)
    again = write_datalist(tmp_path / "again.json", kits_datalist, num_folds=3, seed=4)
    assert json.loads(again.read_text())["training"] == content["training"]


def test_split_datalist_from_file_and_list(kits_datalist: Datalist, tmp_path: Path) -> None:
    path = write_datalist(tmp_path / "elsewhere" / "datalist.json", kits_datalist, num_folds=3)
    seen = []
    for fold in range(3):
        train, val = split_datalist(path, fold)
        assert val and len(train) + len(val) == 7
        assert {item["fold"] for item in val} == {fold} and fold not in {item["fold"] for item in train}
        assert all(Path(item["image"]).is_file() for item in train + val)  # resolved via dataset_root
        seen += [item["case"] for item in val]
    assert sorted(seen) == kits_datalist.case_ids
    items = read_datalist(path)["training"]
    train, val = split_datalist(items, 1)
    assert [item["image"] for item in val] == [item["image"] for item in items if item["fold"] == 1]
    assert not Path(val[0]["image"]).is_absolute()
    train, val = split_datalist(items, 1, base_dir=kits_datalist.base_dir)
    assert Path(val[0]["image"]).is_file()


def test_split_datalist_paths_are_absolute_from_a_relative_json_path(
    kits_datalist: Datalist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A datalist named relative to the working directory still gives absolute paths, valid after a ``chdir``."""
    write_datalist(tmp_path / "lists" / "datalist.json", kits_datalist, num_folds=3)
    monkeypatch.chdir(tmp_path)
    train, val = split_datalist("lists/datalist.json", 0)
    monkeypatch.chdir(tmp_path / "lists")
    assert all(
        Path(item[key]).is_absolute() and Path(item[key]).is_file()
        for item in train + val
        for key in ("image", "label")
    )


def test_a_datalist_in_a_linked_folder_is_found_by_either_path(kits_datalist: Datalist, tmp_path: Path) -> None:
    """A datalist written into ``runs -> real/sub`` recorded its root relative to ``runs``: opened by its real path
    (a cluster job's working directory is often the real one), its cases resolved to files that do not exist."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "runs").symlink_to(tmp_path / "real" / "sub")
    shutil.copytree(kits_datalist.base_dir, tmp_path / "kits19")
    moved = kits19_datalist(tmp_path / "kits19")
    write_datalist(tmp_path / "runs" / "datalist.json", moved, num_folds=3)
    for opened in (tmp_path / "runs" / "datalist.json", tmp_path / "real" / "sub" / "datalist.json"):
        train, val = split_datalist(opened, 0)
        assert all(Path(item[key]).is_file() for item in train + val for key in ("image", "label")), opened
    # an earlier version's record, relative to the link's folder, is still found through the link
    content = json.loads((tmp_path / "runs" / "datalist.json").read_text())
    (tmp_path / "runs" / "datalist.json").write_text(json.dumps({**content, "dataset_root": "../kits19"}))
    train, val = split_datalist(tmp_path / "runs" / "datalist.json", 0)
    assert all(Path(item["image"]).is_file() for item in train + val)


@pytest.mark.parametrize("written_by", ["this version", "an earlier version"])
def test_a_folder_of_the_same_name_on_the_other_side_of_the_link_is_not_taken_for_the_root(
    kits_datalist: Datalist, tmp_path: Path, written_by: str
) -> None:
    """home/runs -> scratch/runs, the data in scratch/kits19 (this version records '../kits19' from the real folder)
    or in home/kits19 (an earlier version recorded it from the link's folder), and an empty kits19 folder on the other
    side: the root is the one holding the cases, whichever path opens the datalist (for an earlier version's, the
    link's path, as before)."""
    home, scratch = tmp_path / "home", tmp_path / "scratch"
    (scratch / "runs").mkdir(parents=True)
    home.mkdir()
    (home / "runs").symlink_to(scratch / "runs")
    data, decoy = (scratch, home) if written_by == "this version" else (home, scratch)
    shutil.copytree(kits_datalist.base_dir, data / "kits19")
    (decoy / "kits19" / "data").mkdir(parents=True)
    write_datalist(home / "runs" / "datalist.json", kits19_datalist(data / "kits19"), num_folds=3)
    content = json.loads((home / "runs" / "datalist.json").read_text())
    if written_by == "this version":
        assert content["dataset_root"] == "../kits19"  # from scratch/runs
    else:  # an earlier version recorded it from home/runs
        (home / "runs" / "datalist.json").write_text(json.dumps({**content, "dataset_root": "../kits19"}))
    openings = [home / "runs" / "datalist.json"]
    if written_by == "this version":  # an earlier version's record names no way from the real folder to the data
        openings.append(scratch / "runs" / "datalist.json")
    for opened in openings:
        train, val = split_datalist(opened, 0)
        assert all(Path(item["image"]).is_file() for item in train + val), opened


def test_an_earlier_version_s_record_of_the_same_root_is_not_refused_as_other_content(
    kits_datalist: Datalist, tmp_path: Path
) -> None:
    """An earlier version recorded the root relative to a linked folder; writing the same datalist again (folds
    protected) would otherwise refuse it for its dataset_root alone. Another root is still refused."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "runs").symlink_to(tmp_path / "real" / "sub")
    shutil.copytree(kits_datalist.base_dir, tmp_path / "kits19")
    moved = kits19_datalist(tmp_path / "kits19")
    path = write_datalist(tmp_path / "runs" / "datalist.json", moved, num_folds=3)
    earlier = {**json.loads(path.read_text()), "dataset_root": "../kits19"}  # from runs, not from real/sub
    path.write_text(json.dumps(earlier))
    write_datalist(path, moved, num_folds=3, overwrite=False)
    assert json.loads(path.read_text()) == earlier  # left untouched
    shutil.copytree(tmp_path / "kits19", tmp_path / "copy")
    with pytest.raises(DataError, match="exists with other content"):
        write_datalist(path, kits19_datalist(tmp_path / "copy"), num_folds=3, overwrite=False)


def test_a_datalist_without_dataset_root_resolves_against_its_own_folder(tmp_path: Path) -> None:
    """A hand-written datalist in the MONAI layout, its paths relative to the JSON's folder."""
    (tmp_path / "imgs").mkdir()
    items = [{"image": f"imgs/{k}.nii.gz", "label": f"imgs/{k}_seg.nii.gz", "fold": k % 2} for k in range(4)]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
    _, val = split_datalist(tmp_path / "datalist.json", 0)
    assert [item["image"] for item in val] == [str(tmp_path / "imgs" / f"{k}.nii.gz") for k in (0, 2)]


def test_split_datalist_errors(kits_datalist: Datalist, tmp_path: Path) -> None:
    path = write_datalist(tmp_path / "datalist.json", kits_datalist, num_folds=3)
    with pytest.raises(DataError, match=r"fold must be an integer in 0\.\.2, got 3"):
        split_datalist(path, 3)
    with pytest.raises(DataError, match="no cases"):
        split_datalist([], 0)
    with pytest.raises(DataError, match="datalist file not found"):
        split_datalist(tmp_path / "missing.json", 0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not a valid JSON datalist"):
        split_datalist(tmp_path / "bad.json", 0)
    with pytest.raises(DataError, match="no valid 'fold'"):
        split_datalist([{"image": "a.nii.gz"}], 0)


def test_write_is_atomic_and_protects_existing_folds(kits_datalist: Datalist, tmp_path: Path) -> None:
    path = write_datalist(tmp_path / "datalist.json", kits_datalist, seed=0)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    write_datalist(path, kits_datalist, seed=0, overwrite=False)  # identical: left untouched
    assert path.stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match=r"exists with other content \(seed: 0 -> 1; 7 case\(s\) in another fold\)"):
        write_datalist(path, kits_datalist, seed=1, overwrite=False)
    too_few = Datalist(cases=kits_datalist.cases[:2], base_dir=kits_datalist.base_dir, source="kits19")
    with pytest.raises(DataError, match="cannot assign 5 folds"):
        write_datalist(path, too_few)
    assert path.read_bytes() == before  # a failed write leaves the old file as it was
    assert sorted(os.listdir(tmp_path)) == ["datalist.json"]  # and no temporary file behind
    write_datalist(path, kits_datalist, seed=1)
    assert json.loads(path.read_text())["seed"] == 1


def test_atomic_write_failure_mid_write_keeps_old_file(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path / "file.json", b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "text is not bytes")  # type: ignore[arg-type]  # fails after the temp file exists
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.json"]


def _toy_datalist(base: Path, order: list[int]):
    from monai_mixedfocal.data import Datalist

    cases = [{"case": f"c{i}", "image": f"img/c{i}.nii.gz", "label": f"lab/c{i}.nii.gz"} for i in order]
    return Datalist(cases=cases, base_dir=base, source="msd")


def test_the_datalist_json_does_not_depend_on_the_listing_order(tmp_path: Path) -> None:
    """Against the bug (``training`` no longer sorted by case id): the same cases listed in another order (an edited
    dataset.json) gave another file, and ``overwrite=False`` refused it as "exists with other content"."""
    from monai_mixedfocal.data.datalist import datalist_to_json, write_datalist

    forward, backward = _toy_datalist(tmp_path, list(range(6))), _toy_datalist(tmp_path, list(range(5, -1, -1)))
    assert datalist_to_json(forward, tmp_path) == datalist_to_json(backward, tmp_path)
    path = write_datalist(tmp_path / "datalist.json", forward)
    write_datalist(path, backward, overwrite=False)  # the same content: accepted


def test_a_negative_fold_is_not_a_valid_fold(tmp_path: Path) -> None:
    """Against the bug (drop ``fold < 0``): a case with fold -1 was never validated and always trained on."""
    from monai_mixedfocal.data import split_datalist

    items = [{"image": "a.nii.gz", "fold": 0}, {"image": "b.nii.gz", "fold": 1}, {"image": "c.nii.gz", "fold": -1}]
    with pytest.raises(DataError, match=r"training item 2 \(c\.nii\.gz\) has no valid 'fold'"):
        split_datalist(items, 0)


def test_split_datalist_resolves_seg_and_lists_of_paths(tmp_path: Path) -> None:
    """Against the bugs (``PATH_KEYS`` loop reduced to image / label) and (list values left alone): a BraTS20 ``seg``
    (which refresh_et_masks opens) or an MSD multi-file image stayed relative to the data set root and was then opened
    relative to the working directory."""
    from monai_mixedfocal.data import split_datalist

    items = [
        {"case": "a", "image": ["x/a_t1.nii.gz", "x/a_t2.nii.gz"], "label": "y/a.nii.gz", "seg": "z/a.nii", "fold": 0},
        {"case": "b", "image": ["x/b_t1.nii.gz", "x/b_t2.nii.gz"], "label": "y/b.nii.gz", "seg": "z/b.nii", "fold": 1},
    ]
    train, val = split_datalist(items, 0, base_dir=tmp_path)
    (item,) = val
    assert item["seg"] == str(tmp_path / "z" / "a.nii")
    assert item["image"] == [str(tmp_path / "x" / "a_t1.nii.gz"), str(tmp_path / "x" / "a_t2.nii.gz")]
    assert item["label"] == str(tmp_path / "y" / "a.nii.gz") and train[0]["case"] == "b"
