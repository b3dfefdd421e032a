# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The embedded default study: generated KiTS19-like data and a CPU-sized schedule (``study --demo``).

Three losses (cross entropy, Dice, Mixed Focal) on two folds of ten generated KiTS19-like cases, through the same
KiTS19 bundle as the full study, with a small U-Net, small patches and a short schedule, so that it finishes on a
2-core CPU in under ten minutes (measured: 6 to 9 minutes from a fresh clone, install included). Its numbers show
the pipeline working, not the paper's results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai_mixedfocal.data import kits19_datalist, synthesize_kits19
from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.study.study import StudySpec

DEMO_LOSSES: tuple[str, ...] = ("cross_entropy", "dice", "mixed_focal")
DEMO_FOLDS = 2
DEMO_CASES = 10
DEMO_SEED = 0
#: generated volume size, (slices, H, W): a quarter of the default, so that a run takes about a CPU minute
DEMO_SHAPE = (32, 96, 96)
#: bundle overrides of the demo (the full study uses the bundle's paper settings)
DEMO_OVERRIDES: dict[str, Any] = {
    "epochs": 24,
    "iterations_per_epoch": 10,
    "val_interval": 6,
    "patch_size": [48, 48, 16],
    "batch_size": 2,
    "num_workers": 0,
    "network_def#features": [8, 16, 32, 64, 128, 8],
    "lr_patience": 3,
    "learning_rate": 0.003,
    "sw_batch_size": 2,
}


def demo_data(out_dir: Path) -> Path:
    """Generate the demo's KiTS19-like cases under ``out_dir/data_kits19`` (reused when already there)."""
    root = out_dir / "data_kits19"
    try:
        if len(kits19_datalist(root, validate=False).cases) >= DEMO_CASES:
            return root
    except DataError:
        pass
    synthesize_kits19(root, cases=DEMO_CASES, seed=DEMO_SEED, shape=DEMO_SHAPE)
    return root


def demo_spec(out_dir: str | Path, **changes: Any) -> StudySpec:
    """The demo study in ``out_dir`` (data generated on first use); ``changes`` replace fields of the spec."""
    out = Path(out_dir)
    fields: dict[str, Any] = {
        "dataset": "kits19",
        "data_root": demo_data(out),
        "out_dir": out,
        "losses": list(DEMO_LOSSES),
        "num_folds": DEMO_FOLDS,
        "seed": DEMO_SEED,
        "overrides": dict(DEMO_OVERRIDES),
    }
    fields.update(changes)
    return StudySpec(**fields)
