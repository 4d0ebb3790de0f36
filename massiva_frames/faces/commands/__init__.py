"""Subcommands of the ``massiva-frames`` command line, one module each."""

__all__: list[str] = []
