#!/usr/bin/env bash
# Tests: set up if needed, then pytest. Without arguments, the everyday tier (about 5 minutes on 2 cores);
# --all runs every test, the ones marked full too (CI). Other arguments go to pytest (-k loader, -x, -m slow).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"  # hide TensorFlow's C++ log lines (set 0 to see them)
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
