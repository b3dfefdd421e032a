# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""A short learning check: the KiTS19 bundle, trained for a few CPU minutes on generated KiTS19-like data with the
Mixed Focal loss, segments the kidney of its validation cases far better than chance.

Measured when written (2-core CPU, one thread): 15 epochs x 10 iterations in about 3 minutes, validation kidney DSC
0.72 and 0.83 (mean 0.77) in the original image space; chance is below 0.03 (see ``_chance_dsc``). The threshold, 0.5,
leaves room for other CPUs and library versions.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bundle_utils import KITS, cli_args, run_bundle

from monai_mixedfocal.data import synthesize_kits19

pytestmark = pytest.mark.slow

SCHEDULE = {
    "epochs": 15,
    "iterations_per_epoch": 10,
    "patch_size": [48, 48, 16],
    "learning_rate": 0.003,
    "num_folds": 5,
    "num_workers": 0,
    "cache_rate": 1,
    "network_def#features": [8, 16, 32, 64, 128, 8],
}
MIN_KIDNEY_DSC = 0.5


def _chance_dsc(label_file: Path) -> float:
    """The best DSC a prediction independent of the image can expect: all-kidney, 2k / (1 + k) for kidney share k."""
    share = float((np.asarray(nib.load(label_file).dataobj) == 1).mean())
    return 2 * share / (1 + share)


def test_kits19_bundle_learns_the_kidney(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthesize_kits19(data, cases=10, seed=1, shape=(32, 96, 96))
    values = {**SCHEDULE, "dataset_dir": str(data), "bundle_root": str(tmp_path / "run"), "loss": "mixed_focal"}
    run_bundle(KITS, ["run", "training", "--config_file", "configs/train.json", *cli_args(values)])
    run_bundle(KITS, ["run", "--config_file", "['configs/train.json','configs/evaluate.json']", *cli_args(values)])
    table = pd.read_csv(tmp_path / "run" / "eval" / "per_case_metrics.csv")
    kidney = table[table["class"] == "kidney"]
    assert len(kidney) == 2
    chance = max(_chance_dsc(data / "data" / case / "segmentation.nii.gz") for case in kidney["case"])
    assert chance < 0.05
    print(f"validation kidney DSC {kidney['dsc'].round(3).tolist()} (chance < {chance:.3f})")
    assert kidney["dsc"].mean() > MIN_KIDNEY_DSC
