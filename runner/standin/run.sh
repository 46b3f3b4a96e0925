#!/usr/bin/env bash
# The tests' stand-in for GitHub's runner (`run.sh --jitconfig CONFIG`), see runner.py.
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/runner.py" "$@"
