# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Overrides that name no id of a bundle's configs: refused, with the closest ids.

``python -m monai.bundle run ... --epoch 50`` adds an unused id ``epoch`` to the config and trains with the bundle's
``epochs`` (500), without a word; so do ``--lr``, ``--flod 1`` and ``--save_prediction true``. The study's ``-O`` and
the bundles' command line (:func:`check_command_line_ids`, the first step of their ``initialize``) refuse such ids.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["check_command_line_ids", "command_line_options", "unknown_id_hint"]


def _config_ids(config: Any, prefix: str = "") -> Iterator[str]:
    """The ids of a parsed config's (nested) mappings, nested ones joined with ``#`` (``network_def#features``); the
    ids of list items (``network_def#features#0``) are left out: they are valid, but too many to suggest."""
    if isinstance(config, dict):
        for key, value in config.items():
            yield f"{prefix}{key}"
            yield from _config_ids(value, f"{prefix}{key}#")


def _takes(component: Mapping[str, Any], argument: str) -> bool:
    """Whether the ``_target_`` of ``component`` takes ``argument``, looked up as MONAI looks it up; True when it
    cannot be."""
    from monai.bundle.config_item import ComponentLocator, ConfigComponent
    from monai.utils.module import locate

    try:
        target = locate(ConfigComponent(dict(component), locator=ComponentLocator()).resolve_module_name())
        parameters = inspect.signature(target).parameters
    except Exception:  # a component this check cannot resolve is left to the run (it names its own errors)
        return True
    return argument in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def unknown_id_hint(parser: Any, key: str, reserved: Mapping[str, str] | None = None) -> str | None:
    """``None`` if ``key`` names an id of ``parser`` (a :class:`monai.bundle.ConfigParser`), a new entry of one of its
    plain mappings (``loss_kwargs#class_weights``: the loss names its own arguments) or a new argument that a
    ``_target_`` component takes (``network_def#dropout``); else the closest ids, ``" (did you mean ...?)"`` or ``""``
    (``reserved``: ids to describe instead of naming).
    """
    key = str(key).replace("::", "#")
    if key.strip() and key in parser:
        return None
    parent, _, leaf = key.rpartition("#")
    if parent and parent in parser and isinstance(parser[parent], dict):
        component = parser[parent]
        if "_target_" not in component or _takes(component, leaf):
            return None
    reserved = reserved or {}
    known = list(_config_ids(parser.get()))
    close = [
        f"{name!r} ({reserved[name]})" if name in reserved else repr(name)
        for name in difflib.get_close_matches(key, known, n=3)
    ]
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def command_line_options(argv: Sequence[str]) -> dict[str, str | None]:
    """The ``--key value`` / ``--key=value`` options of a ``python -m monai.bundle`` command line (``-`` in a key read
    as ``_``, as ``fire`` reads it); a key without a value maps to ``None``."""
    options: dict[str, str | None] = {}
    tokens = list(argv)
    for index, token in enumerate(tokens):
        if not token.startswith("--") or token == "--":
            continue
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            value = following if following is not None and not following.startswith("--") else None
        options[key.replace("-", "_")] = value
    return options


def _config_files(value: str) -> list[str]:
    """``--config_file``'s value as MONAI reads it: a Python list literal, or paths separated by commas."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    if isinstance(parsed, str):
        return [parsed] if Path(parsed).is_file() or "," not in parsed else parsed.split(",")
    return [str(path) for path in parsed]


def _tracking_configs(tracking: str) -> dict[str, Any]:
    """The ids that ``--tracking`` adds to the config: MONAI's MLflow settings, or those of a settings file."""
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

    if tracking == "mlflow":
        settings: Any = DEFAULT_MLFLOW_SETTINGS
    else:
        try:
            settings = ConfigParser.load_config_file(tracking)
        except Exception:  # MONAI reports a bad tracking file itself
            return {}
    configs = settings.get("configs", {}) if isinstance(settings, dict) else {}
    return {str(key): None for key in configs}


def _is_monai_bundle_command(program: str) -> bool:
    return Path(program).parts[-3:] == ("monai", "bundle", "__main__.py")


def check_command_line_ids(argv: Sequence[str] | None = None) -> None:
    """Refuse, at start, an option of a ``python -m monai.bundle`` command line that names no id of the configs it
    runs (nor an argument of ``monai.bundle.run``, nor an entry of a mapping id such as ``loss_kwargs``).

    Does nothing when the process is not that command (the configs run inside MONAI Label or a notebook), or when the
    command names its configs through ``--args_file``.

    Args:
        argv: the command line (default ``sys.argv``).

    Raises:
        ValueError: ``--<key>: no such id in <config files> (did you mean ...?)``.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or not _is_monai_bundle_command(argv[0]):
        return
    options = command_line_options(argv[1:])
    if not options.get("config_file"):
        return
    from monai.bundle import ConfigParser, scripts

    files = _config_files(str(options["config_file"]))
    parser = ConfigParser()
    parser.read_config(files)
    if options.get("tracking"):  # MONAI adds its tracking settings' ids (tracking_uri, experiment_name, ...)
        parser.update(_tracking_configs(str(options["tracking"])))
    run_arguments = set(inspect.signature(scripts.run).parameters) - {"override"}
    for key in options:
        if key in run_arguments:
            continue
        hint = unknown_id_hint(parser, key)
        if hint is not None:
            raise ValueError(
                f"--{key}: no such id in {' or '.join(files)}{hint}; an option must name an id of the configs (an "
                "unknown one is added unused, and the run takes the config's own value)."
            )
