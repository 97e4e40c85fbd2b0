#!/usr/bin/env bash
# Main job: set up if needed, then train the quick experiments and write results/. Arguments go to
# scripts/reproduce.py (--profile full, --only EXPERIMENT, --data-path PATH).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # hide TensorFlow's C++ start-up chatter
exec "$repo/.venv/bin/python" "$repo/scripts/reproduce.py" "$@"
