"""Notebook widgets: a send form and a delivery dashboard.

Both are ipywidgets composites (``VBox`` subclasses) that only wire controls to the
public functions — :func:`~massiva_frames.prepare.validation.validate` (preview and summary),
``send(..., dry_run=True)`` (the counts to confirm), :meth:`MassivaClient.credits`,
:func:`~massiva_frames.sending.campaign.send`,
:func:`~massiva_frames.analytics.delivery.attach_delivery`,
:func:`~massiva_frames.analytics.summary.delivery_summary` and the plots. They hold no business
rule of their own.

Tables are rendered into ``HTML`` widgets and plots into ``Image`` widgets (PNG), so the
state is plain widget values that a test, a notebook and a browser all see alike. A
button's work runs in the kernel's own thread: the kernel is busy while a send runs, and
the progress bar still moves because widget updates are sent as they happen.

Errors never reach the notebook as tracebacks: every callback catches them and writes a
readable message, with credentials masked, into the widget's error area.
"""

from __future__ import annotations

import functools
import html
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..errors import InputError, MassivaError, mask

if TYPE_CHECKING:
    from ..wire.client import MassivaClient

__all__ = ["DeliveryDashboard", "SendWidget"]

#: the text-column choice meaning "fill the template instead"
TEMPLATE_CHOICE = "(template)"

#: rows of a table shown in a widget; the full frame stays reachable from code
MAX_TABLE_ROWS = 50

#: up to this many rows the template re-validates on every keystroke; above, when the
#: editor loses focus (validating a million rows takes a couple of seconds)
LIVE_ROWS = 50_000

#: the columns of replies() the dashboard shows
REPLY_COLUMNS = ("phone", "text", "received_at", "message_id", "sent_text")

_STYLE = (
    "<style>.massiva-table{border-collapse:collapse;font-size:12px;margin:4px 0}"
    ".massiva-table th,.massiva-table td{padding:2px 8px;text-align:left;"
    "border-bottom:1px solid #ddd}</style>"
)


def _table(frame: pd.DataFrame, css: str, *, index: bool = True, float_format: Any = None) -> str:
    """Render a frame as an HTML table with a CSS class (values escaped)."""
    shown = frame.head(MAX_TABLE_ROWS).copy()
    # a blank cell for a missing value (Arrow strings and nullable ints print "<NA>")
    for name in shown.columns[(shown.isna().any()).to_numpy()]:
        if not pd.api.types.is_float_dtype(shown[name]):
            shown[name] = shown[name].astype(object).where(shown[name].notna(), "")
    table = shown.to_html(
        classes=["massiva-table", css],
        index=index,
        border=0,
        escape=True,
        na_rep="",
        float_format=float_format,
    )
    if len(frame) > len(shown):
        table += f"<p><i>first {len(shown)} of {len(frame)} rows</i></p>"
    return table


def _message(kind: str, text: str) -> str:
    colours = {"error": "#b00020", "info": "#1a5fb4", "ok": "#26a269"}
    return (
        f'<div class="massiva-{kind}" style="color:{colours[kind]};white-space:pre-wrap">'
        f"{html.escape(text)}</div>"
    )


def _figure_png(figure: Any) -> bytes:
    """PNG bytes of a matplotlib Figure (the plots build pyplot-free Figures)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


class _Guarded:
    """Mixin: run a callback, turning any exception into a readable message."""

    error: widgets.HTML
    _secrets: Callable[[], list[str | None]]

    def _run(self, action: Callable[[], None]) -> bool:
        self.error.value = ""
        try:
            action()
        except MassivaError as exc:
            self._show_error(f"{type(exc).__name__}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - the widget must never show a traceback
            self._show_error(f"Unexpected error ({type(exc).__name__}): {exc}")
            return False
        return True

    def _show_error(self, text: str) -> None:
        self.error.value = _message("error", mask(text, self._secrets()))


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(method)
    def wrapper(self: _Guarded, *args: Any) -> None:
        self._run(lambda: method(self, *args))

    return wrapper


class SendWidget(_Guarded, widgets.VBox):  # type: ignore[misc]
    """A form that validates, previews and sends a DataFrame.

    Pick the phone column and either a text column or a template (``{column}``
    placeholders), check the live preview and the validation summary, then click
    **Send**: a confirmation step shows the counts (rows, requests, credits needed and
    available) before **Confirm** sends. The results appear as a table and stay
    reachable as :attr:`results`.

    Parameters
    ----------
    df : pandas.DataFrame
        The rows to send.
    client : MassivaClient, optional
        The API client. Default: one built from the ``MASSIVA_*`` environment variables.
    phone, text, template : str, optional
        Initial choices: the phone column, the text column, the template.
    journal : str or path, optional
        Journal file passed to :func:`send` (makes re-sends idempotent).
    campaign : str, optional
        Campaign name passed to :func:`send`.
    preview_rows : int
        Rows shown in the live preview.
    **validate_options
        Passed to :func:`validate` and :func:`send` (``blank``, ``country``, ``long_text``, ...).

    Attributes
    ----------
    results : pandas.DataFrame or None
        The results frame of the last send (or dry run).
    validated : pandas.DataFrame or None
        The validated frame for the current choices.

    Examples
    --------
    >>> w = SendWidget(df, client, phone="telefono", template="Hola {nombre}")  # doctest: +SKIP
    >>> w  # doctest: +SKIP
    >>> w.results.state.value_counts()  # doctest: +SKIP
    """

    def __init__(
        self,
        df: pd.DataFrame,
        client: MassivaClient | None = None,
        *,
        phone: str | None = None,
        text: str | None = None,
        template: str | None = None,
        journal: str | os.PathLike[str] | None = None,
        campaign: str | None = None,
        preview_rows: int = 5,
        **validate_options: Any,
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise InputError(f"SendWidget takes a DataFrame, got {type(df).__name__}")
        self.df = df
        self._client = client
        self.journal = journal
        self.campaign = campaign
        self.preview_rows = preview_rows
        self.validate_options = validate_options
        self.results: pd.DataFrame | None = None
        self.validated: pd.DataFrame | None = None
        self.available_credits: int | None = None

        columns = [str(c) for c in df.columns]
        if phone is None:
            phone = next(
                (c for c in columns if "phone" in c.lower() or "tel" in c.lower()),
                columns[0] if columns else None,
            )
        text_options = [TEMPLATE_CHOICE, *columns]
        for what, name in (("phone", phone), ("text", text)):
            if name is not None and name not in columns:
                raise InputError(f"{what} column {name!r} is not in the frame")

        self.phone_column = widgets.Dropdown(options=columns, value=phone, description="Phone")
        self.text_column = widgets.Dropdown(
            options=text_options, value=text or TEMPLATE_CHOICE, description="Text"
        )
        self.template = widgets.Textarea(
            value=template or "",
            placeholder="Hola {nombre}, ...",
            description="Template",
            continuous_update=len(df) <= LIVE_ROWS,
            layout=widgets.Layout(width="90%"),
        )
        self.preview = widgets.HTML()
        self.validation = widgets.HTML()
        self.cost = widgets.HTML()
        self.credits_label = widgets.HTML("credits: not checked yet")
        self.refresh_credits_button = widgets.Button(description="Refresh credits", icon="refresh")
        self.dry_run = widgets.Checkbox(value=False, description="Dry run (send nothing)")
        self.send_button = widgets.Button(
            description="Send", button_style="primary", icon="paper-plane"
        )
        self.confirm_text = widgets.HTML()
        self.confirm_text.add_class("massiva-confirm")
        self.confirm_button = widgets.Button(description="Confirm", button_style="danger")
        self.cancel_button = widgets.Button(description="Cancel")
        self.confirm_box = widgets.VBox(
            [self.confirm_text, widgets.HBox([self.confirm_button, self.cancel_button])],
            layout=widgets.Layout(display="none"),
        )
        self.progress = widgets.IntProgress(
            value=0, min=0, max=1, description="Sending", layout=widgets.Layout(display="none")
        )
        self.error = widgets.HTML()
        self.status = widgets.HTML()
        self.results_html = widgets.HTML()
        self.save_path = widgets.Text(value="results.parquet", description="Save to")
        self.save_button = widgets.Button(description="Save results", icon="save", disabled=True)
        self.save_status = widgets.HTML()

        super().__init__(
            [
                widgets.HTML(_STYLE + "<b>Massiva send</b>"),
                widgets.HBox([self.phone_column, self.text_column]),
                self.template,
                self.preview,
                self.validation,
                self.cost,
                widgets.HBox([self.credits_label, self.refresh_credits_button]),
                widgets.HBox([self.dry_run, self.send_button]),
                self.confirm_box,
                self.progress,
                self.error,
                self.status,
                self.results_html,
                widgets.HBox([self.save_path, self.save_button, self.save_status]),
            ]
        )
        self.add_class("massiva-send-widget")

        for control in (self.phone_column, self.text_column, self.template):
            control.observe(self._on_change, names="value")
        # a confirmation is for the choices it showed: any change withdraws it
        self.dry_run.observe(lambda _change: self._hide_confirm(), names="value")
        self.refresh_credits_button.on_click(self._on_refresh_credits)
        self.send_button.on_click(self._on_send)
        self.confirm_button.on_click(self._on_confirm)
        self.cancel_button.on_click(self._on_cancel)
        self.save_button.on_click(self._on_save)
        self._refresh_inputs()

    # -- helpers -----------------------------------------------------------------------

    def _secrets(self) -> list[str | None]:
        return [getattr(self._client, "_clave", None), os.environ.get("MASSIVA_CLAVE")]

    @property
    def client(self) -> MassivaClient:
        """The API client (built from the environment on first use when none was given)."""
        if self._client is None:
            from ..wire.client import MassivaClient

            self._client = MassivaClient()
        return self._client

    def _choices(self) -> dict[str, Any]:
        """The phone/text/template arguments for validate() and send()."""
        text = self.text_column.value
        if text == TEMPLATE_CHOICE:
            if not self.template.value.strip():
                raise InputError("choose a text column or write a template")
            return {"phone": self.phone_column.value, "template": self.template.value}
        return {"phone": self.phone_column.value, "text": text}

    def _on_change(self, _change: Any = None) -> None:
        self._hide_confirm()
        self._refresh_inputs()

    def _refresh_inputs(self) -> None:
        self.template.disabled = self.text_column.value != TEMPLATE_CHOICE
        self.validated = None
        self.preview.value = ""
        self.validation.value = ""
        self.cost.value = ""
        if self.text_column.value == TEMPLATE_CHOICE and not self.template.value.strip():
            self.error.value = _message("info", "Choose a text column or write a template.")
            return
        self._run(self._validate)

    def _validate(self) -> None:
        from ..prepare.validation import failure_cases, validation_summary
        from ..prepare.validation import validate as validate_frame

        # docs/protocol.md §1 limits are checked by validate(); the widget only shows its verdict.
        checked = validate_frame(self.df, **self._choices(), **self.validate_options)
        self.validated = checked
        shown = ["phone", "text", "valid", "state", "reason", "encoding", "segments"]
        self.preview.value = "<b>Preview</b>" + _table(
            checked[shown].head(self.preview_rows), "preview-table"
        )
        summary = validation_summary(checked)
        parts = ["<b>Validation</b>", _table(summary, "validation-summary", index=False)]
        failures = failure_cases(checked)
        if len(failures):
            parts += [
                "<b>Rows that will not be sent</b>",
                _table(failures, "failure-cases", index=False),
            ]
        self.validation.value = "".join(parts)

        ready = checked[checked["valid"].astype(bool)]
        encodings = ", ".join(f"{k} {v}" for k, v in ready["encoding"].value_counts().items() if v)
        self.cost.value = (
            f"<div class='massiva-cost'>{len(ready)} of {len(checked)} rows ready · "
            f"{self.messages_ready} message(s), {int(ready['segments'].fillna(1).sum())} "
            f"segment(s) · encodings: {html.escape(encodings) or '-'} · "
            f"{self.messages_ready} credit(s) needed</div>"
        )

    @property
    def messages_ready(self) -> int:
        """Messages the valid rows make (a row split into parts makes several)."""
        if self.validated is None:
            return 0
        ready = self.validated[self.validated["valid"].astype(bool)]
        return int(ready["parts"].fillna(1).sum())

    def _hide_confirm(self) -> None:
        self.confirm_box.layout.display = "none"

    def _call_send(self, *, dry_run: bool, progress: Any = False) -> pd.DataFrame:
        from ..sending.campaign import send

        results: pd.DataFrame = send(
            self.df,
            client=self.client,
            **self._choices(),
            journal=self.journal,
            campaign=self.campaign,
            dry_run=dry_run,
            progress=progress,
            **self.validate_options,
        )
        return results

    def _refresh_credits(self) -> int:
        self.available_credits = None
        self.credits_label.value = "credits: ..."
        try:
            self.available_credits = self.client.credits()
        finally:
            shown = "?" if self.available_credits is None else self.available_credits
            self.credits_label.value = f"<span class='massiva-credits'>credits: {shown}</span>"
        return self.available_credits

    # -- callbacks ---------------------------------------------------------------------

    @_guarded
    def _on_refresh_credits(self, _button: Any = None) -> None:
        self._refresh_credits()

    @_guarded
    def _on_send(self, _button: Any = None) -> None:
        """First step: a dry run gives the counts; Confirm then sends."""
        self._hide_confirm()
        self.status.value = ""
        if self.validated is None:
            self._validate()
        assert self.validated is not None
        ready = int(self.validated["valid"].astype(bool).sum())
        if ready == 0:
            raise InputError("no valid rows to send")
        plan = self._call_send(dry_run=True).attrs["dry_run"]
        lines = [
            f"{ready} of {len(self.validated)} rows will be sent: {plan['messages']} "
            f"message(s) in {plan['requests']} request(s)."
        ]
        if plan.get("messages_scheduled_later"):
            lines.append(f"{plan['messages_scheduled_later']} message(s) are scheduled for later.")
        if self.dry_run.value:
            lines.append("Dry run: nothing will reach the provider.")
        else:
            available = self._refresh_credits()
            needed = int(plan["credits_needed"])
            lines.append(f"Credits needed: {needed}; available: {available}.")
            if needed > available:
                lines.append("Not enough credits: the provider would refuse this send.")
        self.confirm_text.value = _message("info", "\n".join(lines))
        self.confirm_box.layout.display = "flex"

    def _on_cancel(self, _button: Any = None) -> None:
        self._hide_confirm()
        self.status.value = _message("info", "Send cancelled.")

    @_guarded
    def _on_confirm(self, _button: Any = None) -> None:
        from ..errors import AccountError

        self._hide_confirm()
        self.send_button.disabled = True
        self.progress.value = 0
        self.progress.max = max(self.messages_ready, 1)
        self.progress.layout.display = "flex"

        def progress(done: int, total: int) -> None:
            # send() calls this after each request with messages done / to do
            self.progress.max = max(total, 1)
            self.progress.value = done

        try:
            results = self._call_send(dry_run=bool(self.dry_run.value), progress=progress)
        except AccountError as exc:
            # the run stopped: what was sent before is on the exception (sending.py)
            partial = getattr(exc, "results", None)
            if partial is not None:
                self.results = partial
                self._show_results(partial)
            raise
        finally:
            self.send_button.disabled = False
            self.progress.layout.display = "none"
        self.results = results
        self._show_results(results)

    def _show_results(self, results: pd.DataFrame) -> None:
        counts = results["state"].value_counts().rename_axis("state").reset_index(name="rows")
        counts = counts[counts["rows"] > 0]
        self.status.value = _message(
            "ok",
            ("Dry run: " if self.dry_run.value else "Sent: ")
            + ", ".join(f"{s} {n}" for s, n in zip(counts["state"], counts["rows"], strict=True)),
        )
        shown = [
            c for c in ("phone", "text", "state", "reason", "message_id", "sent_at") if c in results
        ]
        self.results_html.value = "<b>Results</b>" + _table(results[shown], "results-table")
        self.save_button.disabled = False

    @_guarded
    def _on_save(self, _button: Any = None) -> None:
        if self.results is None:
            raise InputError("nothing to save yet: send first")
        path = Path(self.save_path.value).expanduser()
        if path.suffix == ".parquet":
            self.results.to_parquet(path)
        elif path.suffix == ".csv":
            self.results.to_csv(path)
        else:
            raise InputError("save to a .parquet or .csv file")
        self.save_status.value = _message("ok", f"saved {len(self.results)} rows to {path}")


class DeliveryDashboard(_Guarded, widgets.VBox):  # type: ignore[misc]
    """Delivery report for a send: refresh it as callbacks arrive.

    Parameters
    ----------
    results : pandas.DataFrame
        The results frame of :func:`send`.
    logs : str or path
        The callback receiver's log folder.
    by : str
        The breakdown of the summary table.

    Attributes
    ----------
    delivery : pandas.DataFrame or None
        ``attach_delivery(results, status_log)`` at the last refresh.
    summary : pandas.DataFrame or None
        ``delivery_summary(delivery, by=by)`` at the last refresh.

    Examples
    --------
    >>> DeliveryDashboard(results, logs="callback-logs")  # doctest: +SKIP
    """

    def __init__(
        self,
        results: pd.DataFrame,
        logs: str | os.PathLike[str] = "callback-logs",
        *,
        by: str = "operator",
    ) -> None:
        self.results = results
        self.logs = Path(logs)
        self.by = by
        self.delivery: pd.DataFrame | None = None
        self.summary: pd.DataFrame | None = None
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.status = widgets.HTML()
        self.error = widgets.HTML()
        self.summary_html = widgets.HTML()
        self.plots = widgets.HBox([], layout=widgets.Layout(flex_flow="row wrap"))
        self.inbound_html = widgets.HTML()
        super().__init__(
            [
                widgets.HBox([widgets.HTML(_STYLE + "<b>Delivery</b>"), self.refresh_button]),
                self.status,
                self.error,
                self.summary_html,
                self.plots,
                self.inbound_html,
            ]
        )
        self.add_class("massiva-delivery-dashboard")
        self.refresh_button.on_click(self.refresh)
        self.refresh()

    def _secrets(self) -> list[str | None]:
        return [os.environ.get("MASSIVA_CLAVE")]

    @_guarded
    def refresh(self, _button: Any = None) -> None:
        """Re-read the callback logs and redraw the summary and the plots."""
        from ..analytics import plots
        from ..analytics.delivery import attach_delivery
        from ..analytics.inbound import opt_outs, replies
        from ..analytics.summary import delivery_summary
        from ..receiving import read_callbacks

        status = read_callbacks(self.logs, kind="status")
        delivery = attach_delivery(self.results, status)
        summary = delivery_summary(delivery, by=self.by)
        self.delivery, self.summary = delivery, summary
        counts = delivery["state"].value_counts()
        self.status.value = _message(
            "info",
            f"{len(status)} status callback(s) read · "
            + ", ".join(f"{s} {n}" for s, n in counts.items() if n),
        )
        self.summary_html.value = _table(
            summary, "delivery-summary", float_format=lambda v: f"{v:.2f}"
        )
        images = []
        for plot in (
            plots.plot_delivery_by_operator,
            plots.plot_latency,
            plots.plot_deliveries_over_time,
        ):
            images.append(widgets.Image(value=_figure_png(plot(delivery)), format="png"))
        self.plots.children = images
        inbound = read_callbacks(self.logs, kind="inbound")
        if len(inbound):
            got_replies = replies(self.results, inbound)
            got_opt_outs = opt_outs(inbound)
            self.inbound_html.value = (
                f"<b>Replies</b>: {len(got_replies)} · <b>opt-outs</b>: {len(got_opt_outs)}"
                + _table(
                    got_replies[[c for c in REPLY_COLUMNS if c in got_replies]], "replies-table"
                )
            )
        else:
            self.inbound_html.value = ""
