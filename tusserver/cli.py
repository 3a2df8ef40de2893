"""Command line: ``tusserver serve | migrate | sweep``; options override ``TUS_*`` variables."""

from __future__ import annotations

import argparse
import logging
import sys
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from tusserver.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tusserver", description="tus 1.0.0 upload server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (TUS_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (TUS_PORT)")
    serve.add_argument("--data-dir", help="directory for bytes and state (TUS_DATA_DIR)")
    serve.add_argument("--base-path", help="tus endpoint path (TUS_BASE_PATH)")
    serve.add_argument("--max-size", type=int, help="largest upload in bytes (TUS_MAX_SIZE)")
    serve.add_argument("--expiration", type=int, help="idle seconds before expiry (TUS_EXPIRATION)")
    serve.add_argument("--log-level", help="logging level (TUS_LOG_LEVEL)")
    migrate = commands.add_parser(
        "migrate", help="upgrade the catalog database schema (TUS_DATABASE_URL) to the latest"
    )
    migrate.add_argument("--data-dir", help="data dir holding the default SQLite catalog")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
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


def serve(settings: Settings) -> None:
    from tusserver.app import create_app
    from tusserver.logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    url = f"http://{settings.host}:{settings.port}{settings.base_path}"
    logging.getLogger("tusserver").info("tusserver listening on %s", url)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Our handler formats uvicorn's records too (JSON or key=value, request ids).
        log_config=None,
        # Forwarded headers are interpreted by us, only when TUS_TRUST_PROXY is set (T070).
        proxy_headers=False,
        server_header=False,
        # Uppy can send 8 KiB+ of Upload-Metadata (T080); h11's default cap is 16 KiB.
        h11_max_incomplete_event_size=64 * 1024,
        # PATCHes answer within about a second of SIGTERM (see _Server); this bounds the rest.
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    GracefulServer(config, app).run()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, plus: on SIGTERM/SIGINT, in-flight PATCHes are told at once to store
    what arrived and answer (503, retry elsewhere), instead of streaming on until uvicorn's
    graceful timeout cancels them mid-write."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        request_shutdown = getattr(self._app.state, "request_shutdown", None)
        if request_shutdown is not None and not self.should_exit:
            logging.getLogger("tusserver").info("shutdown.requested", extra={"signal": sig})
            request_shutdown()
        super().handle_exit(sig, frame)


def sweep(settings: Settings, *, once: bool) -> int:
    import asyncio
    import json

    from tusserver.logs import configure as configure_logging
    from tusserver.sweep_runner import run_sweeper

    configure_logging(settings.log_level, settings.log_format)
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
    from tusserver.logs import configure as configure_logging

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
        if key not in ("command", "revision", "once") and value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"tusserver: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(settings)
    elif args.command == "migrate":
        return migrate(settings, args.revision)
    elif args.command == "sweep":
        return sweep(settings, once=args.once)
    return 0


if __name__ == "__main__":
    sys.exit(main())
