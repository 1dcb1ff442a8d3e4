"""The ``dubbing`` console script (typer + rich) over :mod:`dubbing.client`.

``main()`` is the entry point; ``app`` is the typer application (for tests and for
embedding). Run ``dubbing --help`` for the commands.
"""

from ._app import app, main

__all__ = ["app", "main"]
