# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The :class:`Datalist` of a data source, its JSON form (MONAI ``load_decathlon_datalist`` format) and fold splits.

A datalist JSON looks like::

    {"name": "KiTS19", "source": "kits19", "num_folds": 5, "seed": 0, "dataset_root": "..",
     "labels": {"0": "background", "1": "kidney", "2": "tumor"}, "numTraining": 204,
     "excluded": [{"case": "case_00015", "reason": "..."}],
     "training": [{"case": "case_00000", "image": "data/case_00000/imaging.nii.gz",
                   "label": "data/case_00000/segmentation.nii.gz", "fold": 3}, ...]}

Paths are relative to the data set root, so ``monai.data.load_decathlon_datalist(path, base_dir=ROOT)`` resolves them;
``dataset_root`` records where that root is relative to the JSON file, which :func:`split_datalist` uses by default.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.folds import assign_folds
from monai_mixedfocal.data.io import atomic_write_json, read_training_json
from monai_mixedfocal.utils import changed_entries, is_integer

__all__ = [
    "PATH_KEYS",
    "Datalist",
    "datalist_differences",
    "datalist_to_json",
    "dataset_root_entry",
    "first_missing_file",
    "read_datalist",
    "recorded_root",
    "source_files",
    "split_datalist",
    "write_datalist",
]

PATH_KEYS: tuple[str, ...] = ("image", "label", "seg")
"""Keys of a case whose values are file paths relative to the data set root."""

_NAMES = {"kits19": "KiTS19", "brats20": "BraTS20", "msd": "MSD"}


@dataclass
class Datalist:
    """The labelled cases of one data set and the cases left out, with the reason for each.

    Attributes:
        cases: one dict per kept case, with ``"case"`` (id), ``"image"`` and ``"label"`` (paths relative to
            ``base_dir``) and source-specific extras (BraTS20: ``"seg"``, the original segmentation).
        excluded: ``{"case", "reason"}`` for every case that was found but left out.
        base_dir: the data set root the paths are relative to.
        source: ``"kits19"``, ``"brats20"`` or ``"msd"``.
        labels: label value (as a string) to class name, e.g. ``{"0": "background", "1": "kidney", "2": "tumor"}``.
        name: display name (defaults to the source's).
    """

    cases: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    base_dir: Path = Path()
    source: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        if not self.name:
            self.name = _NAMES.get(self.source, self.source)

    @property
    def case_ids(self) -> list[str]:
        """Ids of the kept cases, in listing order."""
        return [str(case["case"]) for case in self.cases]

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to :attr:`base_dir`, with forward slashes (``..`` allowed for files outside the root)."""
        return Path(os.path.relpath(Path(path).absolute(), self.base_dir.absolute())).as_posix()

    def exclude(self, case: str, reason: str) -> None:
        """Record that ``case`` was left out, and why."""
        self.excluded.append({"case": str(case), "reason": reason})


def datalist_to_json(
    datalist: Datalist, json_dir: str | os.PathLike, num_folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """The JSON object :func:`write_datalist` writes, with a fold per case (see :func:`assign_folds`).

    Args:
        datalist: the cases.
        json_dir: the folder the JSON will live in (to record ``dataset_root`` relative to it).
        num_folds: number of folds.
        seed: fold shuffling seed.

    Returns:
        The ``load_decathlon_datalist``-compatible object.

    Raises:
        DataError: the datalist has fewer cases than folds or duplicate ids.
    """
    try:
        folds = assign_folds(datalist.case_ids, num_folds=num_folds, seed=seed)
    except ValueError as err:
        raise DataError(f"{datalist.base_dir}: cannot assign {num_folds} folds: {err}") from err
    training = [{**case, "fold": folds[str(case["case"])]} for case in sorted(datalist.cases, key=lambda c: c["case"])]
    return {
        "name": datalist.name,
        "source": datalist.source,
        "num_folds": num_folds,
        "seed": seed,
        "dataset_root": dataset_root_entry(datalist.base_dir, json_dir),
        "labels": dict(datalist.labels),
        "numTraining": len(training),
        "excluded": list(datalist.excluded),
        "training": training,
    }


def dataset_root_entry(base_dir: str | os.PathLike, json_dir: str | os.PathLike) -> str:
    """The ``dataset_root`` that a datalist JSON in folder ``json_dir`` records for the data set root ``base_dir``:
    relative to the folder's real path (a datalist written into a linked folder, ``runs -> /scratch/runs``, is then
    also found when opened by its real path; :func:`recorded_root` reads it either way), with ``/`` separators.

    Example:
        >>> dataset_root_entry("/data/kits19", "/data/study")
        '../kits19'
    """
    return Path(os.path.relpath(Path(base_dir).absolute(), os.path.realpath(json_dir))).as_posix()


def write_datalist(
    path: str | os.PathLike, datalist: Datalist, num_folds: int = 5, seed: int = 0, overwrite: bool = True
) -> Path:
    """Assign folds and write the datalist JSON atomically.

    The same cases and seed always give the same file, so re-running for a root reproduces the folds every loss uses.

    Args:
        path: the JSON file to write.
        datalist: the cases (from :func:`~monai_mixedfocal.data.kits19_datalist` and friends).
        num_folds: number of folds.
        seed: fold shuffling seed.
        overwrite: if ``False``, refuse to replace an existing file whose content differs in anything (cases, folds,
            seed, the recorded root, the paths; the message says what), so a study cannot silently change what its
            runs train on; an identical file is left untouched, as is one that records the same root relative to a
            linked folder (written by an earlier version).

    Returns:
        The path written.

    Raises:
        DataError: ``overwrite=False`` and a different datalist exists, or folds cannot be assigned.
    """
    path = Path(path)
    content = datalist_to_json(datalist, path.parent, num_folds=num_folds, seed=seed)
    if path.exists() and not overwrite:
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: exists but cannot be read as JSON ({err}); remove it or overwrite it") from err
        if existing == content or _same_but_for_the_root_s_form(path, existing, content, datalist.base_dir):
            return path
        raise DataError(
            f"{path}: exists with other content ({'; '.join(datalist_differences(existing, content))}); replace it "
            "explicitly (overwrite=True, --force on the command line) to change what its runs train on"
        )
    return atomic_write_json(path, content)


def _same_but_for_the_root_s_form(
    path: Path, existing: Mapping[str, Any], content: Mapping[str, Any], root: str | os.PathLike
) -> bool:
    """Whether ``existing`` records ``content`` and the same data set root in another form: an earlier version wrote
    it relative to a linked folder, this one relative to the folder's real path (:func:`recorded_root`)."""
    if {**existing, "dataset_root": ""} != {**content, "dataset_root": ""}:
        return False
    return os.path.realpath(recorded_root(path, existing)) == os.path.realpath(root)


def datalist_differences(existing: Mapping[str, Any], content: Mapping[str, Any]) -> list[str]:
    """What differs between two datalist JSON contents, in words: changed top-level entries (seed, ``dataset_root``,
    ...) and, for ``training``, the cases added, removed, moved to another fold or listed with other paths."""
    differences = changed_entries(existing, content, [key for key in [*existing, *content] if key != "training"])
    old = {str(item.get("case")): item for item in existing.get("training", []) if isinstance(item, Mapping)}
    new = {str(item.get("case")): item for item in content.get("training", []) if isinstance(item, Mapping)}
    both = old.keys() & new.keys()
    moved = sum(old[case].get("fold") != new[case].get("fold") for case in both)
    other = sum(old[case] != new[case] for case in both) - moved
    counts = {"added": len(new.keys() - old.keys()), "removed": len(old.keys() - new.keys()), "in another fold": moved}
    counts["listed with other paths"] = other
    differences += [f"{n} case(s) {what}" for what, n in counts.items() if n]
    return differences


def read_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a datalist JSON written by :func:`write_datalist`.

    Raises:
        DataError: the file is missing, not JSON, or lacks a ``training`` list of cases with ``image`` and ``fold``.
    """
    content = read_training_json(path, "datalist")
    _check_items(content["training"], str(path))
    return content


def _check_items(items: Sequence[Any], where: str) -> None:
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "image" not in item:
            raise DataError(f"{where}: training item {index} is not a dict with an 'image' entry")
        fold = item.get("fold")
        if not is_integer(fold) or fold < 0:
            raise DataError(f"{where}: training item {index} ({item.get('case', item['image'])}) has no valid 'fold'")


def recorded_root(path: str | os.PathLike, content: Mapping[str, Any]) -> Path:
    """The data set root that the datalist JSON ``path`` (its ``content``) records: ``dataset_root`` (``"."`` when
    absent), relative to the JSON's folder as its path names it, or (the folder is a link) to the folder's real path.

    ``..`` in the relative paths is resolved by name, as :func:`split_datalist` resolves the cases' paths: from a link
    ``runs -> /scratch/u/runs``, ``runs/../data`` is ``data`` beside the link, ``/scratch/u/runs/../data`` another
    folder. A datalist written by this version records the root relative to the real path, one written into the link's
    folder by an earlier version relative to the link. The root is the first of the two that holds the first case's
    image (a folder of the same name on the other side is not taken for it), else the first that is a folder; it is
    returned absolute, with ``..`` resolved by name (``Path.resolve`` would follow the link first).
    """
    recorded = str(content.get("dataset_root", "."))
    folder = Path(path).absolute().parent
    by_name = [Path(os.path.normpath(base / recorded)) for base in (folder, Path(os.path.realpath(folder)))]
    candidates = list(dict.fromkeys(by_name))
    cases = content.get("training") or [{}]  # a list, as read_datalist checks
    first = cases[0].get("image") if isinstance(cases[0], Mapping) else None
    if isinstance(first, str):
        holding = [c for c in candidates if Path(os.path.normpath(c / first)).is_file()]
        if holding:
            return holding[0]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def source_files(item: Mapping[str, Any]) -> list[str]:
    """The source files of a datalist entry, as it names them: image and label, or image and segmentation for a
    BraTS20 entry (whose binary mask ``label`` is derived data, rebuilt when missing or stale); an image may be a list
    of files.

    Example:
        >>> source_files({"image": ["t1.nii.gz", "t2.nii.gz"], "label": "et.nii.gz", "seg": "seg.nii.gz"})
        ['t1.nii.gz', 't2.nii.gz', 'seg.nii.gz']
    """
    paths = []
    for key in ("image", "seg" if "seg" in item else "label"):
        value = item.get(key)
        paths.extend(value if isinstance(value, list) else [value] if isinstance(value, str) else [])
    return paths


def first_missing_file(items: Sequence[Mapping[str, Any]], root: str | os.PathLike = "") -> str | None:
    """The first source file (:func:`source_files`) of datalist ``items`` that is not a file, each path taken under
    ``root`` (an absolute path as it is), or ``None`` when every one is there.

    Example:
        >>> first_missing_file([{"image": "/nowhere/ct.nii.gz", "label": "/nowhere/seg.nii.gz"}])
        '/nowhere/ct.nii.gz'
    """
    paths = (os.path.join(root, path) for item in items for path in source_files(item))
    return next((path for path in paths if not os.path.isfile(path)), None)


def _resolve(item: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    item = copy.deepcopy(item)
    for key in PATH_KEYS:
        value = item.get(key)
        if isinstance(value, str):
            item[key] = os.path.normpath(base_dir / value)
        elif isinstance(value, list):
            item[key] = [os.path.normpath(base_dir / v) for v in value]
    return item


def split_datalist(
    path_or_list: str | os.PathLike | Sequence[dict[str, Any]], fold: int, base_dir: str | os.PathLike | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a datalist into training cases (every other fold) and validation cases (``fold``).

    Args:
        path_or_list: a datalist JSON (from :func:`write_datalist`) or a list of case dicts with a ``fold`` each.
        fold: the validation fold, ``0 .. num_folds - 1``.
        base_dir: the data set root to resolve the relative paths against. For a JSON file it defaults to the
            ``dataset_root`` recorded in it (relative to the JSON's folder); for a list, paths are left as they are.

    Returns:
        ``(train_list, val_list)``: new dicts; ``image``, ``label`` and ``seg`` become absolute paths when resolved.

    Raises:
        DataError: the file or list is empty or malformed, or ``fold`` is out of range.

    Example:
        >>> train, val = split_datalist("datalist.json", fold=0)  # doctest: +SKIP
    """
    if isinstance(path_or_list, (str, os.PathLike)):
        path = Path(path_or_list)
        content = read_datalist(path)
        items: list[dict[str, Any]] = content["training"]
        where = str(path)
        num_folds = content.get("num_folds")
        if base_dir is None:
            base_dir = recorded_root(path, content)
    else:
        items = list(path_or_list)
        where = "datalist"
        _check_items(items, where)
        num_folds = None
    if not items:
        raise DataError(f"{where}: the datalist has no cases")
    if not is_integer(num_folds):
        num_folds = max(item["fold"] for item in items) + 1
    if not is_integer(fold) or not 0 <= fold < num_folds:
        raise DataError(f"{where}: fold must be an integer in 0..{num_folds - 1}, got {fold!r}")
    if base_dir is not None:
        root = Path(base_dir).expanduser().absolute()  # absolute: the working directory may change before loading
        items = [_resolve(item, root) for item in items]
    else:
        items = copy.deepcopy(items)
    train = [item for item in items if item["fold"] != fold]
    val = [item for item in items if item["fold"] == fold]
    return train, val
