#!/usr/bin/env bash
# Tests: set up if needed, then pytest. Arguments go to pytest (e.g. -m slow, -k loader).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"  # hide TensorFlow's C++ log lines (set 0 to see them)
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
