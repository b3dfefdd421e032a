# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Deterministic preprocessing: spacing, orientation from the affine (not the array order), HU clip, z-scores."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, LoadImaged, NormalizeIntensityd, Spacingd

from monai_mixedfocal.data import (
    KITS19_PIXDIM,
    CheckLabelValuesd,
    DataError,
    brats20_deterministic_transforms,
    kits19_deterministic_transforms,
    synthesize_brats20,
    synthesize_kits19,
)
from monai_mixedfocal.data.io import save_nifti

SHAPE = (20, 48, 48)


@pytest.fixture(scope="module")
def kits_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = synthesize_kits19(tmp_path_factory.mktemp("kits"), case_ids=[4], shape=SHAPE)[0]
    return {"image": str(folder / "imaging.nii.gz"), "label": str(folder / "segmentation.nii.gz")}


def _rewrite(case: dict[str, str], out: Path, axcodes: tuple[str, str, str], keep_affine: bool = False) -> dict:
    """The same case with its arrays permuted and flipped to ``axcodes``; the affine follows unless ``keep_affine``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, path in case.items():
        image = nib.load(path)
        ornt = nib.orientations.ornt_transform(nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(axcodes))
        moved = image.as_reoriented(ornt)
        affine = image.affine if keep_affine else moved.affine
        written[key] = str(save_nifti(out / Path(path).name, np.asarray(moved.dataobj), affine))
    return written


def test_kits19_spacing_orientation_and_intensity(kits_case: dict[str, str]) -> None:
    out = Compose(kits19_deterministic_transforms())(dict(kits_case))
    image, label = out["image"], out["label"]
    assert image.shape == label.shape and image.shape[0] == 1 and image.dtype == torch.float32
    assert label.dtype == torch.uint8  # what a CacheDataset keeps: a quarter of a float32 label
    np.testing.assert_allclose(image.pixdim.numpy(), (1.62, 1.62, 3.22), atol=1e-5)
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    source = nib.load(kits_case["image"])
    assert image.shape[3] == pytest.approx(SHAPE[0] * source.header.get_zooms()[0] / 3.22, abs=1.5)  # slices last
    assert abs(float(image.mean())) < 1e-4 and float(image.std()) == pytest.approx(1.0, abs=1e-3)
    assert set(torch.unique(label).tolist()) == {0.0, 1.0, 2.0}
    unnormalized = Compose([t for t in kits19_deterministic_transforms() if not isinstance(t, NormalizeIntensityd)])
    clipped = unnormalized(dict(kits_case))["image"]
    assert float(clipped.min()) == pytest.approx(-79.0) and float(clipped.max()) == pytest.approx(304.0)


def test_orientation_comes_from_the_affine(kits_case: dict[str, str], tmp_path: Path) -> None:
    preprocess = Compose(kits19_deterministic_transforms())
    reference = preprocess(dict(kits_case))
    permuted = preprocess(_rewrite(kits_case, tmp_path / "ras", ("R", "A", "S")))
    assert nib.load(tmp_path / "ras" / "imaging.nii.gz").shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    for key in ("image", "label"):
        np.testing.assert_allclose(permuted[key].numpy(), reference[key].numpy(), atol=1e-4)
        np.testing.assert_allclose(permuted[key].affine.numpy(), reference[key].affine.numpy(), atol=1e-4)
    # control: the permuted array with the ORIGINAL affine is a different image, so the check above can fail
    wrong = preprocess(_rewrite(kits_case, tmp_path / "wrong", ("R", "A", "S"), keep_affine=True))
    assert wrong["image"].shape != reference["image"].shape or not np.allclose(wrong["image"], reference["image"])


def test_spatial_steps_invert_to_the_original_grid(kits_case: dict[str, str]) -> None:
    preprocess = Compose(kits19_deterministic_transforms())
    data = preprocess(dict(kits_case))
    data["pred"] = data["label"].clone()
    restored = Invertd("pred", transform=preprocess, orig_keys="label", nearest_interp=True)(data)["pred"]
    original = nib.load(kits_case["label"])
    assert tuple(restored.shape[1:]) == original.shape
    np.testing.assert_allclose(restored.affine.numpy(), original.affine, atol=1e-4)
    agreement = (restored[0].numpy() == np.asarray(original.dataobj)).mean()
    assert agreement > 0.97


def test_kits19_resampling_computes_in_float32_with_the_float64_values(kits_case: dict[str, str]) -> None:
    """Against a return to MONAI's float64 default (``Spacingd(dtype=np.float64)``), whose float64 sampling grid
    doubled the memory of the resampling and of the evaluation's ``Invertd`` of class probabilities (+7.4 GB instead
    of +3.6 GB for a 500 x 512 x 512 CT). The float32 computation gives the float64 values up to rounding: the same
    label, and the same argmax of inverted probabilities."""
    float32 = kits19_deterministic_transforms()
    assert [t.dtype for t in float32 if isinstance(t, Spacingd)] == [(torch.float32, torch.float32)]
    spacing = {"pixdim": KITS19_PIXDIM, "mode": ("bilinear", "nearest")}
    float64 = [Spacingd(t.keys, **spacing) if isinstance(t, Spacingd) else t for t in float32]
    assert [t.dtype for t in float64 if isinstance(t, Spacingd)] == [(np.float64, np.float64)]  # MONAI's default
    outputs = []
    for transforms in (float32, float64):
        preprocess = Compose(transforms)
        data = preprocess(dict(kits_case))
        logits = torch.stack([torch.sin(data["image"][0] + k) for k in range(3)])
        data["pred"] = MetaTensor(torch.softmax(logits, 0), meta=data["image"].meta)
        data["pred"].applied_operations = data["image"].applied_operations
        restored = Invertd("pred", transform=preprocess, orig_keys="image")(data)["pred"]
        outputs.append((data["image"].as_tensor(), data["label"].as_tensor(), restored.as_tensor()))
    (image32, label32, probs32), (image64, label64, probs64) = outputs
    assert torch.equal(label32, label64)
    torch.testing.assert_close(image32, image64, rtol=0, atol=1e-3)
    torch.testing.assert_close(probs32, probs64, rtol=0, atol=1e-5)
    assert torch.equal(probs32.argmax(0), probs64.argmax(0))


def test_image_only_variant_and_bad_arguments(kits_case: dict[str, str]) -> None:
    out = Compose(kits19_deterministic_transforms(label_key=None))({"image": kits_case["image"]})
    np.testing.assert_allclose(out["image"].pixdim.numpy(), (1.62, 1.62, 3.22), atol=1e-5)
    with pytest.raises(ValueError, match="pixdim"):
        kits19_deterministic_transforms(pixdim=(1.0, 1.0))
    with pytest.raises(ValueError, match="hu_range"):
        kits19_deterministic_transforms(hu_range=(304, -79))
    with pytest.raises(ValueError, match="axcodes"):
        kits19_deterministic_transforms(axcodes="RA")


@pytest.mark.parametrize("nonzero", [False, "false", "False"])  # "false": --zscore_nonzero false, as fire passes it
def test_brats20_whole_volume_zscore_as_in_the_paper(tmp_path: Path, nonzero: bool | str) -> None:
    """``nonzero=False``: MIScnn's z-score over every voxel, background included (the paper's)."""
    folder = synthesize_brats20(tmp_path, case_ids=[7], shape=(32, 32, 24))[0]
    path = str(folder / "BraTS20_Training_007_t1ce.nii.gz")
    image = Compose(brats20_deterministic_transforms(label_key=None, nonzero=nonzero))({"image": path})["image"][0]
    raw = np.asarray(nib.load(path).dataobj, dtype=np.float64)
    assert abs(float(image.mean())) < 1e-4 and float(image.std()) == pytest.approx(1.0, abs=1e-3)
    background = float(image[torch.as_tensor(raw == 0)].unique().item())
    assert background == pytest.approx(-raw.mean() / raw.std(), rel=1e-4) and background < 0


def test_brats20_brain_zscore_without_resampling(tmp_path: Path) -> None:
    folder = synthesize_brats20(tmp_path, case_ids=[7], shape=(32, 32, 24))[0]
    seg = folder / "BraTS20_Training_007_seg.nii.gz"
    source = nib.load(seg)
    label = save_nifti(tmp_path / "et.nii.gz", (np.asarray(source.dataobj) == 4).astype(np.uint8), source.affine)
    out = Compose(brats20_deterministic_transforms())(
        {"image": str(folder / "BraTS20_Training_007_t1ce.nii.gz"), "label": str(label)}
    )
    image = out["image"][0]
    raw = np.asarray(nib.load(folder / "BraTS20_Training_007_t1ce.nii.gz").dataobj)
    assert tuple(image.shape) == raw.shape  # the 1 mm grid is kept
    np.testing.assert_allclose(out["image"].pixdim.numpy(), (1.0, 1.0, 1.0))
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    brain = image != 0
    assert int(brain.sum()) == int((raw != 0).sum())  # background stays exactly 0
    assert abs(float(image[brain].mean())) < 1e-4 and float(image[brain].std()) == pytest.approx(1.0, abs=1e-3)
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0}
    assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.uint8  # what a CacheDataset keeps


def _data_error(error: BaseException) -> DataError | None:
    """The DataError in an exception's chain (MONAI's Compose wraps it in a RuntimeError)."""
    while error is not None and not isinstance(error, DataError):
        error = error.__cause__
    return error


def test_a_label_off_the_images_grid_fails_after_loading(kits_case: dict[str, str], tmp_path: Path) -> None:
    """After LoadImaged, a label with another shape or a shifted affine fails naming both files (not a silent
    misaligned pair, nor a shape error deep in the network or the metric)."""
    source = nib.load(kits_case["label"])
    labels = np.asarray(source.dataobj)
    shifted = source.affine.copy()
    shifted[:3, 3] += 30.0
    cropped = save_nifti(tmp_path / "cropped.nii.gz", labels[:, :-4], source.affine)
    moved = save_nifti(tmp_path / "moved.nii.gz", labels, shifted)
    for transforms in (kits19_deterministic_transforms(), brats20_deterministic_transforms()):
        for label, message in ((cropped, "label shape"), (moved, "label voxel grid does not match")):
            with pytest.raises(Exception) as info:
                Compose(transforms)({"image": kits_case["image"], "label": str(label)})
            error = _data_error(info.value)
            assert error is not None and str(error).startswith(f"{label}: {message}")
            assert kits_case["image"] in str(error)
    with pytest.raises(ValueError, match="image_key"):
        CheckLabelValuesd("label", values=(0, 1), dataset="x", image_key="label")


def test_a_gzip_damaged_in_place_fails_naming_the_file(kits_case: dict[str, str], tmp_path: Path) -> None:
    """A byte changed inside a stored (level 0) gzip block decodes silently into a wrong voxel; the gzip CRC read at
    the end of the stream catches it. A truncated file names the file too. An intact file loads as MONAI's own reader
    loads it."""
    raw = gzip.decompress(Path(kits_case["image"]).read_bytes())
    damaged = bytearray(gzip.compress(raw, compresslevel=0, mtime=0))
    damaged[len(damaged) // 2] ^= 0xFF
    inplace = tmp_path / "inplace" / "imaging.nii.gz"
    inplace.parent.mkdir()
    inplace.write_bytes(bytes(damaged))
    truncated = tmp_path / "truncated" / "imaging.nii.gz"
    truncated.parent.mkdir()
    truncated.write_bytes(Path(kits_case["image"]).read_bytes()[:-200])
    for path, message in ((inplace, "corrupt gzip stream"), (truncated, "cannot read the voxel data")):
        for transforms in (kits19_deterministic_transforms(), kits19_deterministic_transforms(label_key=None)):
            with pytest.raises(Exception) as info:
                Compose(transforms)({"image": str(path), "label": kits_case["label"]})
            error = _data_error(info.value)
            assert error is not None and str(error).startswith(f"{path}: {message}")
    load = kits19_deterministic_transforms()[0]
    checked = load(dict(kits_case))
    plain = LoadImaged(["image", "label"], image_only=True)(dict(kits_case))
    for key in ("image", "label"):
        assert torch.equal(checked[key].as_tensor(), plain[key].as_tensor())
        np.testing.assert_array_equal(checked[key].affine.numpy(), plain[key].affine.numpy())
        assert checked[key].meta["filename_or_obj"] == kits_case[key]


def test_kits19_image_is_resampled_linearly_and_the_label_by_nearest(kits_case: dict[str, str]) -> None:
    """Against the bug ``mode=["bilinear", "nearest"]`` -> ``["nearest", "nearest"]``: the CT was resampled by nearest
    neighbour (blocky, every value an original integer HU) and no test noticed."""
    from monai.transforms import Compose, NormalizeIntensityd

    from monai_mixedfocal.data import kits19_deterministic_transforms

    unnormalized = Compose([t for t in kits19_deterministic_transforms() if not isinstance(t, NormalizeIntensityd)])
    out = unnormalized(dict(kits_case))
    image = out["image"].numpy()
    inside = image[(image > -79.0) & (image < 304.0)]  # not clipped to the HU window
    assert inside.size > 1000 and np.mean(inside != np.round(inside)) > 0.5  # interpolated between the integer HU
    assert set(np.unique(out["label"].numpy()).tolist()) == {0.0, 1.0, 2.0}  # the label keeps its values


def test_kits19_zscore_includes_the_zero_hu_voxels(kits_case: dict[str, str], tmp_path: Path) -> None:
    """Against the bug ``NormalizeIntensityd(image_key)`` -> ``nonzero=True``: voxels of exactly 0 HU (water, common in
    CT) were left out of the per-image z-score; the synthetic cases hold too few of them for the existing mean / std
    check to notice."""
    from monai.transforms import Compose

    from monai_mixedfocal.data import kits19_deterministic_transforms

    source = nib.load(kits_case["image"])
    volume = np.asarray(source.dataobj).copy()
    volume[:, :16, :] = 0  # a third of the volume at exactly 0 HU
    image = save_nifti(tmp_path / "imaging.nii.gz", volume, source.affine)
    out = Compose(kits19_deterministic_transforms(label_key=None))({"image": str(image)})["image"]
    assert abs(float(out.mean())) < 1e-4 and float(out.std()) == pytest.approx(1.0, abs=1e-3)


def test_the_label_key_must_differ_from_the_image_key() -> None:
    """Against the bug (drop ``label_key == image_key``): ``label_key="image"`` built a pipeline that checked the
    image's values as label values."""
    from monai_mixedfocal.data import brats20_deterministic_transforms, kits19_deterministic_transforms

    for factory in (kits19_deterministic_transforms, brats20_deterministic_transforms):
        with pytest.raises(ValueError, match="label_key must be None or a non-empty string other than image_key"):
            factory(label_key="image")
