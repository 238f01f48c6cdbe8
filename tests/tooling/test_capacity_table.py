"""The capacity table in the README is the operator's (``oyez_operator/capacity.json``, written by
``python -m bench.capacity --write``): same tiers, same figures, same measured-or-seed marks."""

from __future__ import annotations

import re
from pathlib import Path

from oyez_operator import catalog

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_rows() -> dict[str, tuple[float, str]]:
    text = README.read_text()
    table = text.split("| tier | audio hours per hour per worker | source |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        tier, value, source = (cell.strip() for cell in line.strip("|").split("|", 2))
        rows[re.sub(r" \(CPU\)$", "", tier)] = (float(value), source)
    return rows


def test_the_readme_shows_the_operators_capacity_table() -> None:
    rows = readme_rows()
    assert set(rows) == set(catalog.CAPACITY_TABLE["tiers"]) == {*catalog.TIER_ORDER, catalog.CPU_TIER}
    for tier, entry in catalog.CAPACITY_TABLE["tiers"].items():
        value, source = rows[tier]
        assert value == entry["audio_hours_per_hour"], tier
        kind = re.match(r"measured|seed", source)
        assert kind and entry["source"].startswith(kind.group()), f"{tier}: measured or seed"
        assert catalog.DEFAULT_CAPACITY_AUDIO_HOURS_PER_HOUR[tier] == value


def test_every_figure_says_where_it_comes_from() -> None:
    for tier, entry in catalog.CAPACITY_TABLE["tiers"].items():
        assert entry["source"].startswith(("measured: ", "seed")), tier
        assert entry["audio_hours_per_hour"] > 0, tier
