"""Helpers for license tests: keys signed by the development issuer or a throwaway one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from license_proxy.issuer import IssuerKeyPair, development_key_pair
from license_proxy.keys import issue_key

ALL_FEATURES = ["batch", "streaming", "timestamps", "punctuation"]


def dev_key(
    *,
    days: float = 30,
    now: datetime | None = None,
    customer: str = "Acme Test",
    license_id: str | None = None,
    pair: IssuerKeyPair | None = None,
    not_before: datetime | None = None,
    limits: dict[str, float] | None = None,
    features: list[str] | None = None,
) -> str:
    return issue_key(
        pair or development_key_pair(),
        customer=customer,
        now=now or datetime.now(UTC),
        valid_for=timedelta(days=days),
        features=ALL_FEATURES if features is None else features,
        limits=limits,
        license_id=license_id,
        not_before=not_before,
    )
