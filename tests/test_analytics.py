"""Delivery analytics on frames built with the shared shapes (docs/architecture.md)."""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from massiva_frames.analytics import plots
from massiva_frames.analytics.delivery import attach_delivery
from massiva_frames.analytics.inbound import DEFAULT_OPT_OUT_KEYWORDS, opt_outs, replies
from massiva_frames.analytics.shapes import STATES
from massiva_frames.analytics.summary import delivery_summary, operator_of
from massiva_frames.errors import InputError

T0 = pd.Timestamp("2024-05-01 14:00:00", tz="UTC")  # 10:00 in Caracas (UTC-4)


# ------------------------------------------------------------------ frame builders


def results_frame(rows: list[dict[str, Any]], index: list[Any] | None = None) -> pd.DataFrame:
    """A results frame with exactly the dtypes send() returns (docs/architecture.md)."""
    n = len(rows)

    def col(name: str, default: Any = None) -> list[Any]:
        return [r.get(name, default) for r in rows]

    frame = pd.DataFrame(
        {
            "phone": pd.array(col("phone"), dtype="string"),
            "text": pd.array(col("text", "Hola"), dtype="string"),
            "state": pd.Categorical(col("state", "accepted"), categories=list(STATES)),
            "reason": pd.array(col("reason"), dtype="string"),
            "batch": pd.array(col("batch", 1), dtype="Int64"),
            "message_id": pd.array(col("message_id"), dtype="Int64"),
            "sid": pd.array(col("sid"), dtype="string"),
            "request_status": pd.array(col("request_status", 1), dtype="Int64"),
            "api_message": pd.array(col("api_message", "Envio Exitoso"), dtype="string"),
            "sent_at": pd.DatetimeIndex(pd.to_datetime(col("sent_at", T0), utc=True)).as_unit("us"),
            "encoding": pd.array(["GSM-7"] * n, dtype="string"),
            "segments": pd.array([1] * n, dtype="Int64"),
        },
        index=index if index is not None else range(n),
    )
    return frame


def status_log(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A status log shaped like read_callbacks(kind="status")."""
    local = pd.to_datetime([r["updated_at"] for r in rows]).as_unit("us")
    received = [r.get("received_at", T0 + pd.Timedelta(minutes=5)) for r in rows]
    return pd.DataFrame(
        {
            "message_id": pd.array([r["message_id"] for r in rows], dtype="Int64"),
            "status": pd.Categorical(
                [r["status"] for r in rows], categories=["delivered", "failed"]
            ),
            "updated_at": local.tz_localize("America/Caracas"),
            "user": pd.array(["demo@massiva.test"] * len(rows), dtype="string"),
            "detail": pd.array(
                [
                    r.get("detail", "+584140000001" if r["status"] == "delivered" else "ERROR")
                    for r in rows
                ],
                dtype="string",
            ),
            "line": pd.array(
                [
                    r.get("line", "584140000001" if r["status"] == "delivered" else None)
                    for r in rows
                ],
                dtype="string",
            ),
            "received_at": pd.Series(pd.to_datetime(received, utc=True)).astype(
                "datetime64[us, UTC]"
            ),
        }
    )


def inbound_log(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """An inbound log shaped like read_callbacks(kind="inbound")."""
    return pd.DataFrame(
        {
            "text": pd.array([r.get("text", "ok") for r in rows], dtype="string"),
            "phone": pd.array([r["phone"] for r in rows], dtype="string"),
            "line": pd.array(["584140000001"] * len(rows), dtype="string"),
            "email": pd.array(["demo@massiva.test"] * len(rows), dtype="string"),
            "received_at": pd.Series(
                pd.to_datetime([r.get("received_at", T0) for r in rows], utc=True)
            ).astype("datetime64[us, UTC]"),
        }
    )


def state_list(frame: pd.DataFrame) -> list[str]:
    return [str(s) for s in frame["state"]]


# ---------------------------------------------------------------- attach_delivery


class TestAttachDelivery:
    def test_later_event_wins_whatever_the_log_order(self) -> None:
        res = results_frame([{"message_id": 1}, {"message_id": 2}])
        events = [
            {"message_id": 1, "status": "failed", "updated_at": "2024-05-01 10:00:05"},
            {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:09"},
            {"message_id": 2, "status": "delivered", "updated_at": "2024-05-01 10:00:03"},
            {"message_id": 2, "status": "failed", "updated_at": "2024-05-01 10:00:04"},
        ]
        for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
            out = attach_delivery(res, status_log([events[i] for i in order]))
            assert state_list(out) == ["delivered", "failed"]
            assert out["status_at"].tolist() == [
                pd.Timestamp("2024-05-01 14:00:09", tz="UTC"),
                pd.Timestamp("2024-05-01 14:00:04", tz="UTC"),
            ]

    def test_same_update_time_arrival_order_decides(self) -> None:
        res = results_frame([{"message_id": 7}])
        log = status_log(
            [
                {
                    "message_id": 7,
                    "status": "delivered",
                    "updated_at": "2024-05-01 10:00:05",
                    "received_at": T0 + pd.Timedelta(seconds=30),
                },
                {
                    "message_id": 7,
                    "status": "failed",
                    "updated_at": "2024-05-01 10:00:05",
                    "received_at": T0 + pd.Timedelta(seconds=10),
                },
            ]
        )
        assert state_list(attach_delivery(res, log)) == ["delivered"]

    def test_repeated_callbacks_count_once(self) -> None:
        res = results_frame([{"message_id": 1}])
        event = {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"}
        out = attach_delivery(res, status_log([event, event, event]))
        assert state_list(out) == ["delivered"]
        assert out.attrs["delivery"]["events"] == 3
        assert out.attrs["delivery"]["messages"] == 1
        assert out.attrs["delivery"]["matched_rows"] == 1

    def test_unknown_ids_are_ignored_and_counted(self) -> None:
        res = results_frame([{"message_id": 1}, {"message_id": 2}])
        log = status_log(
            [
                {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"},
                {"message_id": 99, "status": "delivered", "updated_at": "2024-05-01 10:00:02"},
                {"message_id": 98, "status": "failed", "updated_at": "2024-05-01 10:00:02"},
            ]
        )
        out = attach_delivery(res, log)
        assert state_list(out) == ["delivered", "accepted"]
        assert out.attrs["delivery"]["unmatched_ids"] == 2
        assert len(out) == 2

    def test_only_accepted_rows_change(self) -> None:
        states = ["invalid", "suppressed", "scheduled", "accepted", "rejected", "unknown"]
        res = results_frame(
            [
                {"message_id": i + 1, "state": s, "reason": None if s == "accepted" else "x"}
                for i, s in enumerate(states)
            ]
        )
        log = status_log(
            [
                {"message_id": i + 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"}
                for i in range(len(states))
            ]
        )
        out = attach_delivery(res, log)
        assert state_list(out) == [
            "invalid",
            "suppressed",
            "scheduled",
            "delivered",
            "rejected",
            "unknown",
        ]
        assert out["reason"].isna().tolist() == [False, False, False, True, False, False]
        assert out["delivered_at"].notna().tolist() == [False, False, False, True, False, False]
        assert out.attrs["delivery"]["unmatched_ids"] == 5

    def test_rows_without_id_stay_as_they_are(self) -> None:
        res = results_frame([{"message_id": None, "state": "accepted"}, {"message_id": 5}])
        log = status_log(
            [{"message_id": 5, "status": "failed", "updated_at": "2024-05-01 10:00:02"}]
        )
        out = attach_delivery(res, log)
        assert state_list(out) == ["accepted", "failed"]
        assert out["reason"].tolist()[1] == "delivery_failed"

    def test_index_columns_and_input_are_kept(self) -> None:
        res = results_frame(
            [{"message_id": 3}, {"message_id": 1}, {"message_id": 2}], index=["z", "a", 10]
        )
        before = res.copy()
        log = status_log(
            [{"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"}]
        )
        out = attach_delivery(res, log)
        assert list(out.index) == ["z", "a", 10]
        assert list(out.columns[: len(res.columns)]) == list(res.columns)
        assert {"status_at", "delivered_at", "line", "latency"} <= set(out.columns)
        assert state_list(out) == ["accepted", "delivered", "accepted"]
        pd.testing.assert_frame_equal(res, before)  # the input is not modified

    def test_state_keeps_every_category(self) -> None:
        res = results_frame([{"message_id": 1}])
        out = attach_delivery(res, status_log([]))
        assert isinstance(out["state"].dtype, pd.CategoricalDtype)
        assert list(out["state"].cat.categories) == list(STATES)

    def test_delivered_at_line_and_latency(self) -> None:
        res = results_frame(
            [
                {"message_id": 1, "sent_at": T0},
                {"message_id": 2, "sent_at": T0},
                {"message_id": 3, "sent_at": T0},
            ]
        )
        log = status_log(
            [
                {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:09"},
                {"message_id": 2, "status": "failed", "updated_at": "2024-05-01 10:00:30"},
            ]
        )
        out = attach_delivery(res, log)
        assert out["delivered_at"].iloc[0] == pd.Timestamp("2024-05-01 14:00:09", tz="UTC")
        assert pd.isna(out["delivered_at"].iloc[1])
        assert out["status_at"].iloc[1] == pd.Timestamp("2024-05-01 14:00:30", tz="UTC")
        assert out["latency"].iloc[0] == pd.Timedelta(seconds=9)
        assert pd.isna(out["latency"].iloc[1]) and pd.isna(out["latency"].iloc[2])
        assert out["line"].tolist()[0] == "584140000001"
        assert str(out["delivered_at"].dtype) == "datetime64[us, UTC]"
        assert out["line"].dtype == "string"

    def test_line_from_detail_when_the_log_has_no_line(self) -> None:
        res = results_frame([{"message_id": 1}, {"message_id": 2}])
        log = status_log(
            [
                {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"},
                {"message_id": 2, "status": "failed", "updated_at": "2024-05-01 10:00:02"},
            ]
        ).drop(columns="line")
        log["detail"] = pd.array(["+584241112233", "ERROR EN ENVIO"], dtype="string")
        out = attach_delivery(res, log)
        assert out["line"].tolist() == ["+584241112233", pd.NA]

    def test_naive_times_are_caracas_and_aware_ones_respected(self) -> None:
        res = results_frame([{"message_id": 1}, {"message_id": 2}])
        log = pd.DataFrame(
            {
                "message_id": [1, 2],
                "status": ["delivered", "delivered"],
                "updated_at": ["2024-05-01 10:00:04", "2024-05-01 10:00:04"],
            }
        )
        out = attach_delivery(res, log)
        assert out["latency"].tolist() == [pd.Timedelta(seconds=4)] * 2
        # same wall-clock time, but stated in UTC: four hours earlier than the send
        aware = log.assign(updated_at=pd.to_datetime(log["updated_at"]).dt.tz_localize("UTC"))
        out = attach_delivery(res, aware)
        assert out["delivered_at"].iloc[0] == pd.Timestamp("2024-05-01 10:00:04", tz="UTC")
        # another zone of naive times
        out = attach_delivery(res, log, tz="UTC")
        assert out["status_at"].iloc[0] == pd.Timestamp("2024-05-01 10:00:04", tz="UTC")

    def test_same_second_delivery_is_not_negative(self) -> None:
        sent = pd.Timestamp("2024-05-01 14:00:00.700", tz="UTC")
        res = results_frame([{"message_id": 1, "sent_at": sent}, {"message_id": 2}])
        log = status_log(
            [
                # stamped 10:00:00 local: the provider truncates to whole seconds
                {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:00"},
                # an hour early: a real clock or zone problem, left visible
                {"message_id": 2, "status": "delivered", "updated_at": "2024-05-01 09:00:00"},
            ]
        )
        out = attach_delivery(res, log)
        assert out["latency"].tolist() == [pd.Timedelta(0), pd.Timedelta(hours=-1)]

    def test_attaching_again_with_a_newer_log(self) -> None:
        res = results_frame([{"message_id": 1}, {"message_id": 2}, {"message_id": 3}])
        first = status_log(
            [
                {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"},
                {"message_id": 2, "status": "delivered", "updated_at": "2024-05-01 10:00:02"},
            ]
        )
        once = attach_delivery(res, first)
        again = attach_delivery(once, first)
        pd.testing.assert_frame_equal(once, again)
        newer = status_log(
            [
                {"message_id": 2, "status": "failed", "updated_at": "2024-05-01 10:05:00"},
                {"message_id": 3, "status": "delivered", "updated_at": "2024-05-01 10:00:07"},
            ]
        )
        out = attach_delivery(once, newer)
        assert state_list(out) == ["delivered", "failed", "delivered"]
        assert out["delivered_at"].iloc[0] == once["delivered_at"].iloc[0]
        assert pd.isna(out["delivered_at"].iloc[1]) and pd.isna(out["latency"].iloc[1])
        assert out["reason"].tolist() == [pd.NA, "delivery_failed", pd.NA]

    def test_raw_status_codes_and_unusable_events(self) -> None:
        res = results_frame([{"message_id": 1}, {"message_id": 2}])
        log = pd.DataFrame(
            {
                "message_id": ["1", "2", None, "x"],
                "status": ["1", "2", "1", "1"],
                "updated_at": ["2024-05-01 10:00:02"] * 4,
            }
        )
        out = attach_delivery(res, log)
        assert state_list(out) == ["delivered", "failed"]
        assert out.attrs["delivery"]["unusable_events"] == 2

    def test_results_read_back_from_csv(self, tmp_path: Any) -> None:
        res = results_frame([{"message_id": 1}, {"message_id": None, "state": "invalid"}])
        res.to_csv(tmp_path / "r.csv")
        back = pd.read_csv(tmp_path / "r.csv", index_col=0)
        log = status_log(
            [{"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"}]
        )
        out = attach_delivery(back, log)
        assert state_list(out) == ["delivered", "invalid"]
        assert out["latency"].iloc[0] == pd.Timedelta(seconds=2)

    def test_wrong_arguments(self) -> None:
        res = results_frame([{"message_id": 1}])
        with pytest.raises(InputError, match="message_id"):
            attach_delivery(res.drop(columns="message_id"), status_log([]))
        with pytest.raises(InputError, match="updated_at"):
            attach_delivery(res, status_log([]).drop(columns="updated_at"))
        with pytest.raises(InputError, match="DataFrame"):
            attach_delivery(res, 42)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="no callback log directory"):
            attach_delivery(res, "/nonexistent/logdir")


def _reference_final(events: list[tuple[int, int, int, str]]) -> dict[int, str]:
    """The slow, obvious rule: per id, the event with the greatest (updated, received,
    position in the log)."""
    best: dict[int, tuple[tuple[int, int, int], str]] = {}
    for pos, (mid, upd, rec, status) in enumerate(events):
        key = (upd, rec, pos)
        if mid not in best or key > best[mid][0]:
            best[mid] = (key, status)
    return {mid: status for mid, (_, status) in best.items()}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 8),
            st.integers(0, 5),
            st.integers(0, 3),
            st.sampled_from(["delivered", "failed"]),
        ),
        max_size=30,
    ),
    st.lists(st.sampled_from(["accepted", "rejected", "invalid"]), min_size=6, max_size=6),
)
def test_attach_delivery_matches_the_obvious_rule(
    events: list[tuple[int, int, int, str]], states: list[str]
) -> None:
    res = results_frame([{"message_id": i + 1, "state": s} for i, s in enumerate(states)])
    log = status_log(
        [
            {
                "message_id": mid,
                "status": status,
                "updated_at": pd.Timestamp("2024-05-01 10:00:00") + pd.Timedelta(seconds=upd),
                "received_at": T0 + pd.Timedelta(seconds=rec),
            }
            for mid, upd, rec, status in events
        ]
    )
    out = attach_delivery(res, log)
    final = _reference_final(events)
    expected = [final.get(i + 1, s) if s == "accepted" else s for i, s in enumerate(states)]
    assert state_list(out) == expected
    assert out.attrs["delivery"]["messages"] == len(final)


# ------------------------------------------------------------------ summaries


def summary_frame() -> pd.DataFrame:
    res = results_frame(
        [
            {"phone": "584141111111", "message_id": 1, "batch": 1},
            {"phone": "584241111112", "message_id": 2, "batch": 1},
            {"phone": "584121111113", "message_id": 3, "batch": 1},
            {"phone": "584161111114", "message_id": 4, "batch": 2},
            {"phone": "584261111115", "message_id": 5, "batch": 2, "state": "rejected"},
            {
                "phone": None,
                "message_id": None,
                "batch": None,
                "state": "invalid",
                "sent_at": None,
            },
            {"phone": "584141111116", "message_id": 6, "batch": 2, "state": "unknown"},
            {
                "phone": "584141111117",
                "message_id": 7,
                "batch": 2,
                "sent_at": T0 + pd.Timedelta(hours=3),
            },
        ]
    )
    log = status_log(
        [
            {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:04"},
            {"message_id": 2, "status": "delivered", "updated_at": "2024-05-01 10:00:10"},
            {"message_id": 3, "status": "failed", "updated_at": "2024-05-01 10:00:06"},
        ]
    )
    return attach_delivery(res, log)


class TestDeliverySummary:
    def test_by_operator(self) -> None:
        table = delivery_summary(summary_frame(), by="operator")
        assert table.index.name == "operator"
        assert [str(i) for i in table.index] == ["Movistar", "Digitel", "Movilnet", "(none)"]
        movistar = table.loc["Movistar"]
        assert movistar["rows"] == 4
        assert movistar["sent"] == 3  # 414 x2 + 424, the unknown one is not "sent"
        assert movistar["delivered"] == 2 and movistar["pending"] == 1
        assert movistar["unknown"] == 1
        assert movistar["delivery_rate"] == pytest.approx(2 / 3)
        # latencies 4 s and 10 s: the median is an observed one, the smaller
        assert movistar["median_latency_s"] == 4.0
        assert table.loc["Digitel", "failure_rate"] == 1.0
        assert table.loc["Movilnet", "rejected"] == 1
        assert np.isnan(table.loc["(none)", "delivery_rate"])
        assert table.loc["(none)", "invalid"] == 1

    def test_columns_and_total(self) -> None:
        table = delivery_summary(summary_frame(), by="operator", total=True)
        assert list(table.columns) == [
            "rows",
            "invalid",
            "suppressed",
            "scheduled",
            "cancelled",
            "rejected",
            "unknown",
            "sent",
            "delivered",
            "failed",
            "pending",
            "delivery_rate",
            "failure_rate",
            "pending_rate",
            "median_latency_s",
            "p90_latency_s",
        ]
        total = table.loc["total"]
        assert total["rows"] == 8 and total["sent"] == 5
        assert total["delivered"] == 2 and total["failed"] == 1 and total["pending"] == 2
        assert total["delivery_rate"] == pytest.approx(0.4)
        assert total["p90_latency_s"] == 10.0  # observed, not 9.4 interpolated
        counts = table.drop(index="total")[["rows", "sent", "delivered"]].sum()
        assert counts.tolist() == [8, 5, 2]

    def test_by_batch_keeps_the_unsent_group(self) -> None:
        table = delivery_summary(summary_frame(), by="batch")
        assert table.loc[1, "sent"] == 3 and table.loc[2, "sent"] == 2
        assert table["rows"].tolist() == [3, 4, 1]
        assert pd.isna(table.index[-1])

    def test_by_hour_is_caracas_local(self) -> None:
        table = delivery_summary(summary_frame(), by="hour")
        assert table.loc[10, "rows"] == 6 and table.loc[13, "rows"] == 1
        utc = delivery_summary(summary_frame(), by="hour", tz="UTC")
        assert {14, 17} <= set(utc.index.dropna())

    def test_by_campaign_column_or_attrs(self) -> None:
        frame = summary_frame()
        with pytest.raises(InputError, match="campaign"):
            delivery_summary(frame, by="campaign")
        frame.attrs["campaign"] = "mayo"
        assert delivery_summary(frame, by="campaign").index.tolist() == ["mayo"]
        frame["campaign"] = ["a"] * 4 + ["b"] * 4
        table = delivery_summary(frame, by="campaign")
        assert table["rows"].tolist() == [4, 4]
        assert table.loc["a", "delivered"] == 2

    def test_by_several_keys_and_none(self) -> None:
        frame = summary_frame()
        table = delivery_summary(frame, by=["batch", "operator"], total=True)
        assert table.index.names == ["batch", "operator"]
        assert table.loc[(1, "Movistar"), "delivered"] == 2
        assert table.loc[("total", ""), "rows"] == 8
        overall = delivery_summary(frame, by=None)
        assert overall.index.tolist() == ["all"]
        assert overall.loc["all", "sent"] == 5

    def test_by_prefix_and_column(self) -> None:
        frame = summary_frame()
        assert delivery_summary(frame, by="prefix").loc["414", "rows"] == 3
        assert delivery_summary(frame, by="line").loc["584140000001", "delivered"] == 2
        with pytest.raises(InputError, match="nope"):
            delivery_summary(frame, by="nope")

    def test_empty_frame(self) -> None:
        table = delivery_summary(results_frame([]), by="operator")
        assert len(table) == 0


def test_operator_of() -> None:
    phones = pd.Series(
        [
            "584121234567",
            "584141234567",
            "584241234567",
            "584161234567",
            "584261234567",
            "584151234567",
            "12025550100",
            None,
            "584221234567",
        ],
        dtype="string",
    )
    assert operator_of(phones).astype(str).tolist() == [
        "Digitel",
        "Movistar",
        "Movistar",
        "Movilnet",
        "Movilnet",
        "other",
        "other",
        "(none)",
        "Digitel",
    ]
    assert operator_of(phones, codes=True).tolist()[:6] == [
        "412",
        "414",
        "424",
        "416",
        "426",
        pd.NA,
    ]


# ------------------------------------------------------------------------ replies


class TestReplies:
    def test_attributed_to_the_last_send_before(self) -> None:
        res = results_frame(
            [
                {"phone": "584141111111", "message_id": 1, "text": "first", "sent_at": T0},
                {
                    "phone": "584141111111",
                    "message_id": 2,
                    "text": "second",
                    "sent_at": T0 + pd.Timedelta(hours=1),
                },
                {"phone": "584241111112", "message_id": 3, "text": "other", "sent_at": T0},
            ],
            index=["a", "b", "c"],
        )
        inbound = inbound_log(
            [
                {"phone": "584141111111", "received_at": T0 + pd.Timedelta(minutes=30)},
                {"phone": "584141111111", "received_at": T0 + pd.Timedelta(hours=2)},
                {"phone": "+58 424-111.11.12", "received_at": T0 + pd.Timedelta(minutes=1)},
                {"phone": "584141111111", "received_at": T0 - pd.Timedelta(minutes=1)},
                {"phone": "584169999999", "received_at": T0 + pd.Timedelta(minutes=1)},
            ]
        )
        out = replies(res, inbound)
        assert out["row"].tolist() == ["a", "b", "c", None, None]
        assert out["message_id"].tolist() == [1, 2, 3, pd.NA, pd.NA]
        assert out["sent_text"].tolist() == ["first", "second", "other", pd.NA, pd.NA]
        assert out["reply_delay"].iloc[0] == pd.Timedelta(minutes=30)
        assert out["batch"].tolist()[:3] == [1, 1, 1]
        assert list(out.index) == list(inbound.index)
        assert list(out.columns[:5]) == list(inbound.columns)

    def test_failed_and_rejected_sends_are_skipped(self) -> None:
        res = results_frame(
            [
                {"phone": "584141111111", "message_id": 1, "state": "delivered", "sent_at": T0},
                {
                    "phone": "584141111111",
                    "message_id": 2,
                    "state": "failed",
                    "sent_at": T0 + pd.Timedelta(minutes=10),
                },
                {
                    "phone": "584141111111",
                    "message_id": 3,
                    "state": "rejected",
                    "sent_at": T0 + pd.Timedelta(minutes=11),
                },
            ]
        )
        inbound = inbound_log(
            [{"phone": "584141111111", "received_at": T0 + pd.Timedelta(minutes=20)}]
        )
        assert replies(res, inbound)["message_id"].tolist() == [1]

    def test_within_and_naive_times(self) -> None:
        res = results_frame([{"phone": "584141111111", "message_id": 1, "sent_at": T0}])
        inbound = inbound_log(
            [
                {"phone": "584141111111", "received_at": T0 + pd.Timedelta(hours=1)},
                {"phone": "584141111111", "received_at": T0 + pd.Timedelta(days=5)},
            ]
        )
        out = replies(res, inbound, within="1D")
        assert out["message_id"].tolist() == [1, pd.NA]
        # naive received_at is Caracas time: 10:30 local is 14:30 UTC, after the send
        naive = inbound.assign(received_at=pd.Series(["2024-05-01 10:30:00"] * 2))
        assert replies(res, naive)["message_id"].tolist() == [1, 1]

    def test_empty_inbound(self) -> None:
        res = results_frame([{"phone": "584141111111", "message_id": 1}])
        out = replies(res, inbound_log([]))
        assert len(out) == 0 and "message_id" in out.columns


# ----------------------------------------------------------------------- opt-outs

OPT_OUT_TEXTS = [
    ("BAJA", "BAJA"),
    ("baja", "BAJA"),
    ("Bája por favor", "BAJA"),
    ("por favor denme de BAJA.", "BAJA"),
    ("¡¡Baja!!", "BAJA"),
    ("bajar de peso", None),
    ("STOP", "STOP"),
    ("stop.", "STOP"),
    ("Stopped", None),
    ("SALIR", "SALIR"),
    ("sálir", "SALIR"),
    ("CANCELAR suscripción", "CANCELAR"),
    ("ya cancelaron", None),
    ("No más", "NO MAS"),
    ("NO MÁS mensajes", "NO MAS"),
    ("nomas", None),
    ("Gracias, ya pagué", None),
    ("", None),
    ("😀 STOP 😀", "STOP"),
]


@pytest.mark.parametrize(("text", "keyword"), OPT_OUT_TEXTS)
def test_opt_out_keywords(text: str, keyword: str | None) -> None:
    found = opt_outs(inbound_log([{"phone": "584141111111", "text": text}]))
    assert found["keyword"].tolist() == ([keyword] if keyword else [])


def test_opt_outs_one_row_per_phone_first_message() -> None:
    inbound = inbound_log(
        [
            {"phone": "584141111111", "text": "salir", "received_at": T0 + pd.Timedelta(2, "h")},
            {"phone": "0414-111.11.11", "text": "STOP", "received_at": T0 + pd.Timedelta(1, "h")},
            {"phone": "584241111112", "text": "hola", "received_at": T0},
            {"phone": "584261111113", "text": "Baja", "received_at": T0},
        ]
    )
    out = opt_outs(inbound)
    assert list(out.columns) == ["phone", "keyword", "text", "received_at"]
    assert out["phone"].tolist() == ["584261111113", "584141111111"]
    assert out["keyword"].tolist() == ["BAJA", "STOP"]
    assert out["phone"].dtype == "string"
    assert str(out["received_at"].dtype) == "datetime64[us, UTC]"


def test_opt_outs_match_modes_and_custom_keywords() -> None:
    inbound = inbound_log(
        [
            {"phone": "584141111111", "text": "Baja por favor"},
            {"phone": "584141111112", "text": "quiero la baja"},
            {"phone": "584141111113", "text": " baja! "},
            {"phone": "584141111114", "text": "ALTO"},
        ]
    )
    assert opt_outs(inbound)["phone"].str.slice(-1).tolist() == ["1", "2", "3"]
    assert opt_outs(inbound, match="start")["phone"].str.slice(-1).tolist() == ["1", "3"]
    assert opt_outs(inbound, match="exact")["phone"].str.slice(-1).tolist() == ["3"]
    assert opt_outs(inbound, keywords=["alto"])["keyword"].tolist() == ["alto"]
    assert opt_outs(inbound, keywords=[]).empty
    with pytest.raises(InputError, match="match"):
        opt_outs(inbound, match="fuzzy")  # type: ignore[arg-type]


def test_default_keywords_cover_the_issue() -> None:
    assert {"STOP", "BAJA", "SALIR", "CANCELAR"} <= set(DEFAULT_OPT_OUT_KEYWORDS)


# -------------------------------------------------------------------------- plots


@pytest.fixture
def no_pyplot_figures() -> Any:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before  # the plots never touch pyplot's global state


def delivered_frame(n: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = rng.choice(["412", "414", "416", "424", "426"], n)
    sent = T0 + pd.to_timedelta(rng.integers(0, 1200, n), unit="s")
    res = results_frame(
        [
            {"phone": f"58{c}{i:07d}", "message_id": i + 1, "sent_at": s}
            for i, (c, s) in enumerate(zip(codes, sent, strict=True))
        ]
    )
    updated = (sent + pd.to_timedelta(rng.exponential(6, n), unit="s")).floor("s")
    local = updated.tz_convert("America/Caracas").tz_localize(None)
    keep = rng.random(n) < 0.9
    status = np.where(rng.random(n) < 0.85, "delivered", "failed")
    log = status_log(
        [
            {"message_id": i + 1, "status": status[i], "updated_at": local[i]}
            for i in range(n)
            if keep[i]
        ]
    )
    return attach_delivery(res, log)


@pytest.mark.usefixtures("no_pyplot_figures")
class TestPlots:
    def test_delivery_by_operator(self) -> None:
        fig = plots.plot_delivery_by_operator(delivered_frame())
        assert isinstance(fig, Figure)
        (ax,) = fig.axes
        assert ax.get_title() == "Delivery by operator"
        labels = [t.get_text() for t in ax.get_yticklabels()]
        frame = delivered_frame()
        counts = operator_of(frame["phone"]).value_counts().loc[lambda n: n > 0]
        assert sorted(labels) == sorted(f"{name} ({counts[name]})" for name in counts.index)
        assert labels[-1].startswith("Movistar")  # the first operator on top
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "delivered",
            "failed",
            "pending",
        ]
        assert ax.get_xlabel() == "messages"
        # the rate labels are the delivery rates of the summary
        table = delivery_summary(delivered_frame(), by="operator")
        rates = sorted(t.get_text().strip() for t in ax.texts)
        assert rates == sorted(f"{r:.0%} delivered" for r in table["delivery_rate"])

    def test_by_operator_normalized(self) -> None:
        fig = plots.plot_delivery_by_operator(delivered_frame(), normalize=True)
        ax = fig.axes[0]
        widths = {}
        for patch in ax.patches:
            y = round(patch.get_y(), 3)
            widths[y] = widths.get(y, 0) + patch.get_width()
        assert all(w == pytest.approx(1.0) for w in widths.values())

    def test_latency(self) -> None:
        frame = delivered_frame()
        fig = plots.plot_latency(frame)
        (ax,) = fig.axes
        assert ax.get_title() == "Delivery latency"
        assert ax.get_xlabel() == "seconds from send to delivery"
        assert sum(p.get_height() for p in ax.patches) == (frame["state"] == "delivered").sum()
        median = frame["latency"].dropna().dt.total_seconds().median()
        assert ax.lines[0].get_xdata()[0] == pytest.approx(median)

    def test_latency_in_minutes_for_slow_deliveries(self) -> None:
        frame = delivered_frame()
        frame["latency"] = frame["latency"] * 100
        ax = plots.plot_latency(frame, log=True).axes[0]
        assert ax.get_xlabel() == "minutes from send to delivery"
        assert ax.get_yscale() == "log"

    def test_deliveries_over_time(self) -> None:
        frame = delivered_frame()
        fig = plots.plot_deliveries_over_time(frame, freq="5min")
        (ax,) = fig.axes
        assert ax.get_title() == "Deliveries over time"
        assert ax.get_xlabel() == "time (America/Caracas, UTC-04:00)"
        assert ax.get_ylabel() == "messages per 5 minutes"
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == {"sent", "delivered", "failed"}
        # every sent message is counted once (the last point repeats the last bin)
        assert lines["sent"].get_ydata()[:-1].sum() == 300
        assert lines["delivered"].get_ydata()[:-1].sum() == (frame["state"] == "delivered").sum()
        # the first bin starts at 10:00 Caracas time (the axis holds its wall-clock times)
        first = matplotlib.dates.num2date(ax.get_lines()[0].get_xdata(orig=False)[0])
        assert (first.hour, first.minute) == (10, 0)
        cumulative = plots.plot_deliveries_over_time(frame, cumulative=True).axes[0]
        assert cumulative.get_ylabel() == "messages so far"
        assert max(cumulative.lines[0].get_ydata()) == 300

    def test_report_figure_and_png(self, tmp_path: Any) -> None:
        fig = plots.delivery_report_figure(delivered_frame())
        assert [ax.get_title() for ax in fig.axes] == [
            "Delivery by operator",
            "Delivery latency",
            "Deliveries over time",
        ]
        fig.savefig(tmp_path / "report.png", dpi=50)
        assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_into_given_axes(self) -> None:
        fig = Figure()
        ax = fig.add_subplot()
        assert plots.plot_latency(delivered_frame(), ax=ax) is fig
        sub = Figure().subfigures(1, 2)[0]
        ax = sub.add_subplot()
        assert isinstance(plots.plot_delivery_by_operator(delivered_frame(), ax=ax), Figure)

    def test_nothing_to_draw(self) -> None:
        frame = attach_delivery(
            results_frame([{"message_id": 1, "state": "invalid"}]), status_log([])
        )
        for plot in (
            plots.plot_delivery_by_operator,
            plots.plot_latency,
            plots.plot_deliveries_over_time,
        ):
            fig = plot(frame)
            assert isinstance(fig, Figure)
            assert fig.axes[0].texts[0].get_text().startswith("no ")

    def test_bad_freq(self) -> None:
        with pytest.raises(InputError, match="fixed bin width"):
            plots.plot_deliveries_over_time(delivered_frame(), freq="ME")

    def test_needs_attach_delivery(self) -> None:
        with pytest.raises(InputError, match="attach_delivery"):
            plots.plot_latency(results_frame([{"message_id": 1}]))

    def test_reachable_from_the_package(self) -> None:
        import massiva_frames as mf

        assert mf.plot_latency is plots.plot_latency
        with pytest.raises(AttributeError):
            mf.plot_nothing  # noqa: B018


# -------------------------------------------------- end to end: sandbox -> receiver


def _wait_for_status(logdir: Any, expected: int, timeout: float = 15.0) -> pd.DataFrame:
    import time

    from massiva_frames.receiving import read_callbacks

    deadline = time.monotonic() + timeout
    while True:
        log = read_callbacks(logdir, kind="status")
        if log["message_id"].nunique() >= expected or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def _results_from_response(resp: Any, sent_at: pd.Timestamp) -> pd.DataFrame:
    """The results rows send() would make of one response (docs/architecture.md)."""
    return results_frame(
        [
            {
                "phone": c.num_celular,
                "text": c.texto,
                "state": "accepted" if c.accepted else "rejected",
                "reason": None if c.accepted else "rejected_by_api",
                "message_id": c.id,
                "sid": c.sid,
                "request_status": resp.status,
                "sent_at": sent_at,
            }
            for c in resp.celulares
        ]
    )


def test_sandbox_callbacks_reach_a_receiver_and_attach_marks_them(tmp_path: Any) -> None:
    import requests

    from massiva_frames.receiving import receiver
    from massiva_frames.sandbox import sandbox
    from massiva_frames.wire.client import MassivaClient

    logdir = tmp_path / "logs"
    phones = [f"58{code}{i:07d}" for i, code in enumerate(["414", "424", "412", "416"] * 10)]
    phones.append("584151234567")  # not an operator the API knows: rejected
    with (
        receiver(logdir) as rc,
        sandbox(
            status_url=rc.url,
            inbound_url=rc.url,
            callback_delay=0.1,
            fail_ratio=0.3,
            reply_ratio=0.5,
            seed=11,
        ) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
    ):
        sent_at = pd.Timestamp.now(tz="UTC")
        results = _results_from_response(client.send_batch(phones, "Hola, prueba"), sent_at)
        accepted = int((results["state"] == "accepted").sum())
        assert accepted == 40
        assert sb.wait_callbacks(timeout=20)
        # a callback for a message this run never sent, straight to the receiver
        stray = {"id": "999", "estatus": "1", "fecha_actualizacion": "2024-01-01 12:00:00"}
        assert requests.get(rc.url, params=stray, timeout=5).status_code == 200
        status = _wait_for_status(logdir, accepted + 1)
        truth = sb.messages()

    final = attach_delivery(results, logdir)  # the LOGDIR itself
    assert len(status) >= accepted + 1
    by_id = final.set_index("message_id")["state"].astype(str)
    for outcome in ("delivered", "failed"):
        expected = set(truth.loc[truth["final"] == outcome, "id"])
        assert expected, outcome
        assert set(by_id[by_id == outcome].index) == expected
    assert (final["state"] == "accepted").sum() == 0
    assert state_list(final)[-1] == "rejected"
    assert final.attrs["delivery"]["unmatched_ids"] == 1
    delivered = final[final["state"] == "delivered"]
    assert delivered["line"].notna().all()
    assert (delivered["latency"] >= pd.Timedelta(0)).all()
    assert (delivered["latency"] < pd.Timedelta(minutes=1)).all()

    summary = delivery_summary(final, by="operator", total=True)
    assert summary.loc["total", "sent"] == 40
    assert summary.loc["total", "delivered"] == (truth["final"] == "delivered").sum()

    # the sandbox's replies come back as inbound callbacks: each is attributed to the
    # one message sent to its phone, and BAJA/STOP replies make the opt-out list
    got = replies(final, logdir)
    assert len(got) > 0
    phone_to_id = dict(zip(final["phone"], final["message_id"], strict=True))
    assert got["message_id"].tolist() == [phone_to_id[p] for p in got["phone"]]
    stops = got[got["text"].str.strip().str.upper().isin(["BAJA", "STOP"])]
    assert len(stops) > 0
    assert set(opt_outs(logdir)["phone"]) == set(stops["phone"])


def test_validate_accepts_the_opt_out_list(tmp_path: Any) -> None:
    from massiva_frames.prepare.validation import validate

    inbound = inbound_log(
        [
            {"phone": "584141111111", "text": "BAJA"},
            {"phone": "584241111112", "text": "gracias"},
        ]
    )
    stops = opt_outs(inbound)
    campaign = pd.DataFrame(
        {"telefono": ["0414-111.11.11", "0424 1111112"], "nombre": ["Ana", "Luis"]}
    )
    for suppress in (stops, stops["phone"], tmp_path / "stops.parquet"):
        if not isinstance(suppress, pd.DataFrame | pd.Series):
            stops.to_parquet(suppress)
        checked = validate(campaign, phone="telefono", template="Hola {nombre}", suppress=suppress)
        assert [str(s) for s in checked["state"]] == ["suppressed", "ready"]
        assert checked["reason"].tolist()[0] == "opted_out"


def test_send_then_attach_marks_exactly_the_sandbox_outcomes(tmp_path: Any) -> None:
    """The whole path: send() a messy campaign, callbacks over HTTP, attach_delivery."""
    from pathlib import Path

    from massiva_frames.receiving import receiver
    from massiva_frames.sandbox import sandbox
    from massiva_frames.sending.campaign import send
    from massiva_frames.wire.client import MassivaClient

    sample = Path(__file__).resolve().parents[1] / "data" / "samples" / "campaign.csv"
    campaign = pd.read_csv(sample, dtype=str, keep_default_na=False).head(300)
    campaign.index = pd.Index([f"c{i}" for i in range(len(campaign))])
    template = "Hola {nombre}, tu saldo es {saldo}. Paga antes del {vence}."
    logdir = tmp_path / "logs"
    with (
        receiver(logdir) as rc,
        sandbox(status_url=rc.url, callback_delay=0.2, fail_ratio=0.25, seed=5) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
    ):
        results = send(campaign, client=client, phone="telefono", template=template, progress=False)
        accepted = int((results["state"] == "accepted").sum())
        assert accepted > 250
        assert sb.wait_callbacks(timeout=30)
        _wait_for_status(logdir, accepted)
        truth = sb.messages()

    final = attach_delivery(results, logdir)
    assert final.index.equals(campaign.index)
    assert isinstance(final["state"].dtype, pd.CategoricalDtype)
    sent = final[final["message_id"].notna()]
    outcome = dict(zip(truth["id"], truth["final"], strict=True))
    for mid, state in zip(sent["message_id"], sent["state"], strict=True):
        if mid in outcome:  # accepted by the sandbox
            assert state == outcome[mid], mid
        else:
            assert state == "rejected"
    assert set(truth["final"]) == {"delivered", "failed"}
    unchanged = results["state"] != "accepted"
    assert (
        final.loc[unchanged, "state"]
        .astype(str)
        .equals(results.loc[unchanged, "state"].astype(str))
    )
    table = delivery_summary(final, by="operator", total=True)
    assert table.loc["total", "delivered"] == (truth["final"] == "delivered").sum()
    assert table.loc["total", "failed"] == (truth["final"] == "failed").sum()
    assert table.loc["total", "rows"] == len(campaign)
