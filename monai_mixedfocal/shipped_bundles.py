# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The MONAI bundles shipped with the package: where they are, and copies to edit or to serve in MONAI Label.

In a source checkout (the README's editable install) they are the repository's ``bundles/`` folder. An installed
wheel carries them as data files under ``<prefix>/share/monai-mixedfocal/bundles`` (``[options.data_files]`` in
``setup.cfg``); :func:`bundles_root` finds them through the package's installed file list, whatever the install
scheme (a virtual environment, ``--user``, ``--prefix``).

``python -m monai_mixedfocal bundles`` prints their folders; ``--copy-to DIR`` copies them, e.g. into a MONAI Label
app's ``model/`` folder or to edit a config.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_mixedfocal.cli_errors import print_error

DISTRIBUTION = "monai-mixedfocal"
BUNDLE_NAMES: dict[str, str] = {
    "kits19": "kits19_mixedfocal_segmentation",
    "brats20": "brats20_mixedfocal_segmentation",
}
# where setup.cfg installs the bundles, relative to the installation prefix
DATA_FILES_FOLDER: tuple[str, ...] = ("share", DISTRIBUTION, "bundles")
#: what a run leaves in a bundle's folder (weights, checkpoints, evaluations, masks, logs): never shipped or copied
#: (MANIFEST.in leaves the same out of the source distribution)
RUN_OUTPUTS: tuple[str, ...] = ("*.pt", "*.ts", "checkpoints", "eval", "runs", "labels_et", "__pycache__", "*.pyc")


def _is_bundles_root(folder: Path) -> bool:
    return all((folder / name / "configs" / "metadata.json").is_file() for name in BUNDLE_NAMES.values())


def _installed_bundles_root() -> Path | None:
    """The bundles' folder among the installed distribution's files, or ``None`` (no such files, not installed)."""
    try:
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    depth = len(DATA_FILES_FOLDER)
    for file in files:
        parts = file.parts
        for start in range(len(parts) - depth):
            if parts[start : start + depth] == DATA_FILES_FOLDER:
                root = Path(file.locate()).resolve().parents[len(parts) - start - depth - 1]
                return root if _is_bundles_root(root) else None
    return None


def bundles_root() -> Path:
    """The folder that holds the shipped bundles.

    Raises:
        FileNotFoundError: neither the source checkout nor the installed package holds them.
    """
    checkout = Path(__file__).resolve().parents[1] / "bundles"
    if _is_bundles_root(checkout):
        return checkout
    installed = _installed_bundles_root()
    if installed is not None:
        return installed
    raise FileNotFoundError(
        f"the bundles shipped with {DISTRIBUTION} are missing: neither {checkout} (a source checkout) nor the "
        f"installed package's data files ({'/'.join(DATA_FILES_FOLDER)} under its prefix) hold "
        f"{' and '.join(BUNDLE_NAMES.values())}. Reinstall the package, or pass the bundle folder explicitly."
    )


def bundle_dir(name: str) -> Path:
    """The folder of one shipped bundle, by data set (``"kits19"``) or bundle name.

    Raises:
        ValueError: ``name`` is not a shipped bundle.
        FileNotFoundError: see :func:`bundles_root`.
    """
    names = {**BUNDLE_NAMES, **{bundle: bundle for bundle in BUNDLE_NAMES.values()}}
    if name not in names:
        raise ValueError(f"unknown bundle {name!r}; valid: {', '.join(names)}.")
    return bundles_root() / names[name]


def copy_bundles(names: Sequence[str], destination: str | Path) -> list[Path]:
    """Copy the shipped bundles ``names`` into ``destination`` (one folder per bundle, created), without what runs in a
    source checkout's bundle folder left there (:data:`RUN_OUTPUTS`), so that the copy is the one a wheel installs.

    Returns:
        The copies' folders.

    Raises:
        FileExistsError: a bundle's folder already exists in ``destination`` (nothing is copied then, so that no
            edited copy is overwritten).
        NotADirectoryError: ``destination``, or a folder above it, is a file.
    """
    file = next((path for path in (Path(destination), *Path(destination).parents) if path.is_file()), None)
    if file is not None:
        raise NotADirectoryError(f"cannot copy the bundles into {destination}: {file} is a file, not a folder")
    sources = list(dict.fromkeys(bundle_dir(name) for name in names))  # a data set and its bundle name are one
    targets = [Path(destination) / source.name for source in sources]
    existing = [str(target) for target in targets if target.exists()]
    if existing:
        raise FileExistsError(f"not copied, these exist already: {', '.join(existing)} (remove them or copy elsewhere)")
    ignore = shutil.ignore_patterns(*RUN_OUTPUTS)
    for source, target in zip(sources, targets):
        shutil.copytree(source, target, ignore=ignore)
    return targets


def _main(args: argparse.Namespace) -> int:
    names = args.names or list(BUNDLE_NAMES)
    try:
        folders = copy_bundles(names, args.copy_to) if args.copy_to else [bundle_dir(name) for name in names]
    except (ValueError, OSError) as err:
        print_error(err)
        return 2
    for folder in folders:
        print(folder)
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bundles`` sub-command to an ``argparse`` sub-parsers object (its ``func`` is the command)."""
    parser = subparsers.add_parser(
        "bundles",
        help="print the folders of the shipped bundles, or copy them (--copy-to)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("names", nargs="*", help=f"bundles by data set or name (default: {', '.join(BUNDLE_NAMES)})")
    parser.add_argument("--copy-to", metavar="DIR", help="copy the bundles into DIR (e.g. a MONAI Label app's model/)")
    parser.set_defaults(func=_main)
    return parser
