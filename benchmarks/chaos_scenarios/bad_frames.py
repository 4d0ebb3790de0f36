"""Scenario ``input``, DataFrames: hypothesis-generated hostile frames into ``validate`` and
``send(dry_run=True)``, plus the frames that once found a hole.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from .figures import Figures
from .harness import (
    Watchdog,
    describe,
    hypothesis_settings,
)

__all__ = ["fuzz_frames"]


def _frame_strategy() -> Any:
    """Hostile DataFrames: ``(frame, options)`` with a phone and a text column of any
    dtype and content, odd indexes, colliding column names, and validate options."""
    import datetime as dt
    import decimal
    import warnings

    import numpy as np
    import pandas as pd
    from hypothesis import strategies as st

    texts = st.one_of(
        st.text(max_size=30),
        st.text(max_size=400),
        st.sampled_from(["Hola", "a|b", "x;y", "é" * 161, "🙂" * 80, "\x00", "\r\n", " ", "",
                         "{nombre}", "%s", "\ud800", "Ω" * 70, "a" * 10_000]),
    )  # fmt: skip
    phones = st.one_of(
        st.sampled_from(["04141234567", "+58 414-123.45.67", "584141234567", "4141234567",
                         "02121234567", "5.84141E+11", "0414 123 4567 ext 2", "٠٤١٤١٢٣٤٥٦٧",
                         "58414123456789012345", "+1 212 555 0100", "", " ", "nan", "None"]),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    )  # fmt: skip
    anything = st.one_of(
        st.none(), st.just(float("nan")), st.just(pd.NA), st.just(pd.NaT), st.booleans(),
        st.just(np.int64(584141234567)), st.just(np.float32(4.141234e9)),
        st.just(decimal.Decimal("584141234567")), st.just(b"04141234567"),
        st.just(dt.datetime(2024, 1, 1)), st.just(["04141234567"]), st.just({"a": 1}),
        st.just(complex(1, 2)), st.just(object()),
    )  # fmt: skip
    dtypes = st.sampled_from([None, "object", "string", "category", "str"])

    @st.composite
    def frame(draw: Any) -> tuple[Any, dict[str, Any]]:
        n = draw(st.integers(0, 25))
        phone_values = draw(st.lists(st.one_of(phones, anything), min_size=n, max_size=n))
        text_values = draw(st.lists(st.one_of(texts, anything), min_size=n, max_size=n))
        kind = draw(st.sampled_from(["range", "dup", "str", "dt", "multi", "float"]))
        if kind == "dup":
            index: Any = pd.Index([i % 3 for i in range(n)])
        elif kind == "str":
            index = pd.Index([f"r{i}" for i in range(n)], name="cliente")
        elif kind == "dt":
            index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
        elif kind == "multi":
            index = pd.MultiIndex.from_tuples([(i % 2, i) for i in range(n)], names=["a", "b"])
        elif kind == "float":
            index = pd.Index([i / 2 for i in range(n)])
        else:
            index = pd.RangeIndex(n)
        template = draw(st.integers(0, 3)) == 0
        text_name = "nombre" if template else draw(st.sampled_from(["text", "mensaje"]))
        columns: dict[Any, Any] = {"phone": phone_values, text_name: text_values}
        # Now and then a column validate() would have to overwrite: a clear InputError.
        extra = draw(st.sampled_from([None] * 12 + ["state", "valid", "phone_input", 0]))
        if extra is not None:
            columns[extra] = list(range(n))
        try:
            df = pd.DataFrame(columns, index=index)
        except UnicodeEncodeError:  # a lone surrogate cannot be an Arrow string
            df = pd.DataFrame(columns, index=index, dtype=object)
        for col in ("phone", text_name):
            dtype = draw(dtypes)
            if dtype is not None:
                with contextlib.suppress(Exception), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # casting huge numbers: pandas warns
                    df[col] = df[col].astype(dtype)
        options: dict[str, Any] = {
            "long_text": draw(st.sampled_from(["error", "truncate", "split"])),
            "transliterate": draw(st.booleans()),
            "dedupe": draw(st.sampled_from(["phone+text", "phone", None])),
        }
        if draw(st.booleans()):
            options["suppress"] = draw(st.sampled_from([["04141234567"], [], [None, 1.5]]))
        # send()'s own options (only send() sees the keys starting with "send:").
        send_options = {
            "method": draw(st.sampled_from([None, "GET", "POST"])),
            "max_phones": draw(st.sampled_from([500, 1, 3])),
            "send_at": draw(st.sampled_from([None, None, "2024-01-01 10:00", "2999-01-01",
                                             "mañana", "phone", pd.Timestamp("2024-01-01")])),
            "window": draw(st.sampled_from([None, None, ("08:00", "20:00"), ("20:00", "08:00"),
                                            ("25:00", "x")])),
            "campaign": draw(st.sampled_from([None, "enero", ""])),
            "key": draw(st.sampled_from([None, None, "phone"])),
        }  # fmt: skip
        options.update({f"send:{k}": v for k, v in send_options.items()})
        if template:
            options["template"] = draw(
                st.sampled_from(["Hola {nombre}", "{nombre:>5}", "{nombre!r}", "{0}", "{x}", "{"])
            )
        else:
            options["text"] = text_name
        return df, options

    return frame()


def fuzz_frames(examples: int, *, seed: int = 0, timeout: float = 10.0) -> Figures:
    """Hostile DataFrames into ``validate`` and ``send(dry_run=True)``.

    Either a frame comes back — same index, every row with a state, every row not
    ready/scheduled with a reason — or a :class:`~massiva_frames.errors.MassivaError`
    (a wrong argument) is raised. Anything else is a crash (docs/architecture.md: "never a
    traceback from deep inside pandas or lxml"); a call past ``timeout`` is a hang.
    """
    import warnings

    from hypothesis import given

    from massiva_frames.errors import MassivaError
    from massiva_frames.prepare.validation import validate
    from massiva_frames.sending.campaign import send

    fig = Figures("bad input: DataFrames", crashes=0, hangs=0)
    start = time.perf_counter()
    watchdog = Watchdog(timeout)
    outcomes: dict[str, int] = {}
    crash_kinds: dict[str, int] = {}

    def check(df: Any, options: dict[str, Any]) -> str:
        only_send = {k[5:]: options.pop(k) for k in list(options) if k.startswith("send:")}
        out = validate(df, phone="phone", **options)
        problems = _frame_problems(df, out, ok_states=("ready",))
        res = send(df, phone="phone", dry_run=True, progress=False, **options, **only_send)
        problems += _frame_problems(df, res, ok_states=("accepted",))
        if problems:
            raise AssertionError("; ".join(problems))
        return "frame"

    def guarded(df: Any, options: dict[str, Any]) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning from pandas is a crash too
            try:
                return check(df, dict(options))
            except MassivaError as exc:
                return type(exc).__name__

    @hypothesis_settings(examples, seed)
    @given(_frame_strategy())
    @_frame_examples()
    def run(case: tuple[Any, dict[str, Any]]) -> None:
        df, options = case
        fig.tried += 1
        outcome, value = watchdog.call(guarded, df, options)
        if outcome == "hang":
            fig.hangs = (fig.hangs or 0) + 1
            fig.problem(f"hang on {options} {df.head(3).to_dict()!r}")
        elif outcome == "error":
            fig.crashes = (fig.crashes or 0) + 1
            what = describe(value)
            if what not in crash_kinds:
                fig.problem(f"{what} on {options} {df.head(3).to_dict()!r}")
            crash_kinds[what] = crash_kinds.get(what, 0) + 1
        else:
            outcomes[value] = outcomes.get(value, 0) + 1

    try:
        run()
    finally:
        watchdog.close()
    fig.evidence.update(outcomes)
    fig.notes.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    fig.notes += [f"crash x{n}: {what}" for what, n in crash_kinds.items()]
    fig.seconds = time.perf_counter() - start
    return fig


def _frame_examples() -> Callable[[Any], Any]:
    """Frames that once found a hole: always tried first (hypothesis explicit examples)."""
    import pandas as pd
    from hypothesis import example

    def frame(phones: list[Any], texts: list[Any], **kw: Any) -> Any:
        return pd.DataFrame({"phone": phones, "text": texts, **kw}, dtype=object)

    cases = [
        # every row invalid
        (frame(["x", None], ["a", "b"]), {"text": "text"}),
        # lone surrogates (text read with errors="surrogateescape")
        (frame(["04141234567", "04241234567"], ["a\udcff", "b"]), {"text": "text"}),
        (frame(["04141234567\udcff", "04241234567"], ["a", "b"]), {"text": "text"}),
        # a send_at column beside repeated index labels
        (
            frame(["04141234567"] * 2, ["a", "b"], cuando=["2999-01-01"] * 2).set_axis([0, 0]),
            {"text": "text", "send:send_at": "cuando"},
        ),
    ]

    def apply(fn: Any) -> Any:
        for case in cases:
            fn = example(case)(fn)
        return fn

    return apply


def _frame_problems(df: Any, out: Any, *, ok_states: tuple[str, ...]) -> list[str]:
    """What breaks "every input row comes back once, with a state and, unless it is
    fine, a reason" (docs/architecture.md)."""
    problems = []
    if len(out) != len(df) or not out.index.equals(df.index):
        problems.append(f"index changed: {len(df)} rows in, {len(out)} out")
        return problems
    state = out["state"].astype("string")
    if state.isna().any():
        problems.append(f"{int(state.isna().sum())} rows without a state")
    reasonless = ~state.isin(list(ok_states)) & out["reason"].isna()
    if reasonless.any():
        problems.append(f"{int(reasonless.sum())} rows neither {ok_states} nor with a reason")
    return problems
