#!/usr/bin/env bash
# Installs the S3-protocol test server (moto's server mode, from PyPI) into .venv-s3/ at the
# repo root, for shmpipe-store's S3 tests (sidecar/store/tests/s3.rs). Idempotent: does
# nothing when the venv already holds exactly the pinned requirements. Works from a fresh
# clone; needs python3 (>= 3.9, with venv) and access to PyPI.
#
#   scripts/install-s3-server.sh            # install / verify
#   SHMPIPE_S3_VENV=/elsewhere scripts/...  # other venv location (the tests read the same var)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SHMPIPE_S3_VENV:-$root/.venv-s3}"
req="$root/sidecar/store/tests/support/requirements-s3.txt"
python="${PYTHON:-python3}"

stamp_want="$(sha256sum "$req" | cut -d' ' -f1)"
stamp_file="$venv/.shmpipe-installed"
if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_want" ]] &&
   "$venv/bin/python" -c 'import moto.server, flask' 2>/dev/null; then
  echo "install-s3-server: $venv is up to date"
  exit 0
fi

echo "install-s3-server: installing moto into $venv"
if [[ ! -x "$venv/bin/python" ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
# The venv is build output: keep it out of git whatever the repo's .gitignore says.
printf '*\n' > "$venv/.gitignore"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
"$venv/bin/python" -c 'import moto, moto.server, flask; print("install-s3-server: moto", moto.__version__, "ready")'
echo "$stamp_want" > "$stamp_file"
