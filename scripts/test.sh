#!/usr/bin/env bash
# Tests: set up if needed, then pytest. Arguments go to pytest (e.g. -m slow, -k loader).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
