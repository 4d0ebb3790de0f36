"""The public surface: ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import massiva_frames


def test_top_level_all_is_sorted_and_importable() -> None:
    names = massiva_frames.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert getattr(massiva_frames, name) is not None, name


def _modules() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(massiva_frames.__path__, "massiva_frames."):
        found.append(info.name)
    return sorted(found)


@pytest.mark.parametrize("module_name", _modules())
def test_every_module_declares_all(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ lists missing {name}"


def test_public_names_of_public_modules_are_exported() -> None:
    """Every name a public module exports (except the CLI plumbing) is at the top level."""
    exported = set(massiva_frames.__all__)
    # plumbing whose names are reached through their module, by design
    skip = {"massiva_frames.faces.cli", "massiva_frames.wire.protocol", "massiva_frames.faces.demo"}
    missing = []
    for module_name in _modules():
        short = module_name.rsplit(".", 1)[-1]
        if module_name in skip or short.startswith("_") or ".commands" in module_name:
            continue
        if module_name.count(".") > 1 and not module_name.endswith("__init__"):
            # submodules of subpackages export through their package
            continue
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            if name.isupper() or name in {"mask", "error_for_status"}:
                continue
            if name not in exported:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"not exported at the top level: {missing}"


def test_lazy_import_is_cheap() -> None:
    import subprocess
    import sys

    heavy = ["requests", "lxml", "ipywidgets", "matplotlib", "waitress", "phonenumbers"]
    code = f"import massiva_frames, sys; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_registers_the_accessor() -> None:
    import subprocess
    import sys

    code = (
        "import massiva_frames, pandas as pd; "
        "df = pd.DataFrame({'t': ['0414-1234567'], 'm': ['Hola']}); "
        "print(df.massiva.validate(phone='t', text='m')['phone'].iloc[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "584141234567"


def test_validate_stays_callable_after_every_module_is_imported() -> None:
    """A submodule named like a public verb would shadow it once imported."""
    for module_name in _modules():
        importlib.import_module(module_name)
    df = __import__("pandas").DataFrame({"tel": ["04141234567"], "msg": ["Hola"]})
    assert massiva_frames.validate(df, phone="tel", text="msg")["valid"].all()
    with massiva_frames.sandbox() as sb:
        assert sb.base_url.startswith("http://127.0.0.1:")


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError):
        massiva_frames.does_not_exist  # noqa: B018
