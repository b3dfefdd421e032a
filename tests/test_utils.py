# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The shared helpers of ``monai_mixedfocal.utils`` (atomic writes are tested with the datalists that use them)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from monai_mixedfocal.data import DataError
from monai_mixedfocal.utils import atomic_write_bytes, changed_entries


def test_changed_entries_names_each_change_in_order() -> None:
    recorded = {"fold": "0", "loss": "dice", "seed": None, "gone": 1}
    current = {"fold": "1", "loss": "dice", "seed": 0, "new": [1, 2]}
    assert changed_entries(recorded, current) == [
        "fold: '0' -> '1'",
        "seed: None -> 0",
        "gone: 1 -> (unset)",
        "new: (unset) -> [1, 2]",
    ]
    assert changed_entries(recorded, current, keys=("loss", "seed")) == ["seed: None -> 0"]
    assert changed_entries({"key": None}, {}) == ["key: None -> (unset)"]  # a recorded None is not a missing value
    assert changed_entries(recorded, dict(recorded)) == []


def test_changed_entries_shortens_long_values() -> None:
    (line,) = changed_entries({"root": "a" * 100}, {"root": "b"}, width=20)
    assert line == f"root: '{'a' * 16}... -> 'b'"  # 20 characters


def test_a_failed_atomic_write_names_the_target_not_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder (mkstemp fails) or a target that cannot be replaced: the error names ``path``, keeps its
    type and errno, and no temporary file is left behind."""
    target = tmp_path / "dl.json"

    def read_only(*args: object, dir: str, prefix: str, suffix: str) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, f"{prefix}x1y2z3{suffix}"))

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", read_only)
        with pytest.raises(OSError) as info:
            atomic_write_bytes(target, b"{}")
    assert info.value.errno == errno.EROFS and info.value.filename == str(target)
    assert str(info.value) == f"[Errno {errno.EROFS}] {os.strerror(errno.EROFS)}: '{target}'"
    (target / "inside").mkdir(parents=True)  # a folder where the file should go: os.replace fails
    with pytest.raises(IsADirectoryError) as directory:
        atomic_write_bytes(target, b"{}")
    assert ".tmp" not in str(directory.value) and str(target) in str(directory.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl.json"]


def test_changed_entries_shows_long_values_around_their_first_difference() -> None:
    """Two long descriptions that differ in one weight: the weight is shown, not their common beginning."""
    recorded = {"loss": "DiceCELoss" + "{" + ", ".join(f'"p{i}": {i}' for i in range(20)) + ', "lambda_dice": 1.0}'}
    current = {"loss": recorded["loss"].replace('"lambda_dice": 1.0', '"lambda_dice": 5.0')}
    (entry,) = changed_entries(recorded, current)
    assert '"lambda_dice": 1.0}' in entry and '"lambda_dice": 5.0}' in entry and entry.startswith("loss: ...")
    assert changed_entries({"a": "x" * 100}, {"a": "y"}) == [f"a: '{'x' * 56}... -> 'y'"]


def test_an_atomic_write_gets_the_permissions_open_would_give(tmp_path: Path) -> None:
    """Against the bug (drop ``os.fchmod``): every datalist, mask and report was written 0600 (mkstemp's mode),
    unreadable to the group that shares a study folder."""
    import os

    from monai_mixedfocal.utils import atomic_write_bytes

    umask = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(umask)
    import monai_mixedfocal.utils as utils

    assert (path.stat().st_mode & 0o777) == 0o666 & ~utils._UMASK


def test_is_integer_refuses_bools_and_so_does_split_datalist() -> None:
    """Against the bug (drop ``not isinstance(value, bool)``): ``fold=True`` was taken as fold 1."""
    from monai_mixedfocal.data import split_datalist
    from monai_mixedfocal.utils import is_integer

    assert is_integer(3) and not is_integer(True) and not is_integer(3.0)
    items = [{"image": "a.nii.gz", "fold": 0}, {"image": "b.nii.gz", "fold": 1}]
    with pytest.raises(DataError, match=r"fold must be an integer in 0\.\.1, got True"):
        split_datalist(items, True)
