"""The kopf handlers: thin. Every event and the periodic timer run one :class:`Reconciler` round.

Run with ``oyez operator`` (or ``kopf run -m oyez_operator.handlers``); configured by
``OYEZ_OPERATOR_*`` (see :mod:`.settings`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from .crd_model import GROUP, PLURAL, VERSION
from .kube import KubeClient, KubeError
from .reconcile import Reconciler
from .settings import load_operator_settings

SETTINGS = load_operator_settings()
PREFIX = GROUP


@dataclass
class _Connection:
    """The credentials kopf logged in with, and our client built from them."""

    info: kopf.ConnectionInfo | None = None
    client: KubeClient | None = None
    reconciler: Reconciler | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def reconciler_for(self) -> Reconciler:
        if self.info is None:
            raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=5)
        if self.reconciler is None:
            self.client = KubeClient(self.info, timeout_s=SETTINGS.api_timeout_s)
            self.reconciler = Reconciler(self.client, SETTINGS)
        return self.reconciler

    async def relogin(self, info: kopf.ConnectionInfo) -> None:
        old = self.client
        self.info, self.client, self.reconciler = info, None, None
        if old is not None:
            await old.close()


def _connection(memo: Any) -> _Connection:
    """Per operator run (kopf's memo), never module-global: each run has its own loop and login."""
    connection = getattr(memo, "oyez", None)
    if connection is None:
        connection = _Connection()
        memo.oyez = connection
    return connection


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Explicit watch timeouts: a silently stalled watch is re-established (kopf #698, crate-operator).
    settings.watching.server_timeout = SETTINGS.watch_server_timeout_s
    settings.watching.client_timeout = SETTINGS.watch_client_timeout_s
    settings.watching.connect_timeout = SETTINGS.connect_timeout_s
    settings.watching.reconnect_backoff = 1.0
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)
    settings.posting.level = logging.WARNING  # our own events say what happened; no per-handler noise
    settings.execution.max_workers = 4


@kopf.on.login()
async def login(logger: kopf.Logger, memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    kube_api_url = load_operator_settings().kube_api_url  # read now: tests point each run elsewhere
    if kube_api_url:
        info: kopf.ConnectionInfo | None = kopf.ConnectionInfo(server=kube_api_url)
    else:
        info = kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
            logger=logger, **kwargs
        )
    if info is not None:
        await _connection(memo).relogin(info)
    return info


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    client = _connection(memo).client
    if client is not None:
        await client.close()


async def _reconcile(body: kopf.Body, memo: Any, logger: kopf.Logger) -> None:
    connection = _connection(memo)
    uid = body.get("metadata", {}).get("uid") or body.get("metadata", {}).get("name", "")
    lock = connection.locks.setdefault(uid, asyncio.Lock())
    async with lock:
        try:
            outcome = await connection.reconciler_for().reconcile(body)
        except KubeError as error:
            delay = 5 if error.status == 409 else 15 if error.status >= 500 or error.status == 429 else 60
            kopf.warn(body, reason="ApiError", message=str(error))
            raise kopf.TemporaryError(f"Kubernetes API: {error}", delay=delay) from error
        except (TimeoutError, aiohttp.ClientError) as error:
            raise kopf.TemporaryError(f"Kubernetes API unreachable: {error!r}", delay=15) from error
    for event_type, reason, message in outcome.events:
        kopf.event(body, type=event_type, reason=reason, message=message[:1000])
    logger.info(f"Reconciled: phase {outcome.phase}")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_on_change(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    await _reconcile(body, memo, logger)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=SETTINGS.reconcile_interval_s,
    initial_delay=SETTINGS.reconcile_initial_delay_s,
)
async def reconcile_periodically(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Follow actual state: restore children edited or deleted by hand, track rollouts and Jobs."""
    await _reconcile(body, memo, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, spec: kopf.Spec, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    name = body["metadata"]["name"]
    _connection(memo).locks.pop(body.get("metadata", {}).get("uid", ""), None)
    cache = (spec.get("model") or {}).get("cache") or {}
    if cache.get("existingClaim"):
        kept = f"the model cache claim {cache['existingClaim']} is yours and stays"
    elif cache.get("retainOnDelete", True):
        kept = f"the model cache PVC {name}-model-cache is kept (spec.model.cache.retainOnDelete)"
    else:
        kept = "the model cache PVC goes with them"
    message = f"Deleting {name}: its children go by ownerReferences; {kept}"
    logger.info(message)
    kopf.event(body, type="Normal", reason="Deleting", message=message)
