"""The ``gha-mlops`` command (``python -m gha_mlops`` too).

``--version`` is answered here, before the command line's parser (click) is imported: it is
what scripts and CI logs call most often, and click alone costs more than the whole answer.
"""

from __future__ import annotations

import sys

from gha_mlops import __version__

_VERSION_FLAGS = (["--version"], ["-V"])


def main() -> None:
    if sys.argv[1:] in _VERSION_FLAGS:
        sys.stdout.write(f"gha-mlops {__version__}\n")
        return
    from gha_mlops.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
