"""Where a streamed send reads its rows: a source cut into chunks of bounded size.

A source is a parquet dataset (a directory, a file, a glob of files, or a
``pyarrow.dataset.Dataset``), a CSV file (or a glob of them) read ``chunk_rows`` lines at
a time with every cell as text, or any iterable of DataFrames (``pd.read_csv(...,
chunksize=...)`` is one). Only one chunk is held at a time: the reader hands the next
one over when the sender asks for it.

A send reads its source twice (a counting pass, then the sending pass). An iterator
can be read once only: its chunks are spilled to a temporary directory as the first
pass reads them (:func:`spill`, pickled: every dtype and index comes back as it was)
and the second pass reads them back from there (:func:`replay`).

Rows of a parquet or CSV source are labelled with their row number in the source,
counting from 0 across its files in order (a continuing ``RangeIndex``); frames of an
iterable keep their own index. Every chunk carries a ``where`` that error messages
quote: its number, its rows and its file.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError

# Internal to massiva_frames.sending.streaming.
__all__ = ["CSV_SUFFIXES", "Chunk", "iter_chunks", "one_shot", "replay", "spill"]

#: file suffixes read as CSV (every other file is read as parquet)
CSV_SUFFIXES = (".csv", ".txt", ".tsv")


@dataclass
class Chunk:
    """One chunk of a source: its number (from 0), its rows, and where they come from."""

    number: int
    frame: pd.DataFrame
    where: str

    def fingerprint(self, *salt: str) -> str:
        """A digest of the chunk's number, columns and values: a re-run reading the same
        source with the same ``chunk_rows`` finds the same fingerprints."""
        digest = hashlib.sha256("\x1f".join((str(self.number), *salt)).encode())
        digest.update("\x1f".join(map(str, self.frame.columns)).encode("utf-8", "replace"))
        try:
            hashed = pd.util.hash_pandas_object(self.frame, index=True)
            digest.update(hashed.to_numpy().tobytes())
        except TypeError:  # unhashable cells (lists): their text stands in
            digest.update(self.frame.to_csv().encode("utf-8", "replace"))
        return digest.hexdigest()


def _rows_label(start: int, n: int) -> str:
    return f"rows {start}-{start + n - 1}" if n else f"row {start}"


def _describe(item: object) -> str:
    return type(item).__name__


def iter_chunks(source: Any, *, chunk_rows: int) -> Iterator[Chunk]:
    """The chunks of ``source``, none longer than ``chunk_rows`` rows (empty ones skipped).

    Raises
    ------
    InputError
        A source of no known kind, a path that matches no file, an item of an iterable
        that is not a DataFrame (naming the item and the rows before it), a file that
        cannot be read, or a source without any row.
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise InputError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
    count = 0
    for chunk in _chunks(source, chunk_rows):
        if len(chunk.frame):
            count += 1
            yield chunk
    if not count:
        raise InputError(f"the source has no rows to send ({_name(source)})")


def one_shot(source: Any) -> bool:
    """Whether ``source`` is an iterator (it can be read once only)."""
    return isinstance(source, Iterator) and not isinstance(source, pd.DataFrame)


def spill(chunks: Iterator[Chunk], folder: Path, wheres: list[str]) -> Iterator[Chunk]:
    """``chunks`` as they come, each written to ``folder`` first (its ``where`` appended
    to ``wheres``) for :func:`replay`."""
    for chunk in chunks:
        chunk.frame.to_pickle(folder / f"{chunk.number}.pkl")
        wheres.append(chunk.where)
        yield chunk


def replay(folder: Path, wheres: list[str]) -> Iterator[Chunk]:
    """The chunks :func:`spill` wrote, in order, each file removed once read."""
    for number, where in enumerate(wheres):
        path = folder / f"{number}.pkl"
        frame = pd.read_pickle(path)  # our own file, written by spill() in this run
        path.unlink()
        yield Chunk(number, frame, where)


def _name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"a {_describe(source)}"


def _chunks(source: Any, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.dataset as ds

    if isinstance(source, pd.DataFrame):
        yield from _frame_slices(source, chunk_rows)
    elif isinstance(source, ds.Dataset):
        yield from _dataset_chunks(source, chunk_rows)
    elif isinstance(source, (str, os.PathLike)):
        yield from _path_chunks(os.fspath(source), chunk_rows)
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, dict)):
        yield from _iterable_chunks(source, chunk_rows)
    else:
        raise InputError(
            "send takes a DataFrame, a parquet dataset (directory, file, glob or "
            f"pyarrow.dataset.Dataset), a CSV file or an iterable of DataFrames; got "
            f"{_describe(source)}"
        )


def _frame_slices(frame: pd.DataFrame, chunk_rows: int, number: int = 0) -> Iterator[Chunk]:
    for start in range(0, len(frame), chunk_rows):
        part = frame.iloc[start : start + chunk_rows]
        yield Chunk(number, part, f"chunk {number} ({_rows_label(start, len(part))})")
        number += 1


def _iterable_chunks(items: Iterable[Any], chunk_rows: int) -> Iterator[Chunk]:
    number = seen = 0
    for i, item in enumerate(items):
        if not isinstance(item, pd.DataFrame):
            raise InputError(
                f"item {i} of the source (after row {seen}) is a {_describe(item)}, not a DataFrame"
            )
        for start in range(0, len(item), chunk_rows):
            part = item.iloc[start : start + chunk_rows]
            rows = _rows_label(seen + start, len(part))
            yield Chunk(number, part, f"chunk {number} (item {i}, {rows} of the source)")
            number += 1
        seen += len(item)


def _path_chunks(path: str, chunk_rows: int) -> Iterator[Chunk]:
    if any(c in path for c in "*?["):
        files = sorted(glob.glob(path, recursive=True))
        if not files:
            raise InputError(f"no file matches {path}")
    elif os.path.isdir(path) or os.path.isfile(path):
        files = [path]
    else:
        raise InputError(f"no such file or directory: {path}")
    csv = [f for f in files if Path(f).suffix.lower() in CSV_SUFFIXES]
    if csv and len(csv) != len(files):
        raise InputError(f"{path} mixes CSV and parquet files: give one kind")
    if csv:
        yield from _csv_chunks(csv, chunk_rows)
        return
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(files[0] if len(files) == 1 else files, format="parquet")
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a parquet dataset ({str(exc).splitlines()[0]})") from exc
    yield from _dataset_chunks(dataset, chunk_rows)


def _csv_chunks(files: list[str], chunk_rows: int) -> Iterator[Chunk]:
    number = seen = 0
    for file in files:
        try:
            reader = pd.read_csv(file, dtype=str, chunksize=chunk_rows)
            with reader:
                for frame in reader:
                    frame.index = pd.RangeIndex(seen, seen + len(frame))
                    rows = _rows_label(seen, len(frame))
                    yield Chunk(number, frame, f"chunk {number} ({rows}, file {file})")
                    number += 1
                    seen += len(frame)
        except pd.errors.EmptyDataError:
            continue  # a file without a header nor rows adds nothing
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{file}: cannot be read as CSV after row {seen} ({first})") from exc


def _dataset_chunks(dataset: Any, chunk_rows: int) -> Iterator[Chunk]:
    """Record batches gathered into chunks of ``chunk_rows`` rows; one batch read ahead
    at most (pyarrow's default reads 16 ahead, which would hold 16 chunks)."""
    import pyarrow as pa

    scanner = dataset.scanner(
        batch_size=chunk_rows, batch_readahead=1, fragment_readahead=1, use_threads=False
    )
    number = seen = 0
    held: list[Any] = []
    files: list[str] = []
    size = 0
    batches = scanner.scan_batches()
    while True:
        try:
            tagged = next(batches)
        except StopIteration:
            break
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"the dataset cannot be read after row {seen} ({first})") from exc
        batch, path = tagged.record_batch, getattr(tagged.fragment, "path", "?")
        while batch.num_rows:
            take = batch.slice(0, chunk_rows - size)
            batch = batch.slice(take.num_rows)
            if take.num_rows:
                held.append(take)
                size += take.num_rows
                if not files or files[-1] != path:
                    files.append(path)
            if size == chunk_rows:
                yield _chunk_of(pa.Table.from_batches(held), number, seen, files)
                number, seen = number + 1, seen + size
                held, files, size = [], [], 0
    if size:
        yield _chunk_of(pa.Table.from_batches(held), number, seen, files)


def _chunk_of(table: Any, number: int, seen: int, files: list[str]) -> Chunk:
    frame = table.to_pandas()
    frame.index = pd.RangeIndex(seen, seen + len(frame))
    where = files[0] if len(files) == 1 else f"{files[0]} to {files[-1]}"
    return Chunk(number, frame, f"chunk {number} ({_rows_label(seen, len(frame))}, file {where})")
