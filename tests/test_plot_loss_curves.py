# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""``scripts/plot_loss_curves.py``: the figures are written, are not blank, and the curves have the paper's shapes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from matplotlib.image import imread

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_loss_curves.py"


@pytest.fixture(scope="module")
def plot_script() -> Iterator[ModuleType]:
    """The script loaded as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("plot_loss_curves", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_writes_every_figure_and_none_is_blank(plot_script: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "images"
    paths = plot_script.main(["--out", str(out)])
    assert [p.name for p in paths] == list(plot_script.FIGURE_NAMES)
    assert sorted(p.name for p in out.iterdir()) == sorted(plot_script.FIGURE_NAMES)  # no temporary file left
    for path in paths:
        image = imread(path)[..., :3]
        assert image.shape[0] > 300 and image.shape[1] > 400, f"{path.name} is too small: {image.shape}"
        colours = np.unique(image.reshape(-1, 3).round(2), axis=0)
        assert len(colours) > 20, f"{path.name} looks blank ({len(colours)} colours)"
        assert 0.02 < float((image.min(axis=-1) < 0.9).mean()) < 0.5, f"{path.name}: too little or too much ink"


def test_focal_curves_have_the_paper_shape(plot_script: ModuleType) -> None:
    """Fig. 2a: gamma = 0 is the cross entropy; larger gamma lowers the loss of well-classified voxels."""
    p_t = plot_script.ground_truth_probabilities(51)
    ce = plot_script.focal_curve(p_t, 0.0)
    torch.testing.assert_close(ce, -torch.log(p_t), rtol=1e-6, atol=1e-6)
    previous = ce
    for gamma in (0.5, 2.0, 5.0):
        curve = plot_script.focal_curve(p_t, gamma)
        assert (curve[1:-1] < previous[1:-1]).all() and (curve.diff() <= 0).all()
        previous = curve


@pytest.mark.parametrize("kind", ["focal_tversky", "cosine_tversky"])
def test_region_curves_go_from_one_to_zero(plot_script: ModuleType, kind: str) -> None:
    """Fig. 2b/c: the Tversky index sweeps [0, 1]; the loss falls from 1 (no overlap) to 0 (perfect overlap)."""
    p = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    index = plot_script.tversky_index(p)
    assert index[0] < 1e-4 and index[-1] == pytest.approx(1.0) and (index.diff() > 0).all()
    make = {"focal_tversky": plot_script.FocalTverskyLoss, "cosine_tversky": plot_script.CosineTverskyLoss}[kind]
    curve = plot_script.region_curve(make(delta=0.7, gamma=2.0, reduction="none"), p)
    assert curve[0] == pytest.approx(1.0, abs=1e-3) and curve[-1] == pytest.approx(0.0, abs=1e-3)
    assert (curve.diff() < 0).all()


def test_mixed_focal_curve_is_the_sum_of_its_parts(plot_script: ModuleType) -> None:
    """(d): Eq. 24 is FT + CF and Eq. 23 with lambda 0.5 is their average, as computed by MixedFocalLoss itself."""
    curves = list(plot_script.mixed_focal_curves(torch.tensor([0.4, 0.7, 0.95], dtype=torch.float64)).values())
    focal_tversky, focal, eq24, eq23 = curves
    torch.testing.assert_close(eq24, focal_tversky + focal)
    torch.testing.assert_close(eq23, 0.5 * (focal_tversky + focal))


def test_unknown_region_kind_is_rejected(plot_script: ModuleType) -> None:
    with pytest.raises(ValueError, match="dice"):
        plot_script.plot_region("dice", (1.0,))
