# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""``patch_sampling``: uniformly random patches (the paper) or patches centred on each class, as the bundles use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from monai_mixedfocal.bundle import PATCH_SAMPLING_MODES, patch_sampling
from monai_mixedfocal.bundle.patch_sampling import MAX_INDICES_PER_CLASS

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
PATCH = (8, 8, 8)


def _case() -> dict[str, torch.Tensor]:
    """A 32^3 volume with one 2^3 foreground cube in a corner (class 1): 0.02% of the voxels."""
    label = torch.zeros(1, 32, 32, 32)
    label[0, 1:3, 1:3, 1:3] = 1
    return {"image": torch.arange(32**3, dtype=torch.float32).reshape(1, 32, 32, 32), "label": label}


def _foreground_share(mode: str, ratios: list[float] | None = None, draws: int = 400) -> float:
    """The share of patches that hold foreground, over ``draws`` patches of one seeded pipeline."""
    crop = Compose(patch_sampling(mode, PATCH, num_classes=2, ratios=ratios)).set_random_state(seed=0)
    case = _case()
    hits = 0
    for _ in range(draws):
        out = crop(dict(case))
        out = out[0] if isinstance(out, list) else out
        assert tuple(out["image"].shape[1:]) == PATCH and tuple(out["label"].shape[1:]) == PATCH
        hits += bool(out["label"].any())
    return hits / draws


def test_random_patches_see_the_foreground_as_often_as_its_position_allows() -> None:
    """Uniform positions: a patch holds the corner cube for 3 x 3 x 3 of the 25 x 25 x 25 start positions (0.17%)."""
    assert _foreground_share("random") < 0.02


def test_by_class_patches_are_centred_on_the_chosen_classes() -> None:
    assert _foreground_share("by_class", ratios=[0, 1], draws=50) == 1.0
    assert 0.3 < _foreground_share("by_class", ratios=[1, 1], draws=200) < 0.7


def test_random_positions_cover_the_volume() -> None:
    crop = Compose(patch_sampling("random", PATCH, num_classes=2)).set_random_state(seed=1)
    corners = {int(crop(_case())["image"].flatten()[0]) for _ in range(200)}
    starts = np.array([np.unravel_index(c, (32, 32, 32)) for c in corners])
    assert len(corners) > 150 and starts.min() == 0 and starts.max() == 32 - PATCH[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "uniform"}, "patch_sampling must be one of ('random', 'by_class'), got 'uniform'"),
        ({"mode": "by_class", "ratios": [1, 1, 1]}, "one weight per class (2), got 3"),
        ({"mode": "by_class", "ratios": [1, -1]}, "non-negative and not all zero"),
        ({"mode": "by_class", "ratios": [0, 0]}, "non-negative and not all zero"),
        ({"mode": "by_class", "ratios": [1, float("nan")]}, "non-negative and not all zero"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        patch_sampling(patch_size=PATCH, num_classes=2, **kwargs)


@pytest.mark.parametrize("bundle", ["kits19_mixedfocal_segmentation", "brats20_mixedfocal_segmentation"])
@pytest.mark.parametrize("mode", PATCH_SAMPLING_MODES)
def test_the_bundles_crop_as_configured(bundle: str, mode: str) -> None:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
    assert parser["patch_sampling"] == "random"  # the paper's default
    parser["patch_sampling"] = mode
    names = [type(t).__name__ for t in parser.get_parsed_content("train#crop")]
    expected = (
        ["RandSpatialCropd"] if mode == "random" else ["ClassesToIndicesd", "RandCropByLabelClassesd", "DeleteItemsd"]
    )
    assert names == expected


def test_by_class_draws_one_patch_per_case() -> None:
    """Against the bug (num_samples=2): the existing tests took ``out[0]`` of whatever list came back; the bundles'
    batch size would silently double."""
    out = Compose(patch_sampling("by_class", PATCH, num_classes=2, ratios=[1, 1])).set_random_state(seed=0)(_case())
    assert isinstance(out, list) and len(out) == 1
    assert tuple(out[0]["image"].shape[1:]) == PATCH and "label_cls_indices" not in out[0]


def test_by_class_without_ratios_weighs_the_classes_equally() -> None:
    """Against the bug (the default ``ratios=None`` built with the wrong length): every existing test passed ratios."""
    crop = Compose(patch_sampling("by_class", PATCH, num_classes=2)).set_random_state(seed=0)
    hits = sum(bool(crop(_case())[0]["label"].any()) for _ in range(200))
    assert 60 < hits < 140


def test_too_few_ratios_are_refused() -> None:
    """Against the bug (``!=`` -> ``>``): one weight for two classes is refused too, not only three."""
    with pytest.raises(ValueError, match=r"one weight per class \(2\), got 1"):
        patch_sampling("by_class", PATCH, num_classes=2, ratios=[1])


def test_by_class_keeps_every_index_of_a_class_up_to_the_cap() -> None:
    """Against the bug (a smaller cap of cached indices): a 32^3 background keeps all its 32760 voxel indices."""
    assert MAX_INDICES_PER_CLASS >= 32**3
    indices = patch_sampling("by_class", PATCH, num_classes=2)[0](_case())["label_cls_indices"]
    assert [len(i) for i in indices] == [32**3 - 8, 8]


def test_by_class_crops_around_the_cached_indices() -> None:
    """Against the bug (RandCropByLabelClassesd without indices_key: it recomputes the indices from the label at every
    draw, so the cached ClassesToIndicesd result is wasted work). Cached indices that point elsewhere than the label are
    the ones used."""
    _, crop, delete = patch_sampling("by_class", PATCH, num_classes=2, ratios=[0, 1])
    case = _case()
    centre = 16 * 32 * 32 + 16 * 32 + 16  # voxel (16, 16, 16): no foreground there
    case["label_cls_indices"] = [torch.tensor([0]), torch.tensor([centre])]
    crop.set_random_state(seed=0)
    out = delete(crop(case)[0])
    assert int(out["image"].flatten()[0]) == 12 * 32 * 32 + 12 * 32 + 12  # the patch [12:20]^3 around (16, 16, 16)
