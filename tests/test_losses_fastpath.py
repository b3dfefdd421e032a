# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The fused fast path of the losses (``monai_mixedfocal.losses._fused``) against the plain autograd path.

Every loss, in every input form the fused kernels cover (softmax, sigmoid, probabilities and ``other_act``; class
indices, one-hot and soft targets; one channel), with and without the background, batch pooling, per-class ``alpha``
and ``beta``: values and input gradients equal to 1e-5 in float32 and 1e-10 in float64, under autocast too; gradcheck
of the fused backward; the validation errors; the mode switch. The eager kernels are compared in the quick set; the
compiled ones (tens of seconds of compilation) in one ``slow`` test. On a machine with a CUDA device the kernels also
run there (eager and compiled, float64, float32 and under float16 autocast) against the plain path on the CPU.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from fused_cases import (
    LOSSES,
    MODES,
    OPTIONS,
    ROOT,
    SHAPE_2D,
    SHAPE_3D,
    assert_same,
    make_case,
    value_and_grad,
)
from monai.data import MetaTensor
from torch._dynamo.utils import counters

from monai_mixedfocal.losses import (
    CategoricalFocalLoss,
    MixedFocalLoss,
    _fused,
    _fused_loss,
    _fused_mode,
    _fused_runner,
    _kernels,
)
from monai_mixedfocal.losses._fused_runner import _own_code


def _compare(name: str, mode: str, options: dict, shape: tuple[int, ...], dtype: torch.dtype, fused: str) -> None:
    x, target, kwargs = make_case(mode, shape, dtype, seed=len(name) + len(mode))
    single = shape[1] == 1
    num_kept = shape[1] - (0 if (options.get("include_background", True) or single) else 1)
    loss = LOSSES[name](num_kept)(**kwargs, **options)
    ref_value, ref_grad = value_and_grad(loss, x, target, "off")
    value, grad = value_and_grad(loss, x, target, fused)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    what = f"{name} / {mode} / {options} / {dtype}"
    assert_same(value, ref_value, tol, f"{what}: value")
    assert_same(grad, ref_grad, tol, f"{what}: gradient")


@pytest.fixture(autouse=True)
def _single_thread() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_fused_equals_plain_float64(name: str, mode: str) -> None:
    """Every loss and input form, with every option, 3-D: the fused kernels give the plain path's values (1e-10)."""
    for options in OPTIONS:
        _compare(name, mode, options, SHAPE_3D, torch.float64, "eager")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_fused_equals_plain_float32_2d(name: str, mode: str) -> None:
    """float32, 2-D images, batch of 3 with 4 classes: equal to 1e-5."""
    _compare(name, mode, {"include_background": False}, SHAPE_2D, torch.float32, "eager")


@pytest.mark.parametrize("mode", ["probabilities-onehot", "sigmoid-onehot"])
@pytest.mark.parametrize("name", ["dice", "focal_tversky", "focal_beta_g05", "combo_modified", "mixed_focal"])
def test_fused_equals_plain_single_channel(name: str, mode: str) -> None:
    """A one-channel output (binary form; the flags it ignores warn on both paths)."""
    with pytest.warns(UserWarning, match="single channel"):
        _compare(name, mode, {"include_background": False}, (2, 1, 6, 7), torch.float64, "eager")


@pytest.mark.parametrize("name", ["dice", "focal_tversky", "cosine_tversky_g25"])
def test_region_reduction_none(name: str) -> None:
    """Region losses keep their per-image, per-class shape on the fused path."""
    for batch in (False, True):
        _compare(name, "softmax-labels", {"reduction": "none", "batch": batch}, SHAPE_3D, torch.float64, "eager")


def test_chunked_volume_equals_plain() -> None:
    """A volume of several chunks (partial sums added up, the gradient written chunk by chunk)."""
    num_voxels = 2 * _fused.CHUNK_VOXELS + 123
    shape = (2, 3, num_voxels // 100 + 1, 100)
    for name in ("mixed_focal", "combo", "focal_alpha_g1", "dice"):
        _compare(name, "softmax-labels", {"include_background": False}, shape, torch.float32, "eager")
    _compare("mixed_focal", "probabilities-onehot", {}, shape, torch.float32, "eager")
    # the input check runs on the totals of the chunks: a NaN or a bad label in a later chunk is found
    x, labels, kwargs = make_case("softmax-labels", shape, torch.float32, seed=11)
    bad = x.clone()
    bad.view(2, 3, -1)[1, 2, _fused.CHUNK_VOXELS + 5] = math.nan
    wrong = labels.clone()
    wrong.view(2, -1)[0, 2 * _fused.CHUNK_VOXELS + 7] = 3
    with _fused.use_fused_mode("eager"):
        with pytest.raises(ValueError, match="input contains NaN/inf"):
            MixedFocalLoss(**kwargs)(bad, labels)
        with pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
            MixedFocalLoss(**kwargs)(x, wrong)


@pytest.mark.parametrize(
    ("dtype", "autocast", "grad_tol"),
    [(torch.float32, torch.bfloat16, 1e-5), (torch.float16, None, 2e-3), (torch.bfloat16, torch.bfloat16, 1e-2)],
)
@pytest.mark.parametrize("name", ["mixed_focal", "combo", "focal_tversky"])
def test_low_precision_and_autocast(
    name: str, dtype: torch.dtype, autocast: torch.dtype | None, grad_tol: float
) -> None:
    """float32 loss from half-precision inputs (and under CPU autocast): the same value (1e-5) and gradient (in the
    input's precision) on both paths."""
    x, target, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=3)
    x = x.to(dtype)
    loss = LOSSES[name](3)(**kwargs)
    results = []
    for mode in ("off", "eager"):
        leaf = x.clone().requires_grad_(True)
        amp = torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None)
        with amp, _fused.use_fused_mode(mode):
            value = loss(leaf, target)
        assert value.dtype == torch.float32
        value.backward()
        assert leaf.grad is not None and leaf.grad.dtype == dtype
        results.append((value.detach(), leaf.grad.float()))
    assert_same(results[1][0], results[0][0], 1e-5, "value")
    assert_same(results[1][1], results[0][1], grad_tol, "gradient")


@pytest.mark.parametrize(
    ("name", "mode", "options"),
    [
        ("mixed_focal", "softmax-labels", {"include_background": False}),
        ("mixed_focal_eq23", "softmax-onehot", {"batch": True}),
        ("combo_modified", "sigmoid-labels", {}),
        ("focal_alpha_g3", "probabilities-labels", {}),
        ("focal_tversky_g075", "probabilities-onehot", {"include_background": False}),
        ("cosine_tversky_g25", "softmax-soft", {}),
    ],
)
def test_gradcheck_fused(name: str, mode: str, options: dict) -> None:
    """The fused backward is the derivative of the fused forward (finite differences, float64)."""
    x, target, kwargs = make_case(mode, (2, 3, 3, 4), torch.float64, seed=7)
    if mode.startswith("probabilities"):
        x = x.clamp(1e-3, 1 - 1e-3)  # finite differences stay inside the clip
    loss = LOSSES[name](3 - (0 if options.get("include_background", True) else 1))(**kwargs, **options)
    leaf = x.clone().requires_grad_(True)
    with _fused.use_fused_mode("eager"):
        assert torch.autograd.gradcheck(lambda inp: loss(inp, target), (leaf,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_fused_gradient_of_all_but_certain_voxels(gamma: float) -> None:
    """Voxels whose label's logit is 28.6 or 29.5 above the others: ``1 - p_t`` falls below the ``1e-12`` floor of
    the focal factor, whose derivative autograd takes as 0 there; the fused backward must too (``gamma < 1``: the
    factor's derivative grows without bound near 0). Random logits never get there."""
    labels = torch.tensor([0, 1, 2, 1, 0, 2]).view(1, 1, 6)
    x = torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for voxel, gap in ((0, 28.6), (1, 29.5), (2, 28.6), (3, 29.5)):
        x[0, :, voxel] = 0.0
        x[0, labels[0, 0, voxel], voxel] = gap
    loss = CategoricalFocalLoss(gamma=gamma, alpha=1.0, softmax=True, to_onehot_y=True)
    _, ref_grad = value_and_grad(loss, x, labels, "off")
    _, grad = value_and_grad(loss, x, labels, "eager")
    assert (ref_grad[..., :4] != 0).all()  # tiny but not zero: the other classes' terms
    torch.testing.assert_close(grad, ref_grad, rtol=1e-2, atol=0.0)


_INPUT_OPTIONS = {"sigmoid": False, "softmax": True, "other_act": None, "to_onehot_y": True, "include_background": True}


def _statistics(x: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> _fused.FusedStatistics | None:
    return _fused.fused_statistics(x, target, **{**_INPUT_OPTIONS, **kwargs}, region=True, focal=(0.25, 2.0, None))


def test_weights_made_under_inference_mode_serve_training() -> None:
    """The per-class weights are made once per configuration and reused: made first under ``torch.inference_mode``
    (an evaluation), they still serve a training step (inference tensors cannot be saved for backward)."""
    _fused._weight_tensors.cache_clear()
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=12)
    loss = CategoricalFocalLoss(alpha=[0.125, 0.375, 0.5], beta=0.625, **kwargs)
    with _fused.use_fused_mode("eager"):
        with torch.inference_mode():
            loss(x, labels)
        leaf = x.clone().requires_grad_(True)
        loss(leaf, labels).backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    assert _fused._weight_tensors.cache_info().hits >= 1


def test_deferred_input_check() -> None:
    """``fused_statistics`` raises for invalid labels at once by default; with ``defer_check=True`` it returns the
    check as a tensor and :meth:`FusedStatistics.check` raises the same error."""
    x, labels, _ = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=13)
    labels[0, 0, 1, 2, 3] = 5
    with _fused.use_fused_mode("eager"):
        with pytest.raises(ValueError, match=r"got values in \[0, 5\]"):
            _statistics(x, labels)
        stats = _statistics(x, labels, defer_check=True)
        assert stats is not None and stats.valid is not None and not bool(stats.valid)
        with pytest.raises(ValueError, match=r"got values in \[0, 5\]"):
            stats.check()
        labels[0, 0, 1, 2, 3] = 1
        stats = _statistics(x, labels, defer_check=True)
        assert stats is not None and bool(stats.valid)
        stats.check()


def test_mode_selects_the_path() -> None:
    """ "off" and small inputs in "auto" take the plain path; "eager" the fused one; the variable is validated."""
    x, labels, _ = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=0)
    with _fused.use_fused_mode("off"):
        assert _statistics(x, labels) is None
    with _fused.use_fused_mode("auto"):
        assert x.numel() < _fused.AUTO_MIN_ELEMENTS
        assert _statistics(x, labels) is None
    with _fused.use_fused_mode("eager"):
        stats = _statistics(x, labels)
    assert stats is not None and stats.pred_sum.shape == (2, 3) and stats.num_voxels == math.prod(SHAPE_3D[2:])
    assert torch.equal(stats.ref_sum, F.one_hot(labels[:, 0], 3).flatten(1, -2).sum(1))
    with pytest.raises(ValueError, match="mode must be one of"), _fused.use_fused_mode("fast"):
        pass
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(_fused.ENV_VAR, " Eager ")
        assert _fused.fused_mode() == "eager"
        patch.setenv(_fused.ENV_VAR, "fastest")
        with pytest.raises(ValueError, match="MONAI_MIXEDFOCAL_FUSED must be one of"):
            _fused.fused_mode()
        with _fused.use_fused_mode("off"):  # the innermost choice wins
            assert _fused.fused_mode() == "off"


def test_plain_path_where_the_kernels_do_not_apply() -> None:
    """A target that requires a gradient, per-voxel pixel values and a wrong alpha length take the plain path."""
    x, onehot, _ = make_case("softmax-onehot", SHAPE_3D, torch.float64, seed=1)
    with _fused.use_fused_mode("eager"):
        assert _statistics(x, onehot.requires_grad_(True), to_onehot_y=False) is None
        with pytest.raises(ValueError, match="alpha has 2 per-class weights"):
            CategoricalFocalLoss(alpha=[1.0, 2.0], softmax=True)(x, onehot.detach())
        value = CategoricalFocalLoss(softmax=True, reduction="none")(x, onehot.detach())
    assert value.shape == x.shape


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["labelled", "other"])
def test_non_finite_input_raises(bad: float, where: str) -> None:
    """NaN / inf anywhere, also on a class that is not the label (no effect on the loss value), is an error."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=2)
    channel = int(labels[0, 0, 1, 1, 1]) if where == "labelled" else (int(labels[0, 0, 1, 1, 1]) + 1) % 3
    x[0, channel, 1, 1, 1] = bad
    for name in LOSSES:  # the fused kernels' check is read with each loss's own (one synchronisation): every loss
        with _fused.use_fused_mode("eager"), pytest.raises(ValueError, match="input contains NaN/inf"):
            LOSSES[name](3)(**kwargs)(x, labels)


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_label_out_of_range_raises(bad: int) -> None:
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=4)
    labels[1, 0, 2, 2, 2] = bad
    low, high = min(bad, 0), max(bad, 2)
    for dtype in (torch.int64, torch.int32, torch.uint8 if bad >= 0 else torch.int16):
        with _fused.use_fused_mode("eager"), pytest.raises(ValueError, match=rf"got values in \[{low}, {high}\]"):
            MixedFocalLoss(**kwargs)(x, labels.to(dtype))
    for name in LOSSES:
        with _fused.use_fused_mode("eager"), pytest.raises(ValueError, match=rf"got values in \[{low}, {high}\]"):
            LOSSES[name](3)(**kwargs)(x, labels)


@pytest.mark.parametrize("name", ["dice", "focal", "mixed_focal", "combo_modified", "focal_alpha_g1"])
def test_float_labels_and_meta_tensors(name: str) -> None:
    """Class indices as float MetaTensors (what MONAI's transforms give) and MetaTensor logits: the values and
    gradients of plain int64 labels, on the fused path and on the plain one."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float64, seed=8)
    loss = LOSSES[name](3)(**kwargs)
    ref_value, ref_grad = value_and_grad(loss, x, labels, "off")
    for fused in ("eager", "off"):
        for dtype in (torch.float32, torch.float64):
            value, grad = value_and_grad(loss, MetaTensor(x), MetaTensor(labels.to(dtype)), fused)
            what = f"{name} / {fused} / {dtype} labels"
            assert_same(value.as_subclass(torch.Tensor), ref_value, 1e-10, f"{what}: value")
            assert_same(grad.as_subclass(torch.Tensor), ref_grad, 1e-10, f"{what}: gradient")


@pytest.mark.parametrize(
    ("bad", "message"),
    [(math.nan, "target contains NaN"), (0.5, "fractional values"), (3.0, r"got values in \[0, 3\]")],
)
def test_invalid_float_labels_raise(bad: float, message: str) -> None:
    """An invalid float label anywhere: the plain path's error on the fused path too."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=9)
    target = labels.float()
    target[1, 0, 3, 2, 4] = bad
    for fused in ("eager", "off"):
        with _fused.use_fused_mode(fused), pytest.raises(ValueError, match=message):
            MixedFocalLoss(**kwargs)(x, target)


def test_integer_label_dtypes_agree() -> None:
    """int64, int32 and uint8 class indices give the same loss on the fused path."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float64, seed=5)
    with _fused.use_fused_mode("eager"):
        values = [MixedFocalLoss(**kwargs)(x, labels.to(d)) for d in (torch.int64, torch.int32, torch.uint8)]
    assert values[0] == values[1] == values[2]


@pytest.mark.parametrize("name", ["dice", "focal_tversky", "focal", "cross_entropy", "combo", "mixed_focal"])
def test_one_host_read_per_call(name: str) -> None:
    """The fused path reads one value on the host per loss call (its input check together with the loss's
    finiteness): on a GPU each such read waits for the device."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=12)
    loss = LOSSES[name](3)(**kwargs)
    with _fused.use_fused_mode("eager"):
        loss(x, labels)
        with torch.profiler.profile() as profiler:
            loss(x, labels)
    reads = sum(e.count for e in profiler.key_averages() if e.key == "aten::_local_scalar_dense")
    assert reads == 1


def _fused_node(value: torch.Tensor) -> Any:
    """The autograd node of the fused statistics behind a loss value."""
    pending, seen = [value.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "FusedFunctionBackward":
            return node
        pending.extend(parent for parent, _ in node.next_functions)
    raise AssertionError("no fused statistics behind this loss value")


_SAVES_LSE = [("dice", False), ("focal_tversky", False), ("cross_entropy", False), ("combo", False)]


@pytest.mark.parametrize(("name", "saves_lse"), [*_SAVES_LSE, ("focal", True), ("mixed_focal", True)])
def test_log_sum_exp_saved_only_for_a_focal_term(name: str, saves_lse: bool) -> None:
    """Between the passes a softmax keeps one value per voxel (its log-sum-exp) only where the focal term's gradient
    needs ``log p``; region terms and the plain cross-entropy recompute the probabilities from the logits."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=13)
    leaf = x.clone().requires_grad_(True)
    with _fused.use_fused_mode("eager"):
        value = LOSSES[name](3)(**kwargs)(leaf, labels)
    lse = _fused_node(value).saved_tensors[-1]
    voxels = math.prod(SHAPE_3D[2:])
    assert lse.shape == ((SHAPE_3D[0], voxels) if saves_lse else (0,))


def _second_order_cases(name: str, leaf: torch.Tensor, labels: torch.Tensor, kwargs: dict) -> dict[str, Any]:
    """Ways of asking for the gradient's own graph: a gradient penalty, the same with ``loss.backward``, a Hessian."""
    loss = LOSSES[name](3)(**kwargs)

    def penalty() -> Any:
        (grad,) = torch.autograd.grad(loss(leaf, labels), leaf, create_graph=True)
        return grad.pow(2).sum()

    def backward() -> Any:
        return loss(leaf, labels).backward(create_graph=True)

    def hessian() -> Any:
        return torch.autograd.functional.hessian(lambda v: loss(v, labels), leaf.detach())

    return {"penalty": penalty, "backward": backward, "hessian": hessian}


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")
@pytest.mark.parametrize("how", ["penalty", "backward", "hessian"])
@pytest.mark.parametrize("name", ["cross_entropy", "focal", "dice", "mixed_focal"])
def test_second_derivative_raises(name: str, how: str) -> None:
    """The fused backward is not differentiable again: asking for the gradient's graph (``create_graph=True``) raises
    an error that names the plain path, for every loss, also where the loss's derivative with respect to the sums is
    constant (cross entropy, focal; PyTorch's ``once_differentiable`` then returned a gradient without history and a
    gradient penalty or a Hessian silently lost its second-order terms). The plain path gives the second derivative."""
    x, labels, kwargs = make_case("softmax-labels", (1, 3, 2, 3, 2), torch.float64, seed=6)
    leaf = x.clone().requires_grad_(True)
    with _fused.use_fused_mode("eager"), pytest.raises(RuntimeError, match=r"no second derivative.*FUSED=off"):
        _second_order_cases(name, leaf, labels, kwargs)[how]()
    with _fused.use_fused_mode("off"):
        result = _second_order_cases(name, leaf, labels, kwargs)[how]()
    if how == "penalty":
        (second,) = torch.autograd.grad(result, leaf)
        assert float(second.abs().max()) > 0.0
    with _fused.use_fused_mode("eager"):  # first derivatives are unaffected
        value = LOSSES[name](3)(**kwargs)(leaf, labels)
    (grad,) = torch.autograd.grad(value, leaf)
    assert torch.isfinite(grad).all()


def test_torch_func_transforms_take_the_plain_path() -> None:
    """``torch.func.grad`` (a functorch transform, which the fused autograd functions do not support) gives the plain
    path's gradient in every mode, instead of PyTorch's error about ``setup_context``."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float64, seed=8)
    loss = MixedFocalLoss(**kwargs)
    with _fused.use_fused_mode("off"):
        expected = torch.func.grad(lambda v: loss(v, labels))(x)
    with _fused.use_fused_mode("eager"):
        assert _statistics(x, labels) is not None
        torch.testing.assert_close(torch.func.grad(lambda v: loss(v, labels))(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["softmax-labels", "softmax-onehot"])
@pytest.mark.parametrize("name", ["dice", "cross_entropy", "mixed_focal", "combo"])
def test_logits_masked_with_the_smallest_float(name: str, mode: str) -> None:
    """Classes masked with ``torch.finfo(dtype).min`` (finite logits whose sum overflows) are valid input: the fused
    kernels' input guard does not overflow, and the values and gradients are the plain path's."""
    x, target, kwargs = make_case(mode, (2, 5, 3, 4, 5), torch.float32, seed=4)
    if mode == "softmax-labels":
        target = target.clamp_max(2)
    else:
        target = torch.cat([target[:, :3], torch.zeros_like(target[:, 3:])], 1)
        target[:, 2] = 1.0 - target[:, :2].sum(1)
    x[:, 3:] = torch.finfo(torch.float32).min
    loss = LOSSES[name](5)(**kwargs)
    ref_value, ref_grad = value_and_grad(loss, x, target, "off")
    value, grad = value_and_grad(loss, x, target, "eager")
    assert_same(value, ref_value, 1e-5, f"{name}: value")
    assert_same(grad, ref_grad, 1e-5, f"{name}: gradient")


def test_compile_switched_off_by_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where PyTorch's own switch turns ``torch.compile`` into a no-op (``TORCHDYNAMO_DISABLE=1``), "auto" takes the
    plain path and "compile" the chunked eager kernels, not the kernels uncompiled over the whole volume."""
    x, labels, _ = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=0)
    monkeypatch.setattr(_fused_mode, "AUTO_MIN_ELEMENTS", 0)
    with _fused.use_fused_mode("auto"):
        assert _fused.fused_inputs(x, labels, **_INPUT_OPTIONS, region=True).compiled
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")
    assert _fused.compiler_disabled()
    with _fused.use_fused_mode("auto"):
        assert _fused.fused_inputs(x, labels, **_INPUT_OPTIONS, region=True) is None
    with _fused.use_fused_mode("compile"):
        inputs = _fused.fused_inputs(x, labels, **_INPUT_OPTIONS, region=True)
    assert inputs is not None and not inputs.compiled


def _stand_in_compiler(monkeypatch: pytest.MonkeyPatch, fail: str | None, whole: bool) -> None:
    """Replace ``torch.compile`` of the kernels (``CompiledKernels`` of the statistics path and of the whole loss) by
    the same functions run uncompiled, the ``fail`` one ("forward" or "backward") raising as a failed compilation
    does; "auto" takes the compiled path at every size, the whole loss only ``whole``."""

    def compiler_error(*args: Any) -> Any:
        raise RuntimeError("no C++ compiler (test)")

    class StandIn:
        def __init__(self, tag: int, forward: Any = None, backward: Any = None) -> None:
            forward = forward or (
                lambda *args: _fused_runner.fused_forward(*args)
            )  # looked up at the call (patched below)
            backward = backward or (lambda *args: _fused_runner.fused_backward(*args))
            self.kernels = (
                compiler_error if fail == "forward" else forward,
                compiler_error if fail == "backward" else backward,
            )

        def pick(self, x: torch.Tensor, target: torch.Tensor) -> tuple[Any, Any]:
            return self.kernels

    monkeypatch.setattr(_fused_runner, "_compiled", {})  # no kernels cached by earlier tests
    monkeypatch.setattr(_fused_runner, "CompiledKernels", StandIn)
    monkeypatch.setattr(_fused_loss, "CompiledKernels", StandIn)
    monkeypatch.setattr(_fused_mode, "AUTO_MIN_ELEMENTS", 0)
    if not whole:
        monkeypatch.setattr(_fused_loss, "MAX_COMPILED_LOSSES", 0)


def _compile_reports(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, RuntimeWarning) and "torch.compile failed" in str(w.message)]


@pytest.mark.parametrize("mode", ["auto", "compile"])
@pytest.mark.parametrize("fail", ["forward", "backward"])
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "statistics"])
def test_compile_failure_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, mode: str, fail: str, whole: bool
) -> None:
    """A compiled kernel that fails where the eager one runs (a compiler problem: no C++ compiler, no Triton) gives
    the right value and gradient from the eager kernels, one ``RuntimeWarning`` naming the error (in "auto" too, at
    the caller's line), and no compilation for the rest of the process."""
    _stand_in_compiler(monkeypatch, fail, whole)
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float64, seed=14)
    loss = MixedFocalLoss(**kwargs)
    ref_value, ref_grad = value_and_grad(loss, x, labels, "off")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grad = value_and_grad(loss, x, labels, mode)
        again, again_grad = value_and_grad(loss, x, labels, mode)  # the eager kernels / the plain path, unreported
    (report,) = _compile_reports(caught)
    assert f"{_fused.ENV_VAR}={mode}: " in str(report.message)
    assert "(RuntimeError: no C++ compiler (test))" in str(report.message)
    assert Path(report.filename).parent == Path(__file__).parent  # the caller's line (in fused_cases.py)
    assert _fused.compile_unavailable_reason() == "RuntimeError: no C++ compiler (test)"
    for what, (v, g) in {"fallback": (value, grad), "after": (again, again_grad)}.items():
        assert_same(v, ref_value, 1e-10, f"{what}: value")
        assert_same(g, ref_grad, 1e-10, f"{what}: gradient")


@pytest.mark.parametrize("fail", ["forward", "backward"])
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "statistics"])
def test_kernel_error_propagates(monkeypatch: pytest.MonkeyPatch, fail: str, whole: bool) -> None:
    """An error that the eager kernels raise too is a bug, not a compiler problem: it propagates, unreported as a
    failed compilation, and the compiled path stays on."""
    _stand_in_compiler(monkeypatch, None, whole)

    def bug(*args: Any) -> Any:
        raise IndexError("a bug in the kernels (test)")

    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float64, seed=15)
    loss = MixedFocalLoss(**kwargs)
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if fail == "forward":  # under the forward kernel, compiled or eager
            patch.setattr(_kernels, "forward_sums", bug)
        else:  # the backward kernel, in both modules that call it
            patch.setattr(_fused_runner, "fused_backward", bug)
            patch.setattr(_fused_loss, "fused_backward", bug)
        with pytest.raises(IndexError, match="a bug in the kernels"):
            value_and_grad(loss, x, labels, "auto")
    assert not _compile_reports(caught)
    assert _fused.compile_unavailable_reason() is None
    ref_value, ref_grad = value_and_grad(loss, x, labels, "off")
    value, grad = value_and_grad(loss, x, labels, "auto")  # the bug gone: the "compiled" kernels run
    assert_same(value, ref_value, 1e-10, "value")
    assert_same(grad, ref_grad, 1e-10, "gradient")
    assert _fused.compile_unavailable_reason() is None


def test_own_code_keeps_defaults_and_closure() -> None:
    """The copy of a kernel with its own code object (one ``torch.compile`` cache per spec) keeps the function's
    defaults, keyword-only defaults and closure."""
    offset = 100

    def kernel(x: int, y: int = 20, *, z: int = 3) -> int:
        return x + y + z + offset

    copy = _own_code(kernel, 7)
    assert copy.__code__ is not kernel.__code__ and copy.__name__ == "kernel_7"
    assert (copy.__defaults__, copy.__kwdefaults__, copy.__closure__) == ((20,), {"z": 3}, kernel.__closure__)
    assert copy(1) == kernel(1) == 124
    assert copy(1, 2, z=4) == kernel(1, 2, z=4) == 107


@pytest.mark.slow
def test_compiled_kernels_equal_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile of the kernels (one spec per loss: static shapes for the first shape, dynamic shapes for every
    other) gives the plain path's values; a third shape compiles nothing more. The statistics path, which losses take
    past ``MAX_COMPILED_LOSSES`` whole-compiled instances (``tests/test_losses_whole_compiled.py``), shares its kernels
    between instances."""
    monkeypatch.setattr(_fused_loss, "MAX_COMPILED_LOSSES", 0)
    for name in ("mixed_focal", "dice"):
        for shape in ((2, 3, 17, 16, 15), (2, 3, 9, 20, 8)):
            _compare(name, "softmax-labels", {"include_background": False}, shape, torch.float32, "compile")
    graphs = counters["stats"]["unique_graphs"]
    third = (2, 3, 11, 12, 13)
    _compare("mixed_focal", "softmax-labels", {"include_background": False}, third, torch.float32, "compile")
    assert counters["stats"]["unique_graphs"] == graphs, "a third shape compiled the kernels again"
    # float labels and MetaTensors, as in a bundle
    x, labels, kwargs = make_case("softmax-labels", (2, 3, 17, 16, 15), torch.float32, seed=10)
    loss = MixedFocalLoss(**kwargs)
    ref_value, ref_grad = value_and_grad(loss, x, labels, "off")
    value, grad = value_and_grad(loss, MetaTensor(x), MetaTensor(labels.float()), "compile")
    assert_same(value.as_subclass(torch.Tensor), ref_value, 1e-5, "MetaTensor value")
    assert_same(grad.as_subclass(torch.Tensor), ref_grad, 1e-5, "MetaTensor gradient")
    # uint8 class indices go into the kernels as they are; the compiled kernels still find bad inputs and labels
    value, grad = value_and_grad(loss, x, labels.to(torch.uint8), "compile")
    assert_same(value, ref_value, 1e-5, "uint8 labels value")
    assert_same(grad, ref_grad, 1e-5, "uint8 labels gradient")
    for channel in range(3):
        bad = x.clone()
        bad[1, channel, 4, 5, 6] = math.nan
        with _fused.use_fused_mode("compile"), pytest.raises(ValueError, match="input contains NaN/inf"):
            loss(bad, labels)
    wrong = labels.to(torch.uint8)
    wrong[0, 0, 3, 3, 3] = 3
    with _fused.use_fused_mode("compile"), pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
        loss(x, wrong)
    assert _fused.compile_unavailable_reason() is None


GPU = "cuda"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _compare_on_cuda(name: str, mode: str, fused: str) -> None:
    """The loss on the GPU against the plain path on the CPU in float64: to 1e-10 in float64 and 1e-5 in float32
    (a volume of two chunks for the float32 case)."""
    for dtype, shape, tol in ((torch.float64, SHAPE_3D, 1e-10), (torch.float32, (2, 3, 40, 48, 41), 1e-5)):
        x, target, kwargs = make_case(mode, shape, dtype, seed=len(name) + len(mode))
        loss = LOSSES[name](2)(**kwargs, include_background=False)
        ref_target = target.double() if target.is_floating_point() else target
        ref_value, ref_grad = value_and_grad(loss, x.double(), ref_target, "off")
        value, grad = value_and_grad(loss, x.to(GPU), target.to(GPU), fused)
        what = f"{name} / {mode} / {dtype} / {fused} on cuda"
        assert_same(value.cpu().double(), ref_value, tol, f"{what}: value")
        assert_same(grad.cpu().double(), ref_grad, tol, f"{what}: gradient")


@CUDA
@pytest.mark.parametrize("fused", ["eager", "off"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_cuda_equals_cpu_plain(name: str, fused: str) -> None:
    """Every loss and input form on the GPU, eager kernels and plain path."""
    for mode in MODES:
        _compare_on_cuda(name, mode, fused)


@CUDA
@pytest.mark.parametrize("mode", ["softmax-labels", "sigmoid-onehot", "probabilities-labels"])
@pytest.mark.parametrize("name", ["mixed_focal", "dice", "focal_alpha_g1", "combo_modified"])
def test_cuda_compiled_equals_cpu_plain(name: str, mode: str) -> None:
    """The compiled (Triton) kernels on the GPU."""
    _compare_on_cuda(name, mode, "compile")
    assert _fused.compile_unavailable_reason() is None


@CUDA
@pytest.mark.parametrize("fused", ["auto", "off"])
@pytest.mark.parametrize("name", ["mixed_focal", "combo", "focal_tversky", "focal", "dice"])
def test_cuda_autocast_float16(name: str, fused: str) -> None:
    """float16 logits from a network under CUDA autocast: a float32 loss equal to the float64 one (1e-4), a finite
    float16 gradient equal to float16 precision; "auto" compiles at this size. As in AMP training, the loss is scaled
    before the backward pass (``torch.amp.GradScaler``'s initial scale, 2**16): unscaled, the per-voxel gradients of a
    mean over a million voxels (~1e-7) are float16 subnormals, exact only to 6e-8 on either path."""
    x, target, kwargs = make_case("softmax-labels", (2, 3, 64, 64, 48), torch.float32, seed=11)
    x = x.clamp(-20, 20)
    loss = LOSSES[name](3)(**kwargs)
    ref_value, ref_grad = value_and_grad(loss, x.half().double(), target, "off")
    leaf = x.half().to(GPU).requires_grad_(True)
    with torch.autocast(GPU, dtype=torch.float16), _fused.use_fused_mode(fused):
        value = loss(leaf, target.to(GPU))
    assert value.dtype == torch.float32
    grad_scale = 2.0**16
    (value * grad_scale).backward()
    assert leaf.grad is not None and leaf.grad.dtype == torch.float16
    assert_same(value.detach().cpu().double(), ref_value, 1e-4, f"{name} value")
    assert_same(leaf.grad.cpu().double() / grad_scale, ref_grad, 2e-3, f"{name} gradient")


def test_benchmark_script_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m benchmarks.losses`` on a tiny patch: a table with one row per loss, written atomically."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv(_fused.ENV_VAR, "eager")
    from benchmarks import losses as bench

    out = tmp_path / "table.md"
    args = ["--shape", "1", "2", "6", "6", "6", "--repeats", "1", "--warmup", "1", "--threads", "1"]
    assert bench.main([*args, "--losses", "dice", "mixed_focal", "--markdown", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| custom")]
    assert [row.split("|")[3].strip() for row in rows] == ["dice", "mixed_focal"]


def test_profile_script_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.profile_step`` on a tiny patch: a summary per variant, one host read per fused call."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv(_fused.ENV_VAR, "eager")
    from benchmarks import profile_step

    args = ["--device", "cpu", "--shape", "1", "3", "6", "6", "6", "--steps", "2", "--rows", "3"]
    assert profile_step.main([*args, "--losses", "mixed_focal"]) == 0
    summaries = [line for line in capsys.readouterr().out.splitlines() if line.startswith("per step:")]
    assert len(summaries) == 3  # ours, plain, MONAI
    assert summaries[0].endswith(", 1 scalar reads / syncs")
