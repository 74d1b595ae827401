"""The ``inboxd`` command."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence

from inboxd.logs import configure_logging, get_logger
from inboxd.runtime import (
    ConfigurationError,
    Resolved,
    bootstrap_default_workspace,
    exit_on_sigterm,
    open_database,
    resolve,
    stop_embedded_postgres,
)
from inboxd.settings import Settings, load_settings
from storage import api_keys, inbox_passwords, oauth_apps, workspaces
from storage.db import Database
from storage.errors import NotFoundError
from storage.migrate import upgrade
from storage.models import Permission
from storage.secrets import KeyRing

log = get_logger("inboxd.cli")


def _prepare(settings: Settings, *, migrate: bool = True) -> Resolved:
    resolved = resolve(settings)
    for note in resolved.notes:
        print(note, flush=True)
    if migrate:
        upgrade(resolved.database_url)
    return resolved


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from inboxd.app import create_app
    from inboxd.configs import build_state
    from inboxd.worker import start_background

    resolved = _prepare(settings, migrate=not args.no_migrate)
    state = build_state(settings, resolved)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, args.port if args.port is not None else settings.port))
    # Listen now: the banner is printed during start-up, before uvicorn accepts, and a
    # client that reads it and connects at once must queue, not be refused.
    sock.listen(2048)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    background = start_background(settings, resolved, state)

    async def on_startup() -> None:
        key = await bootstrap_default_workspace(state.db) if resolved.embedded else None
        await background.start()
        lines = [f"inboxd is serving GraphQL at http://{host}:{port}/graphql"]
        if settings.graphiql_enabled:
            lines.append(f"  GraphiQL (explore in a browser): http://{host}:{port}/graphql")
        if resolved.embedded:
            lines.append(f"  embedded Postgres: {resolved.database_url}")
            lines.append(f"  data folder: {settings.data_dir.resolve()}")
        if key:
            lines.append(f"  admin API key (shown once, keep it): {key}")
            lines.append(
                "  try: curl -s -H 'Authorization: Bearer "
                + key
                + f"' -H 'Content-Type: application/json' -d "
                '\'{"query":"{ viewer { workspace { name } inboxUsage inboxLimit } }"}\' '
                f"http://{host}:{port}/graphql"
            )
        elif resolved.embedded:
            lines.append(
                "  the admin API key was printed on first start; make another with "
                "`inboxd apikey create --workspace default --permission manage-email-inbox`"
            )
        lines.append("  press Ctrl+C to stop")
        print("\n".join(lines), flush=True)

    async def on_shutdown() -> None:
        await background.stop()
        await state.db.dispose()

    app = create_app(settings, state, on_startup=on_startup, on_shutdown=on_shutdown)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        ws_per_message_deflate=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    try:
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again: as
        # SystemExit (exit_on_sigterm) or KeyboardInterrupt, which end up here.
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        stop_embedded_postgres(resolved)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from inboxd.worker import run_worker_forever

    resolved = _prepare(settings)
    try:
        # On uvloop where it is installed, as ``serve`` (uvicorn's "auto"): the worker holds
        # the receiving sessions and the sending ones, where uvloop's I/O is the cheaper.
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            asyncio.run(run_worker_forever(settings, resolved))
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run_worker_forever(settings, resolved))
    finally:
        stop_embedded_postgres(resolved)
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    _prepare(settings)
    print("migrations applied", flush=True)
    return 0


async def _with_db(settings: Settings, resolved: Resolved, args: argparse.Namespace) -> int:
    db = open_database(settings, resolved.database_url)
    try:
        async with db.connection() as connection, connection.transaction():
            if args.command == "workspace":
                ws = await workspaces.create_workspace(
                    connection,
                    args.name,
                    max_inboxes=args.max_inboxes,
                    subscription_active=not args.inactive,
                )
                print(f"workspace {ws.name} created (id {ws.id}, max inboxes {ws.max_inboxes})")
            elif args.command == "apikey" and args.apikey_command == "create":
                ws_row = await workspaces.find_workspace(connection, args.workspace)
                if ws_row is None:
                    print(f"no workspace named {args.workspace!r}", file=sys.stderr)
                    return 2
                permissions = [Permission(p) for p in args.permission]
                _, key = await api_keys.create_api_key(
                    connection, ws_row.id, permissions, name=args.name or ""
                )
                print(key)
            elif args.command == "apikey" and args.apikey_command == "revoke":
                try:
                    when = await api_keys.revoke_api_key(connection, args.key)
                except NotFoundError:
                    print("no such API key", file=sys.stderr)
                    return 2
                print(f"revoked at {when.isoformat()}")
        if args.command == "rotate-keys":
            await _rotate_keys(db, resolved.keyring)
    finally:
        await db.dispose()
    return 0


async def _rotate_keys(db: Database, keyring: KeyRing) -> None:
    rotated, unreadable, after = 0, [], None
    while True:
        async with db.connection() as connection:
            batch = await inbox_passwords.rotate_secrets(connection, keyring, after=after)
        rotated += batch.rotated
        unreadable += batch.unreadable
        if batch.last_id is None:
            break
        after = batch.last_id
    print(f"re-encrypted {rotated} inboxes under key {keyring.primary_key_id!r}", flush=True)
    async with db.connection() as connection:
        apps, unreadable_apps = await oauth_apps.rotate_app_secrets(connection, keyring)
    print(f"re-encrypted {apps} OAuth apps' client secrets", flush=True)
    if unreadable_apps:
        print(
            f"{len(unreadable_apps)} OAuth apps' client secrets could not be decrypted and were "
            "left unchanged: " + ", ".join(str(i) for i in unreadable_apps),
            file=sys.stderr,
        )
    if unreadable:
        print(
            f"{len(unreadable)} inboxes could not be decrypted with any key in the ring and were "
            "left unchanged: " + ", ".join(str(i) for i in unreadable),
            file=sys.stderr,
        )


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_with_db(settings, _prepare(settings), args))


def cmd_generate_key(settings: Settings, args: argparse.Namespace) -> int:
    print(KeyRing.generate_spec(args.key_id))
    return 0


def cmd_export_schema(settings: Settings, args: argparse.Namespace) -> int:
    from schema import export_sdl

    sdl = export_sdl()
    if args.check:
        with open(args.path, encoding="utf-8") as handle:
            if handle.read() != sdl:
                print(f"{args.path} is out of date: run `inboxd export-schema`", file=sys.stderr)
                return 1
        return 0
    with open(args.path, "w", encoding="utf-8") as handle:
        handle.write(sdl)
    print(f"wrote {args.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inboxd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (and, by default, the worker)")
    serve.add_argument("--port", type=int, default=None, help="0 picks a free port")
    serve.add_argument(
        "--no-migrate", action="store_true", help="skip migrations (run `inboxd migrate` first)"
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run verification workers only").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    workspace = sub.add_parser("workspace", help="manage workspaces")
    ws_sub = workspace.add_subparsers(dest="workspace_command", required=True)
    ws_create = ws_sub.add_parser("create")
    ws_create.add_argument("name")
    ws_create.add_argument("--max-inboxes", type=int, default=10)
    ws_create.add_argument("--inactive", action="store_true", help="no active subscription")
    ws_create.set_defaults(func=cmd_db)

    apikey = sub.add_parser("apikey", help="manage API keys")
    key_sub = apikey.add_subparsers(dest="apikey_command", required=True)
    key_create = key_sub.add_parser("create", help="prints the key once")
    key_create.add_argument("--workspace", required=True)
    key_create.add_argument(
        "--permission",
        action="append",
        required=True,
        choices=[p.value for p in Permission],
        help="repeat for several",
    )
    key_create.add_argument("--name", default="")
    key_create.set_defaults(func=cmd_db)
    key_revoke = key_sub.add_parser("revoke")
    key_revoke.add_argument("key", help="the key or its 12-character prefix")
    key_revoke.set_defaults(func=cmd_db)

    sub.add_parser(
        "rotate-keys", help="re-encrypt every stored secret under the newest key"
    ).set_defaults(func=cmd_db)
    gen = sub.add_parser("generate-key", help="print a new key for INBOXD_ENCRYPTION_KEYS")
    gen.add_argument("--key-id", default=None)
    gen.set_defaults(func=cmd_generate_key)
    export = sub.add_parser("export-schema", help="write the GraphQL SDL file")
    export.add_argument("--path", default="schema.graphql")
    export.add_argument("--check", action="store_true", help="fail if the file is out of date")
    export.set_defaults(func=cmd_export_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    exit_on_sigterm()
    try:
        return int(args.func(settings, args))
    except ConfigurationError as exc:
        print(f"inboxd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # Ctrl+C: stopped as asked, no traceback


if __name__ == "__main__":
    sys.exit(main())
