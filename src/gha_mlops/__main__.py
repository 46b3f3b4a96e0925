from __future__ import annotations

from gha_mlops.cli import main

if __name__ == "__main__":
    main()
