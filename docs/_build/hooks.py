"""Build hooks for the documentation site (MkDocs ``hooks:``; not part of the site).

The notebooks in ``notebooks/`` are executed at build time, each in a fresh temporary
folder, against the sandbox they start themselves, by a real Jupyter kernel running the
interpreter that runs MkDocs. A cell that raises fails the build. The executed copies are
handed to mkdocs-jupyter, which renders them with their outputs; the repository's
notebooks are never written to.

The figures of the Analytics guide are drawn at build time too, by the package's own
plotting functions, from the sample data in ``data/samples/``; the delivery report also
at two other sizes: a 30-row campaign (rows of the sample) and a synthetic campaign of a
million rows (``large_campaign.py``, beside this file).

``MASSIVA_DOCS_EXECUTE=0`` renders the notebooks without running them (for a quick
``mkdocs serve`` while writing); the build that CI runs always executes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority, get_plugin_logger
from mkdocs.structure.files import File, Files

__all__ = ["on_files", "on_page_content", "on_post_build", "on_build_error"]

log = get_plugin_logger("notebooks")

HERE = Path(__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SAMPLES = ROOT / "data" / "samples"
#: the Analytics guide's figures: file name -> plotting function of massiva_frames
FIGURES = {
    "delivery-report.png": "delivery_report_figure",
    "delivery-by-operator.png": "plot_delivery_by_operator",
    "latency.png": "plot_latency",
    "deliveries-over-time.png": "plot_deliveries_over_time",
}
#: the delivery report at two sizes: file name -> rows
SIZES = {"delivery-report-30-rows.png": 30, "delivery-report-1m-rows.png": 1_000_000}
KERNEL = "massiva-frames-docs"
#: seconds a single cell may run before the build fails
CELL_TIMEOUT = 180
#: the HTML that stands where a live notebook shows an interactive widget
WIDGET_NOTE = (
    '<div class="admonition note massiva-widget-note"><p class="admonition-title">'
    "Interactive widget</p><p>In a running notebook, the <code>{name}</code> form is "
    'displayed here. The <a href="../../guide/widgets/">Widgets guide</a> shows it in '
    "a real browser.</p></div>"
)

_state: dict[str, Any] = {}


@contextlib.contextmanager
def _kernel_environment(base: Path) -> Iterator[None]:
    """A kernelspec for this interpreter, and the environment the notebooks expect."""
    spec = base / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    changes = {
        "JUPYTER_PATH": str(base / "jupyter"),
        "MPLBACKEND": "Agg",
        # the kernel imports the package from this checkout even when it is not installed
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "MASSIVA_USUARIO": None,
        "MASSIVA_CLAVE": None,
        "MASSIVA_BASE_URL": None,
    }
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _widget_name(source: str) -> str:
    for name in ("SendWidget", "DeliveryDashboard"):
        if name in source:
            return name
    return "widget"


def _static_outputs(nb: Any) -> None:
    """Replace interactive widget views (they need a live kernel) by a short note.

    A progress bar drawn as a widget is dropped: its text twin on stderr stays.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" not in data:
                kept.append(output)
                continue
            name = _widget_name(cell.source)
            if name == "widget":
                continue
            output["data"] = {"text/html": WIDGET_NOTE.format(name=name)}
            kept.append(output)
        cell["outputs"] = kept
    nb.metadata.pop("widgets", None)


def _execute(source: Path, target: Path, workdir: Path) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT,
        startup_timeout=60,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    started = time.monotonic()
    try:
        client.execute()
    except CellExecutionError as exc:
        raise PluginError(f"notebooks/{source.name} failed at build time:\n{exc}") from exc
    _static_outputs(nb)
    nbformat.write(nb, target)
    log.info("executed notebooks/%s in %.1f s", source.name, time.monotonic() - started)


def _figures(folder: Path) -> list[str]:
    """Draw the Analytics guide's figures from the sample results and callback logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import massiva_frames as mf

    folder.mkdir(parents=True)
    results = pd.read_parquet(SAMPLES / "results.parquet")
    final = mf.attach_delivery(results, SAMPLES / "callbacks")
    names = []
    for name, function in FIGURES.items():
        figure = getattr(mf, function)(final)
        figure.savefig(folder / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        names.append(name)
    for name, rows in SIZES.items():
        started = time.monotonic()
        figure = mf.delivery_report_figure(_campaign_of(rows, results), title=None)
        figure.savefig(folder / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        names.append(name)
        log.info("drew %s (%s rows) in %.1f s", name, f"{rows:,}", time.monotonic() - started)
    return names


def _campaign_of(rows: int, sample: Any) -> Any:
    """Results with delivery attached, ``rows`` long: the sample's first rows with its
    three foreign numbers (the API rejects them) for a small campaign, the synthetic
    campaign of ``large_campaign.py`` for a large one."""
    import importlib.util

    import pandas as pd

    import massiva_frames as mf

    if rows <= len(sample):
        rejected = sample[sample["state"] == "rejected"]
        small = pd.concat([sample.drop(rejected.index).iloc[: rows - len(rejected)], rejected])
        return mf.attach_delivery(small, SAMPLES / "callbacks")
    spec = importlib.util.spec_from_file_location("large_campaign", HERE / "large_campaign.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results, status = module.large_campaign(rows)
    return mf.attach_delivery(results, status)


@event_priority(100)  # before mkdocs-jupyter wraps the notebook files
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Execute each notebook into a temporary folder and add it to the site's files."""
    base = Path(tempfile.mkdtemp(prefix="massiva-docs-"))
    _state["base"] = base
    src_dir = base / "src"
    (src_dir / "notebooks").mkdir(parents=True)
    execute = os.environ.get("MASSIVA_DOCS_EXECUTE", "1") != "0"
    sources = sorted(NOTEBOOKS.glob("*.ipynb"))
    if execute:
        with _kernel_environment(base):
            for source in sources:
                workdir = base / "run" / source.stem
                workdir.mkdir(parents=True)
                _execute(source, src_dir / "notebooks" / source.name, workdir)
    else:
        log.info("MASSIVA_DOCS_EXECUTE=0: the notebooks are rendered without outputs")
        for source in sources:
            shutil.copy(source, src_dir / "notebooks" / source.name)
    for name in _figures(src_dir / "guide" / "figures"):
        files.append(
            File(
                f"guide/figures/{name}",
                src_dir=str(src_dir),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    for source in sources:
        files.append(
            File(
                f"notebooks/{source.name}",
                src_dir=str(src_dir),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


#: a Sphinx role left in a docstring, as mkdocstrings renders it: ``:func:`~a.b.c```
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|exc|data|obj):<code>(~?)([\w.]+)</code>")


def _role(match: re.Match[str]) -> str:
    name = match[2].rsplit(".", 1)[-1] if match[1] else match[2]
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Show the docstrings' Sphinx roles (``:func:`~x.send```) as plain code names."""
    return _ROLE.sub(_role, html)


def _cleanup() -> None:
    base = _state.pop("base", None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


def on_post_build(config: MkDocsConfig) -> None:
    """Remove the temporary folder of executed notebooks."""
    _cleanup()


def on_build_error(error: Exception) -> None:
    """Remove the temporary folder of executed notebooks when the build fails."""
    _cleanup()
