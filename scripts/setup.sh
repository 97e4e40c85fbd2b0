#!/usr/bin/env bash
# Idempotent set-up, shared by the README's two commands: a .venv with the pinned requirements and
# this suite installed in it; when root, Debian's graphviz (for model.png), Fashion-MNIST files,
# chromium (the test that report.html renders) and a Japanese font (the notes' quotes in the report).
# Quick when nothing changed: pip runs only when requirements.txt or a pyproject.toml did.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
  echo "setup: the suite needs Python 3.11-3.13 (tomllib; TensorFlow 2.21 wheels); '$python' is $("$python" --version 2>&1 || echo missing)." >&2
  echo "setup: set PYTHON=/path/to/python3.11 and rerun." >&2
  exit 2
fi

stamp="$venv/.installed-from"
wanted="$(cat "$repo/requirements.txt" "$repo/pyproject.toml" "$repo/verifier/pyproject.toml" | sha256sum | cut -d' ' -f1) $repo"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing the pinned requirements into $venv (about a minute the first time)"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$repo/requirements.txt"
  # The verifier first (verifier/: keras-gradcheck, import gradcheck), then the suite that depends on it.
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e "$repo/verifier" -e "$repo"
  echo "$wanted" > "$stamp"
fi

missing=()
command -v dot >/dev/null || missing+=(graphviz)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)
fc-list :lang=ja 2>/dev/null | grep -q . || missing+=(fonts-ipafont-gothic)  # the notes' Japanese in report.html
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
      || echo "setup: WARNING: could not install ${missing[*]}; without graphviz model.png falls back to" \
              "model.dot, without chromium the report's rendering test fails" >&2
  else
    echo "setup: not root, so not installing ${missing[*]} (sudo apt-get install ${missing[*]});" \
         "without graphviz, model.png falls back to model.dot; without chromium the report's rendering test fails" >&2
  fi
fi
