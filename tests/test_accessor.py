"""The ``df.massiva`` accessor and ``df.pipe``: thin faces over the same functions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import massiva_frames.faces.accessor  # noqa: F401 - registers df.massiva
from massiva_frames.prepare.validation import validate
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.wire.client import MassivaClient

FRAME = pd.DataFrame(
    {"tel": ["0414-1234567", "0212 5551234", "0424 1234567"], "nombre": ["Ana", "Luis", "Eva"]},
    index=pd.Index([10, 20, 30], name="cliente"),
)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=100, callback_delay=60) as server:
        yield server


def test_validate_is_the_function() -> None:
    via_accessor = FRAME.massiva.validate(phone="tel", template="Hola {nombre}")
    pd.testing.assert_frame_equal(
        via_accessor, validate(FRAME, phone="tel", template="Hola {nombre}")
    )
    assert list(via_accessor["state"]) == ["ready", "invalid", "ready"]


def test_plan_splits_planner_and_validation_options() -> None:
    planned = FRAME.massiva.plan(phone="tel", template="Hola {nombre}", max_phones=1, dedupe=None)
    assert list(planned["batch"].astype("float").fillna(-1)) == [0, -1, 1]
    with pytest.raises(TypeError):
        FRAME.massiva.plan(phone="tel", template="Hola", not_an_option=1)


def test_send_through_the_accessor_and_pipe(sb: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
        results = FRAME.massiva.send(
            client=client, phone="tel", template="Hola {nombre}", journal=journal, progress=False
        )
        piped = FRAME.pipe(
            send,
            client=client,
            phone="tel",
            template="Hola {nombre}",
            journal=journal,
            progress=False,
        )
    assert list(results["state"]) == ["accepted", "invalid", "accepted"]
    pd.testing.assert_frame_equal(piped, results)  # the second call sent nothing
    assert len(sb.messages()) == 2
    joined = FRAME.join(results[["state", "message_id"]])
    assert list(joined.columns) == ["tel", "nombre", "state", "message_id"]
    assert joined.index.equals(FRAME.index)


def test_accessor_on_a_frame_without_the_columns() -> None:
    from massiva_frames.errors import InputError

    with pytest.raises(InputError, match="tel"):
        pd.DataFrame({"x": [1]}).massiva.validate(phone="tel", template="Hola")
