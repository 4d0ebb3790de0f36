"""The ``massiva-frames`` console script's entry point, kept outside ``massiva_frames``.

``import massiva_frames`` imports pandas to register the ``df.massiva`` accessor, which
takes most of a second. The command line does not use the accessor, and Python imports a
package before any of its modules, so the console script starts here: when this package
is loaded first, ``massiva_frames`` leaves the accessor out (unless pandas is already
imported), ``massiva-frames --help`` loads no pandas, numpy, pyarrow or requests, and each
command imports what it needs when it runs (:mod:`massiva_frames.faces.cli`).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``massiva-frames`` (the console script); returns the exit code."""
    from massiva_frames.faces.cli import main as run

    return run(argv)
