#!/usr/bin/env bash
# Installs py-lib's test runner (pytest, pinned in py-lib/tests/requirements.txt) and py-lib
# itself (`pip install ./py-lib`, which also proves the package installs) into .venv-py/ at the
# repo root. Idempotent: does nothing when the venv already holds exactly these. Needs python3
# (>= 3.9, with venv) and access to PyPI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SHMPIPE_PY_VENV:-$root/.venv-py}"
req="$root/py-lib/tests/requirements.txt"
python="${PYTHON:-python3}"

stamp_want="$(cat "$req" "$root/py-lib/pyproject.toml" "$root"/py-lib/shmpipe/*.py | sha256sum | cut -d' ' -f1)"
stamp_file="$venv/.shmpipe-installed"
if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_want" ]]; then
  echo "install-py-test: $venv is up to date"
  exit 0
fi
echo "install-py-test: installing pytest and py-lib into $venv"
if [[ ! -x "$venv/bin/python" ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
printf '*\n' > "$venv/.gitignore"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --force-reinstall --no-deps "$root/py-lib"
"$venv/bin/python" -c 'import shmpipe, pytest; print("install-py-test: shmpipe", shmpipe.__version__, "and pytest", pytest.__version__, "ready")'
echo "$stamp_want" > "$stamp_file"
