# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The loss study of Yeung et al. made repeatable: losses x folds through the bundles, then the statistics report.

:func:`run_study` writes one fold assignment (``datalist.json``) shared by every loss, runs (or resumes) one bundle run
per (loss, fold), collects the per-case metrics into ``per_case.csv`` and writes the report (``report.md`` with Table 1
and Table 2, CSV, LaTeX and PNG figures) into the output folder.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai_mixedfocal.bundle.config_ids import unknown_id_hint
from monai_mixedfocal.data import brats20_datalist, kits19_datalist, read_datalist, write_datalist
from monai_mixedfocal.data.datalist import dataset_root_entry, first_missing_file, recorded_root, source_files
from monai_mixedfocal.data.kits19 import data_set_folder
from monai_mixedfocal.losses import LOSS_NAMES
from monai_mixedfocal.report import write_report
from monai_mixedfocal.study.collect import collect_per_case, overlay_slices
from monai_mixedfocal.study.runner import StudyProgress, execute_runs
from monai_mixedfocal.study.runs import Run, default_bundle_dir, plan_runs
from monai_mixedfocal.utils import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

#: the paper's seven losses, in the order of its Table 1 (KiTS19; Section III-D: no plain cross entropy)
PAPER_LOSSES: tuple[str, ...] = (
    "focal",
    "dice",
    "tversky",
    "cosine_tversky",
    "focal_tversky",
    "combo",
    "mixed_focal",
)
#: the losses the paper evaluates on BraTS20: its top three on KiTS19 (Section IV-A2, Table 3)
PAPER_BRATS20_LOSSES: tuple[str, ...] = ("focal_tversky", "combo", "mixed_focal")
_DATALISTS: dict[str, Callable[..., Any]] = {"kits19": kits19_datalist, "brats20": brats20_datalist}
_CLASS_NAMES: dict[str, list[str]] = {"kits19": ["kidney", "tumor"], "brats20": ["enhancing tumor"]}
#: the ids (and ``monai.bundle run`` options) that the study sets for each run itself, with what to use instead of
#: ``-O``: an override of one of them would silently change every run (e.g. ``-O loss=focal`` trains every "loss" with
#: the focal loss, while the report still names them apart)
RESERVED_OVERRIDES: dict[str, str] = {
    "loss": "use --losses",
    "fold": "use --only-folds",
    "num_folds": "use --folds",
    "dataset_dir": "use --data",
    "datalist": "the study writes OUT/datalist.json",
    "bundle_root": "each run's folder is OUT/runs/<loss>/fold_<k>",
    "save_predictions": "the evaluation always saves them, for the report's overlays",
    "run_id": "the study runs training, then evaluation",
    "meta_file": "use --bundle",
    "config_file": "use --bundle",
    "logging_file": "use --bundle",
}
#: the bundle configs whose ids an override may name: the training's, and the evaluation's on top of it
_OVERRIDE_CONFIGS: tuple[str, ...] = ("train.json", "evaluate.json")


def paper_losses(dataset: str) -> list[str]:
    """The losses the paper compares on ``dataset``: the seven on KiTS19, the top three of KiTS19 on BraTS20.

    The number of losses sets the number of pairs that the Holm-Bonferroni correction covers (21 or 3), hence the
    adjusted p-values: running all seven on BraTS20 gives larger p-values than the paper's Table 4.
    """
    return list(PAPER_BRATS20_LOSSES if dataset == "brats20" else PAPER_LOSSES)


def _repeated(values: Sequence[Any]) -> list[Any]:
    """The values given more than once, sorted."""
    return sorted(value for value, count in Counter(values).items() if count > 1)


def parse_losses(losses: str | Sequence[str]) -> list[str]:
    """``"all"`` (the paper's seven), ``"every"`` (the whole registry), or names separated by commas."""
    names = losses.split(",") if isinstance(losses, str) else list(losses)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(PAPER_LOSSES)
    if names == ["every"]:
        return list(LOSS_NAMES)
    if not names:
        raise ValueError(f"no loss named in {losses!r}; use 'all', 'every' or names from: {', '.join(LOSS_NAMES)}.")
    unknown = [n for n in names if n not in LOSS_NAMES]
    if unknown:
        raise ValueError(f"unknown loss name(s) {unknown}; use 'all', 'every' or names from: {', '.join(LOSS_NAMES)}.")
    repeated = _repeated(names)
    if repeated:
        raise ValueError(f"loss name(s) {repeated} given more than once in {losses!r}: name each loss once.")
    return names


def check_overrides(bundle_dir: Path, overrides: Mapping[str, Any]) -> None:
    """Refuse the overrides that the study sets itself (:data:`RESERVED_OVERRIDES`) and those that name no id of the
    bundle's ``configs/train.json`` or ``configs/evaluate.json`` (a typo such as ``epoch`` would otherwise add an unused
    id, and every run would train with the bundle's own value).

    Args:
        bundle_dir: the bundle folder.
        overrides: the study's overrides, ``{id: value}``; nested ids are joined with ``#`` (or ``::``).

    Raises:
        ValueError: naming the first bad id, with the reserved ids or the closest existing ones; or a value that the
            bundle's check of option values refuses (:func:`_check_override_values`).
    """
    if not overrides:
        return
    for key in overrides:
        root = str(key).replace("::", "#").split("#", 1)[0].strip()
        if root in RESERVED_OVERRIDES:
            raise ValueError(
                f"-O {key} is set by the study ({RESERVED_OVERRIDES[root]}); reserved ids: "
                f"{', '.join(RESERVED_OVERRIDES)}."
            )
    from monai.bundle import ConfigParser

    configs = [bundle_dir / "configs" / name for name in _OVERRIDE_CONFIGS]
    configs = [path for path in configs if path.is_file()]
    parser = ConfigParser()
    try:
        parser.read_config([str(path) for path in configs])
    except ValueError as err:  # a JSON error
        raise ValueError(f"cannot read the bundle's configs {', '.join(map(str, configs))}: {err}") from err
    for key in overrides:
        hint = unknown_id_hint(parser, str(key), RESERVED_OVERRIDES)
        if hint is not None:
            where = f"{bundle_dir / 'configs'}/{' or '.join(path.name for path in configs)}"
            raise ValueError(
                f"-O {key}: no such id in {where}{hint}; an override must name an id of the bundle's configs."
            )
    _check_override_values(parser, overrides)


def _check_override_values(parser: ConfigParser, overrides: Mapping[str, Any]) -> None:
    """Run the bundle's checks of option values (its ``check_options`` id: values alone, not the machine, the data or
    the outputs) with ``overrides``, as every run's start would, so that a bad value is refused once, before any run
    or printed command, instead of failing every run (or cluster job) at its start.

    Raises:
        ValueError: the bundle's own message (``--learning_rate must be a number > 0, got -1.``).
    """
    if "check_options" not in parser:
        return  # a bundle without the id: its runs check their values at start
    parser.update(dict(overrides))
    try:
        parser.get_parsed_content("check_options")
    except Exception as err:  # MONAI wraps the check's error in "Failed to evaluate ...", once per reference
        cause: BaseException = err
        while str(cause).startswith("Failed to evaluate") and cause.__cause__ is not None:
            cause = cause.__cause__
        raise ValueError(f"-O: {cause} (the bundle's check of option values, before any run)") from err


@dataclass
class StudySpec:
    """What to run.

    Attributes:
        dataset: ``"kits19"`` or ``"brats20"`` (the bundle and the datalist reader).
        data_root: the data set folder in its real layout.
        out_dir: the study folder (``datalist.json``, ``runs/``, ``per_case.csv`` and the report).
        losses: loss names.
        num_folds: folds of the cross-validation.
        folds: the validation folds to run (default: all).
        seed: seed of the fold assignment.
        bundle_dir: the bundle (default: the shipped one of ``dataset``, see :mod:`~monai_mixedfocal.shipped_bundles`).
        overrides: bundle overrides for every run (e.g. ``{"epochs": 100}``): ids of the bundle's ``configs/train.json``
            or ``configs/evaluate.json``, but none of :data:`RESERVED_OVERRIDES`, which the study sets itself.
        test: ``"ranksum"`` (the paper's) or ``"signedrank"``.
        ci_over: Table 1's intervals over the ``"cases"`` or over the per-fold means, ``"folds"``
            (:func:`~monai_mixedfocal.stats.summary_table`).
    """

    dataset: str
    data_root: Path
    out_dir: Path
    losses: list[str]
    num_folds: int = 5
    folds: list[int] | None = None
    seed: int = 0
    bundle_dir: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    test: str = "ranksum"
    ci_over: str = "cases"

    def __post_init__(self) -> None:
        if self.dataset not in _DATALISTS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(_DATALISTS)}.")
        if self.num_folds < 2:
            raise ValueError(f"--folds must be at least 2; got {self.num_folds}.")
        bad = [k for k in self.folds or [] if not 0 <= k < self.num_folds]
        if bad:
            raise ValueError(f"fold(s) {bad} out of range for {self.num_folds} folds (0..{self.num_folds - 1}).")
        repeated = _repeated(self.folds or [])
        if repeated:  # each run would be listed, run and collected twice
            raise ValueError(f"fold(s) {repeated} given more than once in --only-folds.")
        self.data_root, self.out_dir = Path(self.data_root), Path(self.out_dir)
        # absolute (a link kept as such): the printed commands and settings.json name it, run or read elsewhere
        bundle = os.path.abspath(self.bundle_dir) if self.bundle_dir else default_bundle_dir(self.dataset)
        self.bundle_dir = Path(bundle)
        if not (self.bundle_dir / "configs" / "train.json").is_file():
            raise ValueError(f"{self.bundle_dir} is not a bundle (no configs/train.json); pass --bundle DIR.")
        check_overrides(self.bundle_dir, self.overrides)

    @property
    def datalist_path(self) -> Path:
        return self.out_dir / "datalist.json"

    def runs(self) -> list[Run]:
        """The study's runs, with the overrides that point each at the shared data and fold assignment.

        Raises:
            ValueError: if :attr:`overrides`, changed since the spec was made, holds a bad id (see
                :func:`check_overrides`).
        """
        check_overrides(self.bundle_dir, self.overrides)  # type: ignore[arg-type]  # set by __post_init__
        overrides = {
            "dataset_dir": str(self.data_root.resolve()),
            "datalist": str(self.datalist_path.resolve()),
            "num_folds": self.num_folds,
            **self.overrides,
        }
        folds = self.folds if self.folds is not None else list(range(self.num_folds))
        return plan_runs(self.losses, folds, self.out_dir.resolve() / "runs", self.bundle_dir, overrides)

    def reported_runs(self) -> list[Run]:
        """The runs of every fold, whatever :attr:`folds` (which chooses the runs to run): those the report covers."""
        return replace(self, folds=None).runs()


def prepare_datalist(spec: StudySpec) -> Path:
    """Write the shared fold assignment once; an existing one is reused (so every loss keeps the same folds), its
    paths written again for a study folder that was moved or copied (:func:`follow_the_data`).

    Raises:
        ValueError: if an existing ``datalist.json`` was made with another number of folds or seed, or for another
            data set folder (see :func:`check_datalist`).
    """
    if check_datalist(spec):
        follow_the_data(spec)
        return spec.datalist_path
    kwargs = {"labels_dir": spec.out_dir / "labels_et"} if spec.dataset == "brats20" else {}
    datalist = _DATALISTS[spec.dataset](spec.data_root, **kwargs)
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    write_datalist(spec.datalist_path, datalist, num_folds=spec.num_folds, seed=spec.seed)
    return spec.datalist_path


def check_datalist(spec: StudySpec) -> bool:
    """Whether the study folder holds its fold assignment (``datalist.json``), checked against ``spec``.

    A study folder moved or copied away from its data set (``datalist.json`` records the data set's root relative to
    itself, which then holds none of its cases) is accepted when ``--data`` holds every case it lists.

    Raises:
        ValueError: if ``datalist.json`` was made with another number of folds or seed, or lists another data set
            folder: the study folder's runs were made on other folds or data (use another ``--out`` folder); or its
            recorded root holds none of its cases and ``--data`` not all of them.
    """
    if not spec.datalist_path.is_file():
        return False
    content = read_datalist(spec.datalist_path)
    if content.get("num_folds") != spec.num_folds or content.get("seed") != spec.seed:
        raise ValueError(
            f"{spec.datalist_path} holds a {content.get('num_folds')}-fold assignment with seed "
            f"{content.get('seed')}, not {spec.num_folds} folds with seed {spec.seed}: use another --out folder."
        )
    if _moved_data_root(spec, content) is not None:
        return True
    recorded = recorded_root(spec.datalist_path, content)
    if data_set_folder(spec.dataset, recorded) == data_set_folder(spec.dataset, spec.data_root):
        return True
    missing = first_missing_file(content["training"], os.path.abspath(spec.data_root))
    if missing is not None and first_missing_file(content["training"][:1], recorded) is not None:
        raise ValueError(
            f"{spec.datalist_path} lists its cases under {recorded}, which does not hold them (was the study folder "
            f"moved?), and --data {spec.data_root} does not hold them all either (no {missing}): pass the folder of "
            "the data set the study was made on as --data."
        )
    raise ValueError(
        f"{spec.datalist_path} lists the data set in {recorded.resolve()}, not --data {spec.data_root}: its "
        "finished runs were trained on that data. Use another --out folder for this data set (or the same "
        "--data to resume)."
    )


def follow_the_data(spec: StudySpec) -> bool:
    """Write ``datalist.json`` again, its cases and folds as they are, for a study folder that was moved or copied:
    with the data set's root where the data are (:func:`_moved_data_root`) when the study moved away from them, and
    with BraTS20's masks in this study folder's ``labels_et/`` (the study writes them there; a moved study read and
    wrote them in the old folder) when the datalist names them elsewhere. Returns whether it wrote."""
    content = read_datalist(spec.datalist_path)
    moved_root = _moved_data_root(spec, content)
    root = moved_root or recorded_root(spec.datalist_path, content)
    labels_dir = spec.out_dir.absolute() / "labels_et"
    items = [_with_own_mask(item, root, labels_dir) for item in content["training"]]
    if moved_root is None and items == content["training"]:
        return False
    updated = {**content, "training": items}
    if moved_root is not None:
        updated["dataset_root"] = dataset_root_entry(moved_root, spec.datalist_path.parent)
    atomic_write_json(spec.datalist_path, updated)
    return True


def _with_own_mask(item: Mapping[str, Any], root: Path, labels_dir: Path) -> Mapping[str, Any]:
    """A BraTS20 datalist item (it has ``seg``, from which its ``label`` mask is made) with the mask named in
    ``labels_dir`` (relative to the data set ``root``) when it names it in another folder; any other item as it is."""
    label = item.get("label")
    if "seg" not in item or not isinstance(label, str):
        return item
    mask = Path(os.path.normpath(root / label))
    if os.path.realpath(mask.parent) == os.path.realpath(labels_dir):
        return item
    return {**item, "label": Path(os.path.relpath(labels_dir / mask.name, root)).as_posix()}


def _moved_data_root(spec: StudySpec, content: Mapping[str, Any]) -> Path | None:
    """``--data`` (for KiTS19 also its repository, or the repository's ``data/`` folder) when it holds every case of
    the study's datalist (``content``) while the root the datalist records holds none of them: the study folder was
    moved or copied away from its data set. ``None`` otherwise (a data set missing some files is not taken for
    moved)."""
    items = content["training"]  # a list of dicts with an image, as read_datalist checks
    recorded = recorded_root(spec.datalist_path, content)
    if any((recorded / source_files(item)[0]).is_file() for item in items):
        return None
    given = Path(os.path.abspath(spec.data_root))
    roots = [given, data_set_folder(spec.dataset, given)]
    if spec.dataset == "kits19":
        roots.append(roots[-1] / "data")
    return next((root for root in dict.fromkeys(roots) if first_missing_file(items, root) is None), None)


def _overlay_case(spec: StudySpec, runs: Sequence[Run]) -> tuple[str, dict] | None:
    """One validation case evaluated by every finished loss of the fold with the most finished runs (the first such
    fold), with each loss's segmentation slice; ``None`` when no run has finished or none saved its predictions."""
    finished = [run for run in runs if run.is_finished]
    if not finished:
        return None
    counts = Counter(run.fold for run in finished)
    fold = max(counts, key=lambda k: (counts[k], -k))
    fold_runs = [run for run in finished if run.fold == fold]
    content = read_datalist(spec.datalist_path)
    base = recorded_root(spec.datalist_path, content)
    for item in content["training"]:
        if item.get("fold") != fold:
            continue
        slices = overlay_slices(fold_runs, base / item["image"], base / item["label"])
        if slices is not None:
            return item["case"], slices
    return None


def run_warnings(runs: Sequence[Run]) -> list[str]:
    """One ``"<loss>/fold_<k>: WARNING: ..."`` line per run made with other settings than the current ones and per
    damaged per-case CSV (a run that is then not counted as finished), as the study prints them before running."""
    lines = []
    for run in runs:
        warning = run.settings_warning
        if warning:
            lines.append(f"{run.name}: {warning}")
        problem = run.per_case_problem
        if problem is not None:
            lines.append(f"{run.name}: WARNING: {problem}; not collected (the study evaluates the run again)")
    return lines


def collect_and_report(spec: StudySpec, echo: Callable[[str], None] = print) -> Path:
    """Collect the finished runs into ``per_case.csv`` and write the report; returns the path of ``report.md``.

    The report covers every fold of the study, whatever ``spec.folds`` (``--only-folds`` chooses the runs to run, not
    those to report: a command that runs one fold, say on one node of a cluster, does not replace a complete report
    with that fold's). It notes the runs that have not finished (with why) and those made with other settings than
    ``spec``'s.

    Raises:
        ValueError: the study folder's ``datalist.json`` does not match ``spec`` (:func:`check_datalist`); no run has
            finished.
    """
    if check_datalist(spec):
        follow_the_data(spec)
    runs = spec.reported_runs()
    table = collect_per_case(runs)
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    overlay = _overlay_case(spec, runs)
    missing = [run for run in runs if not run.is_finished]
    report = write_report(
        table,
        spec.out_dir,
        test=spec.test,
        ci_over=spec.ci_over,
        overlays=overlay[1] if overlay else None,
        overlay_case=overlay[0] if overlay else None,
        class_names=_CLASS_NAMES[spec.dataset],
        title=f"Loss study on {spec.dataset}: {len(set(table['method']))} loss(es), {table['fold'].nunique()} fold(s)",
        notes=[note for note in (_partial_note(runs, missing), _settings_note(runs)) if note],
    )
    # after the report, which validates the table: a table it refuses does not replace the last good per_case.csv
    atomic_write_bytes(spec.out_dir / "per_case.csv", table.to_csv(index=False).encode())
    finished = len(runs) - len(missing)
    if overlay is None:
        echo(
            "no overlays.png: no validation case has a saved segmentation, in its label's grid, from every finished "
            "loss of one fold (the evaluation saves them under each run's eval/)"
        )
    echo(f"report: {report} ({finished}/{len(runs)} runs, {table['case'].nunique()} cases)")
    return report


def _partial_note(runs: Sequence[Run], missing: Sequence[Run]) -> str | None:
    """The report's warning that some runs of the study have not finished (``None`` when all have)."""
    if not missing:
        return None

    def state(run: Run) -> str:
        if run.per_case_problem is not None:
            return "damaged per-case CSV"
        return "failed" if run.has_failed else "not finished"

    states = [f"{run.name} ({state(run)})" for run in missing]
    return (
        f"incomplete study: {len(runs) - len(missing)} of {len(runs)} runs have finished; missing: "
        f"{', '.join(states)}. "
        "The losses are compared on different cases until every run has finished (see the number of cases used)."
    )


def _settings_note(runs: Sequence[Run]) -> str | None:
    """The report's warning that finished runs were made with other settings than the study's current ones."""
    changed = {run.name: run.settings_changes() for run in runs if run.is_finished}
    changed = {name: changes for name, changes in changed.items() if changes}
    if not changed:
        return None
    listed = "; ".join(f"{name} ({', '.join(changes)})" for name, changes in changed.items())
    return (
        f"mixed settings: {len(changed)} finished run(s) were made with other settings than the current ones: "
        f"{listed}. Delete those runs' folders and run the study again to compare the losses under one setting."
    )


def run_study(spec: StudySpec, echo: Callable[[str], None] = print) -> tuple[StudyProgress, Path | None]:
    """Run (or resume) every run of the study, then collect and report what has finished.

    Returns:
        the progress counts (with the failed runs) and the report path (``None`` if no run has finished).
    """
    prepare_datalist(spec)
    runs = spec.runs()
    folds = len({run.fold for run in runs})
    echo(f"study: {len(spec.losses)} loss(es) x {folds} fold(s) = {len(runs)} runs in {spec.out_dir}")
    progress = execute_runs(runs, echo=echo)
    for run in progress.failed:
        error = run.failure_error
        echo(f"FAILED: {run.name}{f': {error}' if error else ''} (log: {run.failure_log or run.root})")
    if not any(run.is_finished for run in spec.reported_runs()):
        return progress, None
    return progress, collect_and_report(spec, echo=echo)
