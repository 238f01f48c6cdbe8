#!/usr/bin/env bash
# Create (or reuse) .venv and install Oyez with the extras named in $OYEZ_EXTRAS.
# Sourced by quickstart.sh and test.sh; safe to run again (pip skips what is installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${OYEZ_VENV:-$ROOT/.venv}"
EXTRAS="${OYEZ_EXTRAS:-worker,convert}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Oyez needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# torch==2.13.0 (convert extra) resolves to the CPU wheel; keep pip quiet but show errors.
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[$EXTRAS]"
# The speaker encoder's weights (diarization) ship in the resemblyzer wheel, whose own runtime
# dependencies (librosa, webrtcvad) conversion does not need: install the file's package alone.
case ",$EXTRAS," in
  *,convert,*) "$VENV/bin/python" -m pip install --quiet --no-deps "resemblyzer==0.1.4" ;;
esac
