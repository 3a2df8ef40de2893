"""Command line: ``tusserver serve | migrate | sweep``; options override ``TUS_*`` variables."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from tusserver import __version__
from tusserver.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tusserver", description="tus 1.0.0 upload server")
    parser.add_argument("--version", action="version", version=f"tusserver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve_options(commands.add_parser("serve", help="run the HTTP server"))
    _add_serve_options(
        commands.add_parser(
            "config",
            help="print the effective settings and where each came from (secrets masked)",
        )
    )
    migrate = commands.add_parser(
        "migrate", help="upgrade the catalog database schema (TUS_DATABASE_URL) to the latest"
    )
    migrate.add_argument("--data-dir", help="data dir holding the default SQLite catalog")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    token = commands.add_parser(
        "token", help="print a development token signed with TUS_JWT_SECRET"
    )
    token.add_argument("--sub", required=True, help="the user id (the token's subject)")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    sweep = commands.add_parser(
        "sweep",
        help="reclaim expired uploads, deleted files and orphaned storage (one sweeper works "
        "at a time)",
    )
    sweep.add_argument("--once", action="store_true", help="one pass, print its report, exit")
    sweep.add_argument(
        "--interval",
        dest="sweep_interval",
        type=float,
        help="seconds between passes (TUS_SWEEP_INTERVAL)",
    )
    sweep.add_argument("--data-dir", help="directory for bytes and state (TUS_DATA_DIR)")
    sweep.add_argument("--log-level", help="logging level (TUS_LOG_LEVEL)")
    return parser


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", help="address to bind (TUS_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (TUS_PORT)")
    serve.add_argument("--data-dir", help="directory for bytes and state (TUS_DATA_DIR)")
    serve.add_argument("--base-path", help="tus endpoint path (TUS_BASE_PATH)")
    serve.add_argument("--max-size", type=int, help="largest upload in bytes (TUS_MAX_SIZE)")
    serve.add_argument("--expiration", type=int, help="idle seconds before expiry (TUS_EXPIRATION)")
    serve.add_argument("--log-level", help="logging level (TUS_LOG_LEVEL)")
    serve.add_argument(
        "--workers",
        help="server processes on one socket: a number, or auto for one per core (TUS_WORKERS)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback address without authentication (TUS_INSECURE)",
    )


def print_config(settings: Settings, overrides: dict[str, Any]) -> int:
    from tusserver.ops.settings_report import render, setting_rows

    print(render(setting_rows(settings, overrides)))
    return 0


def refuse_insecure_bind(settings: Settings) -> str | None:
    """Why the server must not start as configured, or None.

    Without authentication every upload belongs to one anonymous user: fine on loopback (a
    developer's machine), a hole on any reachable address unless the operator says so.
    """
    if settings.auth_enabled or settings.insecure or _is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host} without authentication: set TUS_JWT_SECRET "
        "or TUS_JWT_JWKS, bind to 127.0.0.1, or pass --insecure (TUS_INSECURE=true)"
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(settings: Settings) -> int:
    from tusserver.ops.logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if settings.worker_count() > 1:
        from tusserver.workers.supervisor import supervise

        return supervise(settings)
    from tusserver.app import create_app
    from tusserver.workers.server import GracefulServer, uvicorn_config

    app = create_app(settings)
    GracefulServer(uvicorn_config(app, settings), app, settings.base_path).run()
    return 0


def token(settings: Settings, subject: str, *, admin: bool, ttl: int) -> int:
    from tusserver.security.auth import mint_token

    if settings.jwt_secret is None:
        print("tusserver: set TUS_JWT_SECRET (32+ characters) to sign tokens", file=sys.stderr)
        return 2
    try:
        minted = mint_token(
            settings.jwt_secret.get_secret_value(),
            subject,
            admin=admin,
            ttl=ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            roles_claim=settings.jwt_roles_claim,
        )
    except ValueError as exc:
        print(f"tusserver: {exc}", file=sys.stderr)
        return 2
    print(minted)
    return 0


def sweep(settings: Settings, *, once: bool) -> int:
    import asyncio
    import json

    from tusserver.ops.logs import configure as configure_logging
    from tusserver.ops.sweep_runner import run_sweeper
    from tusserver.state import group

    configure_logging(settings.log_level, settings.log_format)
    # Uploads a `serve --workers N` on this data dir holds are locked in the kernel: this
    # process takes the same locks, so it skips a busy upload as the workers' sweeps do.
    group.lock_beside_workers()
    try:
        report = asyncio.run(run_sweeper(settings, once=once))
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:  # StartupError, CatalogStartupError: a clear message
        print(f"tusserver: {exc}", file=sys.stderr)
        return 1
    if once:
        print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def migrate(settings: Settings, revision: str) -> int:
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from catalog.db import open_engine
    from catalog.migrate import current_revision, upgrade
    from tusserver.ops.logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)

    async def run() -> str | None:
        engine = open_engine(settings.catalog_url())
        try:
            await upgrade(engine, revision)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    try:
        current = asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        # The class only: a driver message may quote the URL and its password.
        print(f"tusserver: migration failed: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"catalog schema at revision {current}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "revision", "once", "sub", "admin", "ttl") and value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"tusserver: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        refusal = refuse_insecure_bind(settings)
        if refusal is not None:
            print(f"tusserver: {refusal}", file=sys.stderr)
            return 2
        return serve(settings)
    if args.command == "config":
        return print_config(settings, overrides)
    if args.command == "token":
        return token(settings, args.sub, admin=args.admin, ttl=args.ttl)
    if args.command == "migrate":
        return migrate(settings, args.revision)
    if args.command == "sweep":
        return sweep(settings, once=args.once)
    return 0


if __name__ == "__main__":
    sys.exit(main())
