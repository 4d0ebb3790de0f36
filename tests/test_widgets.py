"""SendWidget and DeliveryDashboard, driven as a notebook user would (no browser).

Each test sets control values and clicks buttons, then looks at the widgets' children,
their values and the state they expose, against a real sandbox on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
import pytest

from massiva_frames.errors import InputError
from massiva_frames.faces.widgets import TEMPLATE_CHOICE, DeliveryDashboard, SendWidget
from massiva_frames.receiving import read_callbacks, receiver
from massiva_frames.sandbox import sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.wire.client import MassivaClient

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture
def sb() -> Iterator[Any]:
    with sandbox(clave=PASSWORD, credits=100, callback_delay=0.1, fail_ratio=0.0) as server:
        yield server


@pytest.fixture
def client(sb: Any) -> Iterator[MassivaClient]:
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as c:
        yield c


@pytest.fixture
def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "telefono": ["0414-1234567", "0424 7654321", "+58 412 5550001", "12345"],
            "nombre": ["Ana", "Luis", "Marta", "Pedro"],
            "mensaje": ["uno", "dos", "tres", "cuatro"],
        },
        index=pd.Index([10, 11, 12, 13], name="customer"),
    )


def all_text(widget: Any) -> str:
    """Every string value in a widget tree (what a user could read on screen)."""
    parts = []
    for name in ("value", "description", "placeholder"):
        value = getattr(widget, name, None)
        if isinstance(value, str):
            parts.append(value)
    for child in getattr(widget, "children", ()):
        parts.append(all_text(child))
    return "\n".join(parts)


def shown(widget: Any) -> bool:
    return widget.layout.display != "none"


def test_full_send_through_the_widget(
    sb: Any, client: MassivaClient, customers: pd.DataFrame, tmp_path: Path
) -> None:
    w = SendWidget(customers, client, phone="telefono")
    assert isinstance(w, widgets.VBox)
    assert w.text_column.value == TEMPLATE_CHOICE
    w.template.value = "Hola {nombre}, tu pedido va en camino"

    # live preview of the first rendered rows, and the validation verdict
    assert "Hola Ana, tu pedido va en camino" in w.preview.value
    assert "preview-table" in w.preview.value
    assert w.validated is not None and int(w.validated["valid"].sum()) == 3
    assert "failure-cases" in w.validation.value and "12345" in w.validation.value
    assert "3 of 4 rows ready" in w.cost.value and "3 credit(s) needed" in w.cost.value
    assert "GSM-7" in w.cost.value

    w.refresh_credits_button.click()
    assert "credits: 100" in w.credits_label.value

    # first click: confirmation with the counts; nothing sent yet
    assert not shown(w.confirm_box)
    w.send_button.click()
    assert shown(w.confirm_box)
    assert "3 of 4 rows will be sent: 3 message(s) in 1 request(s)" in w.confirm_text.value
    assert "Credits needed: 3; available: 100" in w.confirm_text.value
    assert len(sb.messages()) == 0

    w.confirm_button.click()
    assert not shown(w.confirm_box)
    assert w.error.value == ""
    results = w.results
    assert results is not None
    assert list(results.index) == [10, 11, 12, 13]
    assert results["state"].astype(str).tolist() == ["accepted"] * 3 + ["invalid"]
    assert "results-table" in w.results_html.value
    assert w.progress.value == w.progress.max == 3
    messages = sb.messages()
    assert sorted(messages["phone"]) == ["584125550001", "584141234567", "584247654321"]
    assert set(messages["text"]) == {
        f"Hola {n}, tu pedido va en camino" for n in ("Ana", "Luis", "Marta")
    }
    assert set(results["message_id"].dropna()) == set(messages["id"])

    # and a way to save them
    w.save_path.value = str(tmp_path / "out.parquet")
    w.save_button.click()
    assert "saved 4 rows" in w.save_status.value
    saved = pd.read_parquet(tmp_path / "out.parquet")
    assert saved["state"].astype(str).tolist() == results["state"].astype(str).tolist()


def test_text_column_and_dry_run(sb: Any, client: MassivaClient, customers: pd.DataFrame) -> None:
    w = SendWidget(customers, client, phone="telefono", text="mensaje")
    assert w.template.disabled
    assert "uno" in w.preview.value
    w.dry_run.value = True
    w.send_button.click()
    assert "Dry run" in w.confirm_text.value
    w.confirm_button.click()
    assert w.error.value == "", w.error.value
    assert w.results is not None and len(w.results) == 4
    assert len(sb.messages()) == 0
    assert sb.credits() == 100


def test_cancel_sends_nothing(sb: Any, client: MassivaClient, customers: pd.DataFrame) -> None:
    w = SendWidget(customers, client, phone="telefono", template="Hola {nombre}")
    w.send_button.click()
    assert shown(w.confirm_box)
    w.cancel_button.click()
    assert not shown(w.confirm_box)
    assert "cancelled" in w.status.value
    assert w.results is None
    assert len(sb.messages()) == 0


def test_changing_a_control_withdraws_the_confirmation(
    client: MassivaClient, customers: pd.DataFrame
) -> None:
    w = SendWidget(customers, client, phone="telefono", template="Hola {nombre}")
    w.send_button.click()
    assert shown(w.confirm_box)
    w.template.value = "Adios {nombre}"
    assert not shown(w.confirm_box)
    assert "Adios Ana" in w.preview.value


@pytest.mark.parametrize("template", ["Hola {apellido}", "Hola {nombre"])
def test_invalid_template(
    sb: Any, client: MassivaClient, customers: pd.DataFrame, template: str
) -> None:
    w = SendWidget(customers, client, phone="telefono")
    w.template.value = template
    assert "massiva-error" in w.error.value
    assert "Traceback" not in all_text(w)
    assert w.preview.value == "" and w.validated is None
    w.send_button.click()
    assert not shown(w.confirm_box)
    assert "massiva-error" in w.error.value
    assert w.results is None
    assert len(sb.messages()) == 0


def test_insufficient_credits(sb: Any, client: MassivaClient, customers: pd.DataFrame) -> None:
    sb.set_credits(2)
    w = SendWidget(customers, client, phone="telefono", template="Hola {nombre}")
    w.send_button.click()
    assert "Credits needed: 3; available: 2" in w.confirm_text.value
    w.confirm_button.click()
    assert "InsufficientCreditsError" in w.error.value
    assert "credits" in w.error.value
    assert "Traceback" not in all_text(w)
    assert w.results is None
    assert len(sb.messages()) == 0
    assert not w.send_button.disabled
    assert not shown(w.progress)


def test_authentication_error(sb: Any, customers: pd.DataFrame) -> None:
    wrong = "not-" + PASSWORD + "-at-all"
    with MassivaClient(sb.usuario, wrong, sb.base_url) as bad:
        w = SendWidget(customers, bad, phone="telefono", template="Hola {nombre}")
        w.refresh_credits_button.click()
        assert "AuthenticationError" in w.error.value
        assert "wrong user or password" in w.error.value
        w.send_button.click()
        assert not shown(w.confirm_box)
        assert "AuthenticationError" in w.error.value
        # a dry run does not need the account
        w.dry_run.value = True
        w.send_button.click()
        assert shown(w.confirm_box)
        w.dry_run.value = False
        assert not shown(w.confirm_box)
        # a real send is refused readably, even from a stale Confirm
        w.confirm_button.click()
        assert "AuthenticationError" in w.error.value
    text = all_text(w)
    assert wrong not in text and PASSWORD not in text
    assert "Traceback" not in text
    assert w.results is None
    assert len(sb.messages()) == 0


def test_save_needs_a_known_format(client: MassivaClient, customers: pd.DataFrame) -> None:
    w = SendWidget(customers, client, phone="telefono", template="Hola {nombre}")
    assert w.save_button.disabled
    w.dry_run.value = True
    w.send_button.click()
    w.confirm_button.click()
    w.save_path.value = "results.xlsx"
    w.save_button.click()
    assert ".parquet or .csv" in w.error.value


def test_dashboard_refresh_after_callbacks(tmp_path: Path, customers: pd.DataFrame) -> None:
    logdir = tmp_path / "logs"
    with (
        receiver(logdir) as rc,
        sandbox(
            status_url=rc.url, inbound_url=rc.url, callback_delay=0.3, fail_ratio=0.0, seed=1
        ) as server,
        MassivaClient(server.usuario, server.clave, server.base_url) as c,
    ):
        results = send(
            customers, client=c, phone="telefono", template="Hola {nombre}", progress=False
        )
        dash = DeliveryDashboard(results, logs=logdir)
        assert isinstance(dash, widgets.VBox)
        assert dash.error.value == "", dash.error.value
        assert dash.summary is not None
        assert int(dash.summary["pending"].sum()) == 3
        assert int(dash.summary["delivered"].sum()) == 0
        assert dash.inbound_html.value == ""

        assert server.wait_callbacks(timeout=10)
        server.send_inbound("584141234567", "BAJA por favor")
        assert server.wait_callbacks(timeout=10)
        deadline = time.monotonic() + 10
        while len(read_callbacks(logdir, kind="status")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        dash.refresh_button.click()
    assert dash.error.value == "", dash.error.value
    assert int(dash.summary["delivered"].sum()) == 3
    assert int(dash.summary["pending"].sum()) == 0
    assert "delivery-summary" in dash.summary_html.value
    assert dash.delivery is not None
    assert (dash.delivery["state"].astype(str) == "delivered").sum() == 3
    images = dash.plots.children
    assert len(images) == 3
    assert all(bytes(img.value).startswith(b"\x89PNG") for img in images)
    # the reply is attributed to Ana's message, and it is an opt-out
    assert "<b>opt-outs</b>: 1" in dash.inbound_html.value
    assert "BAJA por favor" in dash.inbound_html.value


def test_dashboard_shows_a_missing_log_readably(tmp_path: Path, customers: pd.DataFrame) -> None:
    results = pd.DataFrame({"phone": ["584141234567"], "state": ["accepted"]})
    dash = DeliveryDashboard(results, logs=tmp_path / "nothing-here")
    assert "massiva-error" in dash.error.value
    assert "Traceback" not in all_text(dash)


def test_wrong_arguments_raise_input_error(customers: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="'nope'"):
        SendWidget(customers, None, phone="nope")
    with pytest.raises(InputError, match="DataFrame"):
        SendWidget(customers.to_dict(), None)  # type: ignore[arg-type]


def test_nothing_valid_to_send(sb: Any, client: MassivaClient) -> None:
    bad = pd.DataFrame({"telefono": ["123", "0212 5551234"], "nombre": ["A", "B"]})
    w = SendWidget(bad, client, template="Hola {nombre}")
    assert w.phone_column.value == "telefono"  # guessed from the column name
    assert "0 of 2 rows ready" in w.cost.value
    w.send_button.click()
    assert "no valid rows" in w.error.value
    assert not shown(w.confirm_box)
    assert len(sb.messages()) == 0
