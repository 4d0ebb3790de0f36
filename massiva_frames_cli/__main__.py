"""``python -m massiva_frames_cli``: the ``massiva-frames`` command line, started light."""

from __future__ import annotations

import sys

from . import main

__all__: list[str] = []

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
