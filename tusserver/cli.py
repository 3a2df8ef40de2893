"""Command line: ``tusserver serve | migrate``. Options override the ``TUS_*`` environment."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

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
    return parser


def serve(settings: Settings) -> None:
    import uvicorn

    from tusserver.app import create_app
    from tusserver.logs import configure as configure_logging

    configure_logging(settings.log_level)
    app = create_app(settings)
    url = f"http://{settings.host}:{settings.port}{settings.base_path}"
    logging.getLogger("tusserver").info("tusserver listening on %s", url)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Forwarded headers are interpreted by us, only when TUS_TRUST_PROXY is set (T070).
        proxy_headers=False,
        server_header=False,
        # Uppy can send 8 KiB+ of Upload-Metadata (T080); h11's default cap is 16 KiB.
        h11_max_incomplete_event_size=64 * 1024,
        timeout_graceful_shutdown=10,
    )


def migrate(settings: Settings, revision: str) -> int:
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from catalog.db import open_engine
    from catalog.migrate import current_revision, upgrade
    from tusserver.logs import configure as configure_logging

    configure_logging(settings.log_level)

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
        if key not in ("command", "revision") and value is not None
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
