# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The ``datalist`` and ``synthesize`` sub-commands of ``python -m monai_mixedfocal``.

Examples::

    python -m monai_mixedfocal synthesize kits19 /data/kits_like --cases 8 --seed 0
    python -m monai_mixedfocal datalist kits19 /data/kits_like --out /data/kits_like/datalist.json --folds 5 --seed 0
    python -m monai_mixedfocal datalist brats20 /data/BraTS2020 --out runs/brats20_datalist.json

Errors (bad data or arguments) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from monai_mixedfocal.cli_errors import print_error
from monai_mixedfocal.data.brats20 import brats20_datalist
from monai_mixedfocal.data.datalist import Datalist, datalist_to_json, read_datalist, recorded_root, write_datalist
from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.io import NIFTI_SUFFIXES
from monai_mixedfocal.data.kits19 import KITS19_EXCLUDED_CASES, data_set_folder, kits19_datalist
from monai_mixedfocal.data.msd import msd_datalist
from monai_mixedfocal.data.synthetic_brats20 import synthesize_brats20
from monai_mixedfocal.data.synthetic_kits19 import DEFAULT_SPACING, synthesize_kits19

__all__ = ["register", "run_datalist", "run_synthesize", "summarize"]

EXIT_ERROR = 2
_SHOWN_IDS = 12


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn data and argument errors into a one-line message on stderr and exit status 2."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (DataError, ValueError, OSError) as err:
            print_error(err)
            return EXIT_ERROR

    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper


def _build(args: argparse.Namespace) -> Datalist:
    if args.source == "kits19":
        exclude = () if args.keep_all else KITS19_EXCLUDED_CASES
        return kits19_datalist(args.root, exclude=exclude, validate=args.validate, check_labels=args.check_labels)
    if args.source == "brats20":
        labels_dir = args.labels_dir or default_labels_dir(Path(args.out))
        return brats20_datalist(
            args.root, exclude_empty=not args.keep_all, validate=args.validate, labels_dir=labels_dir
        )
    return msd_datalist(args.root, validate=args.validate, check_labels=args.check_labels)


def summarize(datalist: Datalist, content: dict) -> str:
    """Human-readable summary: cases kept per fold and the exclusions grouped by reason."""
    folds = Counter(item["fold"] for item in content["training"])
    lines = [
        f"{datalist.name}: {len(datalist.cases)} cases kept, {len(datalist.excluded)} excluded "
        f"({content['num_folds']} folds, seed {content['seed']})",
        "  per fold: " + ", ".join(f"fold {fold}: {folds[fold]}" for fold in range(content["num_folds"])),
    ]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for item in datalist.excluded:
        by_reason[item["reason"]].append(item["case"])
    for reason, cases in by_reason.items():
        shown = ", ".join(cases[:_SHOWN_IDS]) + (
            f", ... ({len(cases) - _SHOWN_IDS} more)" if len(cases) > _SHOWN_IDS else ""
        )
        lines.append(f"  excluded {len(cases)}: {reason}: {shown}")
    return "\n".join(lines)


def default_labels_dir(out: Path) -> Path:
    """Where the command writes a BraTS20 datalist's masks: ``<stem>_labels_et/`` beside the JSON, one folder per
    datalist, so that two datalists of different data sets in one folder never share (and overwrite) masks."""
    return out.parent / f"{out.stem}_labels_et"


def _check_replaceable(out: Path, root: Path, source: str) -> None:
    """Without ``--force``, refuse at once (before any BraTS20 mask is written) to replace a datalist of another
    data set root: its masks would be rewritten from the other data set's segmentations. (A KiTS19 repository and its
    ``data/`` folder are one data set.)"""
    if not out.is_file():
        return
    try:
        recorded = recorded_root(out, read_datalist(out))
    except DataError:
        return  # unreadable: write_datalist reports it
    folder = root.parent if root.is_file() else root  # an MSD root may name its dataset.json
    if data_set_folder(source, recorded) != data_set_folder(source, folder):
        raise DataError(
            f"{out}: exists for the data set in {recorded.resolve()}, not {root}; pass --force to replace it, or "
            "write the new datalist to another --out"
        )


@_guarded
def run_datalist(args: argparse.Namespace) -> int:
    """``datalist``: list the cases, assign the folds and write the JSON; prints a summary."""
    out = Path(args.out)
    if not args.force:
        _check_replaceable(out, Path(args.root), args.source)
    before = out.read_bytes() if out.is_file() else None
    datalist = _build(args)
    path = write_datalist(out, datalist, num_folds=args.folds, seed=args.seed, overwrite=args.force)
    print(summarize(datalist, datalist_to_json(datalist, out.parent, num_folds=args.folds, seed=args.seed)))
    print(f"unchanged {path}" if before is not None and path.read_bytes() == before else f"wrote {path}")
    return 0


@_guarded
def run_synthesize(args: argparse.Namespace) -> int:
    """``synthesize``: write generated cases in the real layout."""
    common = {"cases": args.cases, "seed": args.seed, "case_ids": args.case_ids, "overwrite": args.force}
    if args.shape is not None:
        common["shape"] = tuple(args.shape)
    if args.source == "kits19":
        if args.suffix is not None:
            raise ValueError(
                "--suffix is for brats20: KiTS19's files are always imaging.nii.gz and segmentation.nii.gz"
            )
        spacing = {} if args.spacing is None else {"spacing": tuple(args.spacing)}
        folders = synthesize_kits19(args.out_dir, **common, **spacing)
    elif args.spacing is not None:
        raise ValueError("--spacing is for kits19: the BraTS20 layout is 1 mm isotropic")
    else:
        suffix = {} if args.suffix is None else {"suffix": args.suffix}
        folders = synthesize_brats20(args.out_dir, no_enhancing=args.no_enhancing or (), **common, **suffix)
    print(f"wrote {len(folders)} {args.source}-like cases under {args.out_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``datalist`` and ``synthesize`` sub-commands to the top-level parser's ``subparsers``."""
    parser = subparsers.add_parser(
        "datalist",
        help="list a data set's cases, assign seeded folds, write a load_decathlon_datalist JSON",
        description="List the labelled cases (reporting exclusions), assign seeded folds and write the datalist JSON "
        "atomically. BraTS20 also writes binary enhancing-tumour masks (default: <out stem>_labels_et/ beside the "
        "JSON).",
    )
    parser.add_argument("source", choices=("kits19", "brats20", "msd"), help="data set layout")
    parser.add_argument(
        "root", type=Path, help="data set root (kits19 repo or data/, BraTS20 folder, MSD dataset.json)"
    )
    parser.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="fold shuffling seed (default 0)")
    parser.add_argument("--keep-all", action="store_true", help="no default exclusions (KiTS19 list, BraTS20 no-ET)")
    parser.add_argument("--no-validate", dest="validate", action="store_false", help="skip the NIfTI header checks")
    parser.add_argument("--check-labels", action="store_true", help="read every label map and check its values")
    parser.add_argument("--labels-dir", type=Path, default=None, help="BraTS20: where to write the binary ET masks")
    parser.add_argument("--force", action="store_true", help="replace an existing, different datalist")
    parser.set_defaults(func=run_datalist)

    parser = subparsers.add_parser(
        "synthesize",
        help="write generated KiTS19-like or BraTS20-like cases in the real layout",
        description="Write deterministic generated cases in the real KiTS19 or BraTS20 layout (CPU-small defaults).",
    )
    parser.add_argument("source", choices=("kits19", "brats20"), help="layout to generate")
    parser.add_argument("out_dir", type=Path, help="output root")
    parser.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="array shape (KiTS19: slices H W)")
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=None,
        metavar=("SLICE", "ROW", "COLUMN"),
        help=f"KiTS19: nominal voxel size in mm, slice axis first (default {' '.join(map(str, DEFAULT_SPACING))}; each "
        "case jitters it by up to 10%%), e.g. 3 0.78 0.78 with --shape 120 512 512 for CT-sized cases",
    )
    parser.add_argument("--case-ids", type=int, nargs="+", default=None, help="explicit case numbers")
    parser.add_argument("--no-enhancing", type=int, nargs="+", default=None, help="BraTS20: cases without ET")
    parser.add_argument(
        "--suffix",
        choices=NIFTI_SUFFIXES,
        default=None,
        help="BraTS20: file suffix (default .nii.gz; the official release ships .nii)",
    )
    parser.add_argument("--force", action="store_true", help="replace case folders that exist (refused by default)")
    parser.set_defaults(func=run_synthesize)
