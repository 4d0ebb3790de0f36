"""The notebooks in notebooks/ run clean, top to bottom, under a real Jupyter kernel.

The kernel is this interpreter (a kernelspec written to a temporary ``JUPYTER_PATH``),
so it sees the same installed package as the tests. Each notebook runs in its own
temporary folder; every file it writes stays there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "massiva-frames-test"
#: committed notebooks carry no outputs beyond this many bytes (a few short texts at most)
MAX_OUTPUT_BYTES = 2_000


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JUPYTER_PATH holding a kernelspec that runs this very interpreter."""
    base = tmp_path_factory.mktemp("jupyter")
    spec = base / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    return base


def test_the_three_notebooks_exist() -> None:
    names = [nb.stem for nb in NOTEBOOKS]
    assert names == ["01-quickstart", "02-delivery-analytics", "03-etl-pipeline"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    size = sum(
        len(json.dumps(cell.get("outputs", []))) for cell in nb.cells if cell.cell_type == "code"
    )
    assert size <= MAX_OUTPUT_BYTES, f"{path.name}: strip the outputs before committing"
    assert all(cell.get("execution_count") is None for cell in nb.cells if cell.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(
    path: Path, kernel_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel imports the package from this checkout even when it is not installed
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    for name in ("MASSIVA_USUARIO", "MASSIVA_CLAVE", "MASSIVA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=120,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    # every code cell ran, in order
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
