"""The wire contract between the license proxy and the license server (one source for both sides).

``POST /v1/licenses/validate`` with ``Authorization: Token <key>`` answers a
:class:`ValidationVerdict`: 200 ``active``; 403 ``revoked`` or ``expired``; 401 ``invalid``.
``POST /v1/usage`` carries a :class:`~license_proxy.usage_schema.UsageBatch`, authenticated by
``X-Oyez-License-Id`` and ``X-Oyez-Signature`` (see :func:`~license_proxy.usage_schema.usage_signature`);
200 ``{"batch_id", "accepted", "duplicate"}``; the same ``batch_id`` twice is counted once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

VALIDATE_PATH = "/v1/licenses/validate"
USAGE_PATH = "/v1/usage"
HEADER_LICENSE_ID = "X-Oyez-License-Id"
HEADER_SIGNATURE = "X-Oyez-Signature"
DEFAULT_SERVER_PORT = 6700


class ValidationVerdict(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["active", "revoked", "expired", "invalid"]
    license_id: str | None = None
    reason: str | None = None
    terms: dict[str, Any] | None = None
    checked_at: str | None = None


class UsageReceipt(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch_id: str
    accepted: int
    duplicate: bool
