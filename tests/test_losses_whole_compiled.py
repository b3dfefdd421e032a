# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The whole loss compiled (``monai_mixedfocal.losses._fused_loss``) against the plain autograd path.

Where the fused kernels are compiled, a scalar loss runs as one compiled call forward (the kernels' sums, the loss's
arithmetic on them and its derivatives with respect to them) and one backward. The quick tests run the same functions
without compiling them (a stand-in for ``torch.compile`` that returns the function itself), so that the path's
autograd, saved tensors, gradient scaling, fallbacks and checks are tested in seconds; the ``slow`` test compiles.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from fused_cases import LOSSES, OPTIONS, ROOT, SHAPE_3D, assert_same, make_case, value_and_grad
from monai.data import MetaTensor
from torch._dynamo.utils import counters

from monai_mixedfocal.losses import ClassWeightedLoss, MixedFocalLoss, _fused, _fused_loss

STUDY = ["dice", "tversky", "focal_tversky", "cosine_tversky_g25", "cross_entropy", "focal", "combo", "mixed_focal"]


class _Uncompiled:
    """Stands in for ``CompiledKernels``: the same functions, run without ``torch.compile``."""

    def __init__(self, tag: int, forward: Any, backward: Any) -> None:
        self.kernels = (forward, backward)

    def pick(self, x: torch.Tensor, target: torch.Tensor) -> tuple[Any, Any]:
        return self.kernels


class _Failing(_Uncompiled):
    """Stands in for kernels whose compilation fails (at the first forward, or only at the first backward)."""

    def __init__(self, tag: int, forward: Any, backward: Any, at_backward: bool = False) -> None:
        def fail(*args: Any) -> Any:
            raise RuntimeError("no C++ compiler (test)")

        super().__init__(tag, forward if at_backward else fail, fail)


@pytest.fixture
def uncompiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused_loss, "CompiledKernels", _Uncompiled)


def _whole_node(value: torch.Tensor) -> Any:
    """The autograd node of ``value`` if it is the whole loss's, else ``None``."""
    node = value.grad_fn
    return node if type(node).__name__ == "_FusedLossFunctionBackward" else None


def _check(
    name: str,
    mode: str,
    options: dict,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
    shape: tuple[int, ...] = SHAPE_3D,
) -> Any:
    """The whole path's value and gradient (of ``scale * loss``) against the plain path; returns the loss value."""
    x, target, kwargs = make_case(mode, shape, dtype, seed=len(name) + 3)
    num_kept = shape[1] - (0 if options.get("include_background", True) else 1)
    loss = LOSSES[name](num_kept)(**kwargs, **options)
    ref_value, ref_grad = value_and_grad(loss, x, target, "off")
    leaf = x.clone().requires_grad_(True)
    with _fused.use_fused_mode("compile"):
        value = loss(leaf, target)
    (scale * value).sum().backward()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    what = f"{name} / {mode} / {options}"
    assert_same(value.detach(), ref_value, tol, f"{what}: value")
    assert_same(leaf.grad / scale, ref_grad, tol, f"{what}: gradient")
    return value


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("name", [*STUDY, "focal_alpha_g3", "combo_modified", "mixed_focal_eq23"])
def test_whole_loss_equals_plain(uncompiled: None, name: str, options: dict) -> None:
    """Every study loss (and per-class alpha, beta, the modified Combo, Eq. 23) as one autograd node whose backward
    takes the derivatives saved by the forward pass, equal to the plain path in float64; the gradient of a scaled
    loss is scaled."""
    value = _check(name, "softmax-labels", options, scale=3.0)
    assert _whole_node(value) is not None, "the loss is not one node"


@pytest.mark.parametrize("mode", ["softmax-onehot", "sigmoid-onehot", "probabilities-labels", "other_act-labels"])
@pytest.mark.parametrize("name", ["dice", "focal_tversky", "focal_beta_g05", "combo_modified", "mixed_focal"])
def test_whole_loss_input_forms(uncompiled: None, name: str, mode: str) -> None:
    """The other input forms the kernels cover: dense targets, sigmoid, probabilities (clipped), other_act."""
    assert _whole_node(_check(name, mode, {"include_background": False})) is not None


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "mixed_focal"])
def test_whole_loss_has_no_second_derivative(uncompiled: None, name: str) -> None:
    """The whole loss's backward receives the constant gradient of the loss (``loss.backward``), with which
    ``once_differentiable`` did not mark its gradient: a gradient penalty silently lost its second-order term. Asking
    for the gradient's graph now raises, naming the plain path."""
    x, target, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float64, seed=2)
    leaf = x.clone().requires_grad_(True)
    with _fused.use_fused_mode("compile"):
        value = LOSSES[name](3)(**kwargs)(leaf, target)
    assert _whole_node(value) is not None
    with pytest.raises(RuntimeError, match=r"no second derivative.*FUSED=off"):
        torch.autograd.grad(value, leaf, create_graph=True)
    (grad,) = torch.autograd.grad(value, leaf)  # the first derivative, as before
    assert torch.isfinite(grad).all()


def test_whole_loss_saves_the_derivatives_and_reads_once(uncompiled: None) -> None:
    """Between the passes the whole loss keeps the input, the target, the log-sum-exp (focal terms only) and three
    small derivative tensors; a step reads one value on the host and makes no zero tensors for the checks'
    gradients."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=5)
    leaf = x.clone().requires_grad_(True)
    with _fused.use_fused_mode("compile"):
        for name, saves_lse in (("dice", False), ("mixed_focal", True)):
            loss = LOSSES[name](3)(**kwargs)
            value = loss(leaf, labels)
            saved = _whole_node(value).saved_tensors
            assert [tuple(t.shape) for t in saved[5:]] == [(2, 3), (2, 3), (2,)]
            assert saved[4].numel() == (2 * math.prod(SHAPE_3D[2:]) if saves_lse else 0)
            with torch.profiler.profile() as profiler:
                loss(leaf, labels).backward()
            counts = {e.key: e.count for e in profiler.key_averages()}
            assert counts["aten::_local_scalar_dense"] == 1
            assert "aten::zeros" not in counts, "zero gradients made for the checks (a kernel launch each on a GPU)"


def test_reduction_none_and_the_cap_use_the_statistics(uncompiled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-class loss (``reduction="none"``) and losses past :data:`MAX_COMPILED_LOSSES` take the statistics path
    (kernels, then the loss's arithmetic in eager mode), with the same values."""
    none = _check("focal_tversky", "softmax-labels", {"reduction": "none"})
    assert _whole_node(none) is None and none.shape == (2, 3, 1, 1, 1)
    assert not _fused_loss._compiled_losses
    monkeypatch.setattr(_fused_loss, "MAX_COMPILED_LOSSES", 1)
    assert _whole_node(_check("dice", "softmax-labels", {})) is not None
    assert _whole_node(_check("mixed_focal", "softmax-labels", {})) is None
    assert len(_fused_loss._compiled_losses) == 1
    assert _fused_loss.release_compiled_losses() == 1 and not _fused_loss._compiled_losses
    assert _whole_node(_check("mixed_focal", "softmax-labels", {})) is not None  # room again after the release


@pytest.mark.parametrize("at_backward", [False, True])
def test_failed_compilation_falls_back(monkeypatch: pytest.MonkeyPatch, at_backward: bool) -> None:
    """A compilation that fails (forward, or only backward) is reported in "compile" mode and the loss is still right:
    the eager kernels (on chunks of voxels: a volume of two here) take over for good."""
    monkeypatch.setattr(_fused_loss, "CompiledKernels", lambda *a: _Failing(*a, at_backward=at_backward))
    two_chunks = (1, 3, 41, 40, 41)
    assert math.prod(two_chunks[2:]) > _fused.CHUNK_VOXELS
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        _check("mixed_focal", "softmax-labels", {"include_background": False}, scale=3.0, shape=two_chunks)
    assert "no C++ compiler" in _fused.compile_unavailable_reason()
    assert _whole_node(_check("combo", "softmax-labels", {})) is None  # the statistics from now on


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_invalid_inputs_raise(uncompiled: None, bad: float) -> None:
    """NaN / inf logits and invalid class indices raise the plain path's errors, found by the whole loss's check."""
    x, labels, kwargs = make_case("softmax-labels", SHAPE_3D, torch.float32, seed=7)
    loss = MixedFocalLoss(**kwargs)
    wrong = x.clone()
    wrong[1, 2, 3, 2, 1] = bad
    with _fused.use_fused_mode("compile"):
        with pytest.raises(ValueError, match="input contains NaN/inf"):
            loss(wrong, labels)
        labels = labels.clone()
        labels[0, 0, 1, 1, 1] = 3
        with pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
            loss(x, labels)


@pytest.mark.slow
def test_compiled_whole_loss() -> None:
    """``torch.compile`` of the whole loss: the plain path's values for the study losses; one instance compiles once
    for its first shape and once for all others; running class weights (a new per-class ``alpha`` every step) compile
    nothing more; bad inputs still raise; MetaTensors and float labels as a bundle gives them; a changed
    configuration gives its new value."""
    for name in STUDY:
        _check(name, "softmax-labels", {"include_background": False}, dtype=torch.float32)
    loss = MixedFocalLoss(softmax=True, to_onehot_y=True)
    shapes = ((2, 3, 9, 10, 11), (2, 3, 7, 12, 8), (2, 3, 11, 6, 9))
    for index, shape in enumerate(shapes):
        x, labels, _ = make_case("softmax-labels", shape, torch.float32, seed=index)
        ref_value, ref_grad = value_and_grad(loss, x, labels, "off")
        value, grad = value_and_grad(loss, MetaTensor(x), MetaTensor(labels.float()), "compile")
        assert_same(value.as_subclass(torch.Tensor), ref_value, 1e-5, f"{shape}: value")
        assert_same(grad.as_subclass(torch.Tensor), ref_grad, 1e-5, f"{shape}: gradient")
        if index == 1:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs, "a third shape compiled the loss again"
    weighted = ClassWeightedLoss(MixedFocalLoss(softmax=True, to_onehot_y=True), "running")
    x, labels, _ = make_case("softmax-labels", shapes[0], torch.float32, seed=9)
    with _fused.use_fused_mode("compile"):
        weighted(x.clone().requires_grad_(True), labels).backward()
        graphs = counters["stats"]["unique_graphs"]
        for _ in range(3):
            weighted(x.clone().requires_grad_(True), labels).backward()
        assert counters["stats"]["unique_graphs"] == graphs, "new class weights compiled the loss again"
        bad = x.clone()
        bad[0, 1, 2, 3, 4] = math.nan
        with pytest.raises(ValueError, match="input contains NaN/inf"):
            loss(bad, labels)
    # an attribute that the loss's arithmetic reads, changed after compilation: compiled again (Dynamo's guards)
    for lambda_focal, delta in ((0.3, 0.7), (0.3, 0.4)):
        loss.lambda_focal, loss.focal_tversky.delta = lambda_focal, delta
        ref_value, ref_grad = value_and_grad(loss, x, labels, "off")
        value, grad = value_and_grad(loss, x, labels, "compile")
        assert_same(value, ref_value, 1e-5, f"lambda_focal={lambda_focal}, delta={delta}: value")
        assert_same(grad, ref_grad, 1e-5, f"lambda_focal={lambda_focal}, delta={delta}: gradient")
    assert _fused.compile_unavailable_reason() is None


@pytest.mark.slow
def test_whole_loss_script_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.whole_loss`` on a tiny input: a row per loss, the whole loss dispatching fewer ATen
    operations per step than its statistics path; the cap on compiled losses restored after."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import whole_loss

    args = ["--device", "cpu", "--shape", "1", "3", "6", "6", "6", "--repeats", "1", "--warmup", "1", "--threads", "1"]
    assert whole_loss.main([*args, "--losses", "dice"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| dice"))
    whole, stats, monai = (int(cell) for cell in row.strip("| ").split("|")[-3:])
    assert whole < stats and monai > 0
    assert _fused_loss.MAX_COMPILED_LOSSES == 8
