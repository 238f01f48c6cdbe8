"""HTTP surface of the reference license server (see :mod:`license_proxy.protocol`)."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from license_proxy.clock import Clock
from license_proxy.keys import LicenseExpired, LicenseKeyError, TrustPolicy, verify_key
from license_proxy.protocol import HEADER_LICENSE_ID, HEADER_SIGNATURE, USAGE_PATH, VALIDATE_PATH
from license_proxy.server.store import LicenseServerStore
from license_proxy.state_store import key_digest
from license_proxy.terms import iso
from license_proxy.usage_schema import UsageBatch, usage_signature
from oyez.http_auth import key_from_authorization
from oyez.logs import get_logger

MAX_USAGE_BODY_BYTES = 4 * 1024 * 1024
_log = get_logger("license_server")


def build_server_app(*, store: LicenseServerStore, policy: TrustPolicy, clock: Clock) -> FastAPI:
    app = FastAPI(title="Oyez license server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post(VALIDATE_PATH)
    async def validate(request: Request) -> JSONResponse:
        key = key_from_authorization(request.headers.get("authorization"))
        if key is None:
            return JSONResponse({"status": "invalid", "reason": "KEY_MISSING"}, status_code=401)
        now = clock.now()
        try:
            terms = verify_key(key, policy, now)
        except LicenseExpired as exc:
            return JSONResponse({"status": "expired", "reason": exc.message}, status_code=403)
        except LicenseKeyError as exc:
            return JSONResponse(
                {"status": "invalid", "reason": f"{exc.reason}: {exc.message}"}, status_code=401
            )
        revoked = await asyncio.to_thread(store.revocation_reason, terms.license_id)
        if revoked is not None:
            _log.info("Validation refused: license revoked", license_id=terms.license_id)
            return JSONResponse(
                {"status": "revoked", "license_id": terms.license_id, "reason": revoked}, status_code=403
            )
        await asyncio.to_thread(store.remember_key, terms.license_id, key_digest(key), terms.customer, now)
        _log.info("License validated", license_id=terms.license_id)
        return JSONResponse(
            {
                "status": "active",
                "license_id": terms.license_id,
                "terms": terms.public_view(),
                "checked_at": iso(now),
            }
        )

    @app.post(USAGE_PATH)
    async def usage(request: Request) -> JSONResponse:
        license_id = request.headers.get(HEADER_LICENSE_ID, "")
        signature = request.headers.get(HEADER_SIGNATURE, "")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_USAGE_BODY_BYTES:
                return JSONResponse({"error": "usage batch too large"}, status_code=413)
        digests = await asyncio.to_thread(store.key_digests, license_id) if license_id else []
        if not any(hmac.compare_digest(usage_signature(bytes(body), d), signature) for d in digests):
            return JSONResponse(
                {"error": "unknown license or bad signature; validate the license first"}, status_code=401
            )
        try:
            batch = UsageBatch.model_validate_json(bytes(body))
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid usage batch", "details": exc.errors()[:5]}, status_code=422
            )
        if batch.license_id != license_id:
            return JSONResponse({"error": "batch license_id differs from the header"}, status_code=422)
        stored = await asyncio.to_thread(store.record_batch, batch, clock.now())
        _log.info(
            "Usage batch received", batch_id=batch.batch_id, events=len(batch.events), duplicate=not stored
        )
        return JSONResponse(
            {
                "batch_id": batch.batch_id,
                "accepted": len(batch.events) if stored else 0,
                "duplicate": not stored,
            }
        )

    return app
