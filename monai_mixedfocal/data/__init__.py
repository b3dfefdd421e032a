# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Data for the loss study: KiTS19 / BraTS20 / MSD datalists, seeded folds, preprocessing and generated data.

- Datalists: :func:`kits19_datalist`, :func:`brats20_datalist`, :func:`msd_datalist` return a :class:`Datalist`
  (kept cases and the exclusions with their reasons).
- Folds: :func:`assign_folds`, :func:`write_datalist` (JSON in ``load_decathlon_datalist`` format, written
  atomically), :func:`split_datalist`; :func:`refresh_et_masks` rebuilds a saved BraTS20 datalist's masks that no
  longer match their segmentations.
- Preprocessing: :func:`kits19_deterministic_transforms`, :func:`brats20_deterministic_transforms`; their voxel checks
  right after loading, :class:`CheckFinited` and :class:`CheckLabelValuesd` (also usable on their own in configs);
  :class:`CheckedNibabelReader`, the NIfTI reader of their ``LoadImaged`` (file named on failure, gzip CRC checked).
- Generated data in the real layouts: :func:`synthesize_kits19`, :func:`synthesize_brats20`.
- Every data problem raises :class:`DataError` naming the file and the problem.
"""

from __future__ import annotations

import importlib
from typing import Any

from monai_mixedfocal.data.brats20 import (
    BRATS20_LABEL_VALUES,
    BRATS20_LABELS,
    BRATS20_NOT_IMAGES,
    brats20_datalist,
    refresh_et_masks,
)
from monai_mixedfocal.data.datalist import Datalist, read_datalist, split_datalist, write_datalist
from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.folds import assign_folds
from monai_mixedfocal.data.kits19 import KITS19_EXCLUDED_CASES, KITS19_LABELS, KITS19_NOT_IMAGES, kits19_datalist
from monai_mixedfocal.data.msd import msd_datalist
from monai_mixedfocal.data.synthetic_brats20 import synthesize_brats20
from monai_mixedfocal.data.synthetic_kits19 import synthesize_kits19

# the preprocessing factories and checks import MONAI (slow); load them on first use so the command line and the
# datalist helpers stay light (``monai_mixedfocal.data.kits19_deterministic_transforms`` works as usual, e.g. from
# bundle configs)
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "BRATS20_PATCH_SIZE",
            "KITS19_HU_RANGE",
            "KITS19_PATCH_SIZE",
            "KITS19_PIXDIM",
            "brats20_deterministic_transforms",
            "kits19_deterministic_transforms",
        ),
        "monai_mixedfocal.data.transforms",
    ),
    **dict.fromkeys(("CheckFinited", "CheckLabelValuesd", "CheckedNibabelReader"), "monai_mixedfocal.data.checks"),
}


def __getattr__(name: str) -> Any:
    """Import the MONAI-based names (preprocessing factories, voxel checks) on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BRATS20_LABELS",
    "BRATS20_LABEL_VALUES",
    "BRATS20_NOT_IMAGES",
    "BRATS20_PATCH_SIZE",
    "KITS19_EXCLUDED_CASES",
    "KITS19_HU_RANGE",
    "KITS19_LABELS",
    "KITS19_NOT_IMAGES",
    "KITS19_PATCH_SIZE",
    "KITS19_PIXDIM",
    "CheckFinited",
    "CheckLabelValuesd",
    "CheckedNibabelReader",
    "DataError",
    "Datalist",
    "assign_folds",
    "brats20_datalist",
    "brats20_deterministic_transforms",
    "kits19_datalist",
    "kits19_deterministic_transforms",
    "msd_datalist",
    "read_datalist",
    "refresh_et_masks",
    "split_datalist",
    "synthesize_brats20",
    "synthesize_kits19",
    "write_datalist",
]
