"""Files the command line writes: checked before any work, written whole or not at all.

Every output path a command names (``--out``, ``--png``, ``--output``, ``--opt-outs``,
the journal) is checked before the first request: a supported suffix, an existing
folder, write permission there. Results are written to a temporary file in the same
folder and moved over the target with :func:`os.replace`, so a reader never sees half a
file and a failed write leaves the previous file intact.

``send`` without ``--journal`` still journals its run: in a temporary journal next to
``--out`` (:func:`temporary_journal`), deleted once the results are written, and kept
(and named in the message) when they cannot be, so the results can be had again with
``mf.results_from_journal(PATH)`` or by re-running the command with ``--journal PATH``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TABLE_SUFFIXES",
    "check_output",
    "remove_journal",
    "suffix_problem",
    "temporary_journal",
    "write_atomic",
    "write_table",
]

TABLE_SUFFIXES = (".parquet", ".pq", ".csv")


def suffix_problem(
    path: str | os.PathLike[str] | None, option: str, suffixes: tuple[str, ...] = TABLE_SUFFIXES
) -> str | None:
    """What is wrong with an output's suffix (a usage mistake), or None."""
    if path is None or Path(path).suffix.lower() in suffixes:
        return None
    return f"{option} {path}: expected a file ending in " + " or ".join(suffixes)


def check_output(path: str | os.PathLike[str], option: str) -> Path:
    """Check that ``path`` can be written, before any work is done.

    Parameters
    ----------
    path : str or path
        The file to write.
    option : str
        The option that named it, for the message (``--out``).

    Returns
    -------
    Path

    Raises
    ------
    InputError
        The folder is missing or not writable, or the path is a folder.

    Examples
    --------
    >>> check_output("missing/dir/r.parquet", "--out")  # doctest: +SKIP
    InputError: --out missing/dir/r.parquet: the folder missing/dir does not exist
    """
    target = Path(path)
    folder = target.parent
    if not folder.exists():
        raise InputError(f"{option} {target}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{option} {target}: {folder} is not a folder")
    if target.is_dir():
        raise InputError(f"{option} {target}: is a folder, not a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {target}: no permission to write in {folder}")
    return target


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> None:
    """Call ``write(temp)`` on a temporary file beside ``path``, then move it over ``path``.

    The temporary file is removed when ``write`` fails; ``path`` is then unchanged.
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(temp)
        with open(temp, "rb") as written:  # on disk before it takes the name
            os.fsync(written.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a results frame, atomically, as parquet or CSV by the file's suffix.

    A named index (``input_line``) is written as the first column(s); an unnamed one as the
    CSV's first column or the parquet file's index, as pandas writes them.
    """
    named = all(name is not None for name in frame.index.names)
    table = frame.reset_index() if named else frame
    keep_index = not named
    if Path(path).suffix.lower() == ".csv":
        write_atomic(path, lambda temp: table.to_csv(temp, index=keep_index))
    else:
        write_atomic(path, lambda temp: table.to_parquet(temp, index=keep_index))


def temporary_journal(out: str | os.PathLike[str]) -> Path:
    """A fresh journal path beside ``out``: ``.<out name>.<random>.journal.db``."""
    target = Path(out)
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.journal.db")


def remove_journal(path: str | os.PathLike[str]) -> None:
    """Delete a journal file and its companions (``-wal``, ``-shm``, ``-journal``, ``.lock``)."""
    base = os.fspath(path)
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        Path(base + suffix).unlink(missing_ok=True)
