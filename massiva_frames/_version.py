"""The package's version, in one place (read by ``pyproject.toml`` and the HTTP client)."""

__version__ = "0.2.0"

__all__ = ["__version__"]
