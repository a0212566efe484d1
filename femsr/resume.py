"""Resuming long work from what an earlier run stored, only if that run had the same settings.

A training checkpoint and a patch dataset's index store the settings they were written with;
a rerun continues from them only when its settings are the same, and otherwise says which
differ and how to go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["check_settings", "resume"]


def check_settings(
    stored: Mapping[str, Any], settings: Mapping[str, Any], *, source: str, remedy: str
) -> None:
    """Raise unless ``stored`` and ``settings`` hold the same keys and values.

    Parameters
    ----------
    stored : mapping
        The settings an earlier run wrote (plain JSON-like values).
    settings : mapping
        This run's settings.
    source : str
        What holds ``stored`` (a file or folder), for the message.
    remedy : str
        How to go on instead, for the message.

    Raises
    ------
    ValueError
        Naming each key that differs, with its stored and its new value.

    Examples
    --------
    >>> check_settings({"lr": 0.002}, {"lr": 0.002}, source="run", remedy="start over")
    >>> check_settings({"lr": 0.002}, {"lr": 0.001}, source="run", remedy="start over")
    Traceback (most recent call last):
    ...
    ValueError: run was written with other settings (lr: 0.002 → 0.001); start over
    """
    changed = sorted(key for key in {*stored, *settings} if stored.get(key) != settings.get(key))
    if changed:
        details = ", ".join(
            f"{key}: {stored.get(key)!r} → {settings.get(key)!r}" for key in changed
        )
        raise ValueError(f"{source} was written with other settings ({details}); {remedy}")


def resume(
    path: str | os.PathLike[str],
    settings: Mapping[str, Any],
    read: Callable[[Path], dict[str, Any]],
    *,
    remedy: str,
) -> dict[str, Any] | None:
    """What an earlier run stored at ``path``, if it exists and was written with ``settings``.

    Parameters
    ----------
    path : path
        The stored state (a checkpoint, an index).
    settings : mapping
        This run's settings; the stored ones are ``read(path)["settings"]``.
    read : callable
        Reads ``path`` into a dict with a ``"settings"`` entry, raising on a file that is not
        what it should be.
    remedy : str
        How to go on when the settings differ, for the message.

    Returns
    -------
    dict or None
        The stored state, or None when there is none (start afresh).

    Raises
    ------
    ValueError
        If the stored settings differ (see :func:`check_settings`), or what ``read`` raises.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> read = lambda p: json.loads(p.read_text())
    >>> resume(path, {"seed": 0}, read, remedy="use another folder") is None
    True
    >>> _ = path.write_text(json.dumps({"settings": {"seed": 0}, "done": 3}))
    >>> resume(path, {"seed": 0}, read, remedy="use another folder")["done"]
    3
    """
    path = Path(path)
    if not path.exists():
        return None
    state = read(path)
    check_settings(state["settings"], settings, source=str(path), remedy=remedy)
    return state
