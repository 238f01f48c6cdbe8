#!/usr/bin/env python3
"""Refresh values.schema.json's speechDeployment.spec from the CRD model (the one source of truth).

.venv/bin/python scripts/gen-values-schema.py          # rewrite values.schema.json
.venv/bin/python scripts/gen-values-schema.py --check  # exit 1 if it is stale (tests do this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oyez_operator.crd_schema import values_spec_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "values.schema.json"
SPEC_DESCRIPTION = "Further SpeechDeployment spec fields (the CRD's spec without license); see crds/"


def refreshed(current: dict[str, Any]) -> dict[str, Any]:
    updated = json.loads(json.dumps(current))
    spec = {"description": SPEC_DESCRIPTION, **values_spec_schema()}
    updated["properties"]["speechDeployment"]["properties"]["spec"] = spec
    return updated


def main() -> int:
    current = json.loads(SCHEMA_FILE.read_text())
    updated = refreshed(current)
    if "--check" in sys.argv:
        if updated != current:
            print("values.schema.json is stale: run scripts/gen-values-schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(json.dumps(updated, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
