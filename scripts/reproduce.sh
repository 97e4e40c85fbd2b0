#!/usr/bin/env bash
# Main job: set up if needed, then train the quick experiments and write results/. Arguments go to
# scripts/reproduce.py (--full, --only EXPERIMENT, --force, --data-path PATH).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"  # hide TensorFlow's C++ log lines (set 0 to see them)
exec "$repo/.venv/bin/python" "$repo/scripts/reproduce.py" "$@"
