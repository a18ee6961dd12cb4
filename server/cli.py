"""The `interocc` command: serve, worker, migrate, and the admin's account, assembly and
post tools.

Every failure is one line on stderr and a non-zero exit; a failed command leaves the
database as it was (each command is one transaction). Before any command touches the
database, it checks that the database is at the latest schema and belongs to this
INTEROCC_BASE_URL (server/address.py). Prompts end cleanly on Ctrl-C (exit 130) and Ctrl-D.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from server import accounts, address, assemblies, backup, communiques, following, media, migrate
from server.activitypub import mentions
from server.config import ConfigError, Settings, load_settings
from server.context import Context, create_context
from server.db import create_engine, is_sqlite
from server.errors import Conflict, InterOccError, NotFound
from server.models import Media, MediaPurpose

log = logging.getLogger(__name__)

EXIT_ERROR = 1
EXIT_CONFIG = 2  # a bad setting, or INTEROCC_BASE_URL is not the database's address
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class CommandError(Exception):
    pass


class Interrupted(CommandError):
    """Ctrl-C at a prompt: the command stops there, before it changed anything."""


@contextlib.contextmanager
def _answering(what: str) -> Iterator[None]:
    """While a person types an answer (or stdin is read): Ctrl-C and Ctrl-D (end of input)
    end the command with one line instead of a traceback, exit 130 and 1."""
    # asyncio.run's own SIGINT handler only cancels the command's task, which cannot react
    # while a blocking read waits: Ctrl-C would do nothing until Enter. Python's default
    # handler raises KeyboardInterrupt in the read at once (and getpass restores the echo).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        _end_prompt_line()
        raise Interrupted(f"interrupted: no {what} given, nothing was changed") from None
    except EOFError:
        _end_prompt_line()
        raise CommandError(f"no {what} given: the input ended") from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _ask(prompt: str, what: str) -> str:
    """One answer typed at the terminal, without echo."""
    with _answering(what):
        return getpass.getpass(prompt)


def _first_line(what: str) -> str:
    """Standard input's first line (an empty string if it is empty)."""
    with _answering(what):
        return sys.stdin.readline().rstrip("\r\n")


def _end_prompt_line() -> None:
    # getpass writes no newline when it is interrupted: the message would follow the prompt.
    if sys.stderr.isatty():
        sys.stderr.write("\n")


def _ensure_sqlite_dir(url: str) -> None:
    if is_sqlite(url) and ":memory:" not in url:
        path = url.split(":///", 1)[1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_file_missing(url: str) -> bool:
    return is_sqlite(url) and ":memory:" not in url and not Path(url.split(":///", 1)[1]).exists()


async def _check_database(
    settings: Settings, *, record: bool = False, compare: bool = True
) -> address.Checked | None:
    """Before a command touches the database: it exists, its schema is at head, and (unless
    not ``compare``) it is the instance at this INTEROCC_BASE_URL (server/address.py); with
    ``record``, a database that has no address recorded gets this one. Raises with one line;
    changes nothing then."""
    url = settings.database_url
    if _sqlite_file_missing(url):
        # Opening it would leave an empty file behind (or fail if its folder is missing).
        raise CommandError("there is no database yet: run `interocc migrate` first")
    engine = create_engine(url)
    try:
        try:
            current = await migrate.current_revision(engine)
        except Exception as exc:  # unreachable server, bad credentials…
            # SQLAlchemy's messages end with a "(Background on this error …)" line: one line.
            reason = (str(exc).splitlines() or [""])[0]
            raise CommandError(
                f"cannot open the database: {exc.__class__.__name__}: {reason}"
            ) from exc
        if current != migrate.head_revision():
            raise CommandError("the database is not up to date: run `interocc migrate` first")
        if not compare:
            return None
        async with engine.begin() as conn:
            checked = await address.check(conn, settings.base_url, record=record)
    finally:
        await engine.dispose()
    if checked.recorded_now:
        log.info(
            "recorded the instance's address, %s: every interocc process on this database "
            "must use it (`interocc instance set-address` changes it before it federates)",
            checked.address,
        )
    return checked


async def _with_context(
    settings: Settings, fn: Callable[[Context, AsyncSession], Awaitable[Any]]
) -> Any:
    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session, session.begin():
            return await fn(ctx, session)
    finally:
        await ctx.aclose()


def _read_text(args: argparse.Namespace) -> str:
    if args.file is not None:
        try:
            return Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {args.file}: {exc}") from exc
    text: str = args.text
    return text


async def _resolve_mentions(ctx: Context, text: str) -> list[mentions.Mention]:
    # Its own transaction: WebFinger and actor fetches must not hold the write lock.
    async with ctx.sessions() as session, session.begin():
        return await mentions.resolve(session, ctx, text)


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    base_url = address.parse(settings.base_url)  # before a new database's file is made
    _ensure_sqlite_dir(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        # The address is checked (and recorded the first time) in the upgrade's transaction.
        recorded_now = await migrate.upgrade(engine, base_url=base_url)
    finally:
        await engine.dispose()
    # The instance key is made here, so no later command (even a failing one) writes it.
    await (await create_context(settings)).aclose()
    print("database is up to date")
    if recorded_now:
        print(
            f"recorded the instance's address, {base_url}: every interocc process on this "
            "database must use it (`interocc instance set-address` changes it before the "
            "instance federates)"
        )


async def cmd_instance_address(settings: Settings, args: argparse.Namespace) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            recorded = await address.recorded(conn)
    finally:
        await engine.dispose()
    if recorded is None:
        print(f"none recorded yet: `interocc migrate` records {settings.base_url}")
    else:
        print(recorded)


async def cmd_instance_set_address(settings: Settings, args: argparse.Namespace) -> None:
    try:
        new = address.parse(args.url, name="the new address")
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            done = await address.change(conn, new, force=args.force)
    finally:
        await engine.dispose()
    if not done.changed:
        print(f"the instance's address is already {done.new}")
        return
    host = done.new.split("://", 1)[1]
    print(
        f"the instance's address is now {done.new}" + (f" (it was {done.old})" if done.old else "")
    )
    print(
        "actor, key, communiqué and activity ids start with it from now on, and handles "
        f"end in @{host}"
    )
    print(
        f"set INTEROCC_BASE_URL={done.new} for every interocc process (serve, worker and "
        "these commands): one with another address stops at start"
    )
    if done.footprint:
        print(
            f"warning: {address.describe(done.footprint)} keep the old address: servers that "
            f"know the instance by it will not recognise it at {done.new}"
        )


async def cmd_assembly_create(settings: Settings, args: argparse.Namespace) -> None:
    async def run(ctx: Context, session: AsyncSession) -> None:
        a = await assemblies.create(
            session,
            handle=args.handle,
            name=args.name,
            summary=args.summary or "",
            manually_approves_followers=args.manual_approval,
        )
        print(f"created {a.handle} (pending approval)")

    await _with_context(settings, run)


async def cmd_assembly_approve(settings: Settings, args: argparse.Namespace) -> None:
    async def run(ctx: Context, session: AsyncSession) -> None:
        a = await assemblies.approve(session, args.handle, now=ctx.clock())
        print(f"approved {a.handle}: {ctx.urls.acct(a.handle)} {ctx.urls.actor(a.handle)}")

    await _with_context(settings, run)


async def cmd_assembly_suspend(settings: Settings, args: argparse.Namespace) -> None:
    async def run(ctx: Context, session: AsyncSession) -> None:
        a = await assemblies.suspend(session, args.handle, now=ctx.clock())
        print(f"suspended {a.handle}")

    await _with_context(settings, run)


async def cmd_assembly_list(settings: Settings, args: argparse.Namespace) -> None:
    async def run(ctx: Context, session: AsyncSession) -> None:
        for a in await assemblies.list_all(session):
            print(f"{a.handle}\t{a.status.value}\t{a.name}")

    await _with_context(settings, run)


async def cmd_inbox_status(settings: Settings, args: argparse.Namespace) -> None:
    from server.federation import inbox_queue

    async def run(ctx: Context, session: AsyncSession) -> None:
        for status, n in (await inbox_queue.counts(session)).items():
            print(f"{status}\t{n}")

    await _with_context(settings, run)


async def cmd_inbox_retry(settings: Settings, args: argparse.Namespace) -> None:
    from server.federation import inbox_queue
    from server.models import InboxItemStatus

    statuses: tuple[InboxItemStatus, ...] = (InboxItemStatus.PARKED,)
    if args.rejected:
        statuses += (InboxItemStatus.REJECTED,)

    async def run(ctx: Context, session: AsyncSession) -> None:
        n = await inbox_queue.retry(session, now=ctx.clock(), statuses=statuses)
        print(f"{n} queued again; a running worker processes them now")

    await _with_context(settings, run)


async def cmd_deliveries(settings: Settings, args: argparse.Namespace) -> None:
    from server import deliveries
    from server.models import DeliveryHost, DeliveryStatus

    status = DeliveryStatus(args.status) if args.status else None
    host = args.host.strip().lower() if args.host else None

    async def run(ctx: Context, session: AsyncSession) -> None:
        now = ctx.clock()
        queue = await deliveries.queue_overview(session, now=now)
        print(
            f"# queue: {queue.pending} pending ({queue.held} held), "
            f"{queue.failed_attempts} failed attempts in the last 24 h; "
            f"{queue.failing_hosts} servers failing, {queue.unavailable_hosts} unavailable"
        )
        if host is not None:
            health = await session.get(DeliveryHost, host)
            if health is None:
                print(f"# {host}: available (never failed)")
            else:
                since = health.failing_since
                print(
                    f"# {host}: {health.state.value}, {health.failures} failures"
                    + (f" since {since.isoformat(timespec='seconds')}" if since else "")
                )
        rows = await deliveries.list_deliveries(session, host=host, status=status, limit=args.limit)
        print("id\tstatus\thost\tattempts\tlast\tnext try\tactivity\terror")
        for row in rows:
            last = str(row.last_status) if row.last_status is not None else "-"
            next_try = (
                row.next_attempt_at.isoformat(timespec="seconds")
                if row.status is DeliveryStatus.PENDING
                else "-"
            )
            error = " ".join((row.last_error or "-").split())[:120]
            print(
                f"{row.id}\t{row.status.value}\t{row.host}\t{row.attempts}\t{last}\t"
                f"{next_try}\t{row.activity_type} {row.activity_uri}\t{error}"
            )
        if len(rows) == args.limit:
            print(f"# the newest {args.limit} only: --limit N for more")

    await _with_context(settings, run)


def _attachments(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """(file, description) pairs from ``--attach FILE`` and ``--alt TEXT``, in order."""
    files: list[str] = args.attach or []
    alts: list[str] = args.alt or []
    if len(alts) > len(files):
        raise CommandError("each --alt describes the --attach before it: too many --alt")
    if len(files) > communiques.MAX_ATTACHMENTS:
        raise CommandError(f"at most {communiques.MAX_ATTACHMENTS} --attach")
    return [(Path(f), alts[i] if i < len(alts) else "") for i, f in enumerate(files)]


async def cmd_post(settings: Settings, args: argparse.Namespace) -> None:
    text = _read_text(args)
    attach = _attachments(args)
    stored: list[Media] = []

    async def run(ctx: Context, session: AsyncSession) -> None:
        found = await _resolve_mentions(ctx, text)
        assembly = await assemblies.require_active(session, args.handle)
        for path, alt in attach:
            try:
                data = path.open("rb")
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
            with data:
                upload = UploadFile(file=data, filename=path.name)
                stored.append(
                    await media.store_upload(
                        session,
                        ctx.settings,
                        assembly=assembly,
                        upload=upload,
                        purpose=MediaPurpose.ATTACHMENT,
                        alt_text=alt,
                        field="--attach",
                        now=ctx.clock(),
                    )
                )
        published = await communiques.publish(
            session,
            ctx.urls,
            handle=args.handle,
            source=text,
            language=args.language,
            now=ctx.clock(),
            mentions=found,
            attachments=stored,
        )
        print(published.url)

    try:
        await _with_context(settings, run)
    except BaseException:
        media.remove_files(settings, stored)  # the transaction rolled back: no file stays
        raise


async def cmd_edit(settings: Settings, args: argparse.Namespace) -> None:
    text = _read_text(args)

    async def run(ctx: Context, session: AsyncSession) -> None:
        found = await _resolve_mentions(ctx, text)
        published = await communiques.edit(
            session, ctx.urls, url=args.url, source=text, now=ctx.clock(), mentions=found
        )
        print(published.url)

    await _with_context(settings, run)


async def cmd_delete(settings: Settings, args: argparse.Namespace) -> None:
    async def run(ctx: Context, session: AsyncSession) -> communiques.Published:
        published = await communiques.delete(session, ctx.urls, url=args.url, now=ctx.clock())
        print(f"deleted {published.url}")
        return published

    published = await _with_context(settings, run)
    # The files of its attachments go once the deletion is committed.
    media.remove_files(settings, published.removed_media)


async def cmd_follow(settings: Settings, args: argparse.Namespace) -> None:
    ctx = await create_context(settings)
    try:
        # WebFinger and the actor fetch happen before the write transaction.
        await following.prefetch(ctx, args.target)
        async with ctx.sessions() as session, session.begin():
            row = await following.follow(
                session, ctx, handle=args.handle, target=args.target, now=ctx.clock()
            )
        print(f"follow request sent to {row.target_uri}")
    finally:
        await ctx.aclose()


async def cmd_assembly_alias(settings: Settings, args: argparse.Namespace) -> None:
    from server import moving

    ctx = await create_context(settings)
    try:
        target = args.add or args.remove
        # WebFinger and the actor fetch happen before the write transaction.
        await moving.prepare(ctx, target)
        async with ctx.sessions() as session, session.begin():
            if args.add:
                uri = await moving.add_alias(session, ctx, handle=args.handle, target=target)
                print(f"{args.handle} is also known as {uri}")
            else:
                uri = await moving.remove_alias(session, ctx, handle=args.handle, target=target)
                print(f"{args.handle} is no longer known as {uri}")
    finally:
        await ctx.aclose()


async def cmd_assembly_move(settings: Settings, args: argparse.Namespace) -> None:
    from server import moving

    ctx = await create_context(settings)
    try:
        await moving.prepare(ctx, args.to)
        target = await moving.current_target(ctx, args.to)
        async with ctx.sessions() as session, session.begin():
            await moving.move(session, ctx, handle=args.handle, target=target, now=ctx.clock())
        print(f"{args.handle} moved to {target.uri}; its followers are told so")
    finally:
        await ctx.aclose()


def _read_passphrase(args: argparse.Namespace, *, twice: bool) -> str:
    """An archive's passphrase: typed without echo at a terminal (twice for a new archive),
    else stdin's first line."""
    if not args.passphrase_stdin and sys.stdin.isatty():
        passphrase = _ask("Passphrase: ", "passphrase")
        if twice and _ask("Passphrase again: ", "passphrase") != passphrase:
            raise CommandError("the two passphrases differ")
    else:
        passphrase = _first_line("passphrase")
    if not passphrase:
        raise CommandError("no passphrase given")
    return passphrase


async def cmd_assembly_export(settings: Settings, args: argparse.Namespace) -> None:
    from server import archive

    out = Path(args.out)
    if await asyncio.to_thread(out.exists):
        raise CommandError(f"{out} already exists: choose another name")
    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session:
            await assemblies.get(session, args.handle)  # before anyone types a passphrase
        passphrase = archive.check_passphrase(_read_passphrase(args, twice=True))
        async with ctx.sessions() as session, session.begin():
            exported = await archive.export_assembly(
                session, settings, ctx.urls, handle=args.handle, now=ctx.clock()
            )
    finally:
        await ctx.aclose()
    data = await asyncio.to_thread(archive.encrypt, exported.zip_data, passphrase)
    await asyncio.to_thread(archive.write_file, out, data)
    counts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in exported.counts.items())
    print(f"exported {exported.actor_uri} to {out} ({len(data)} bytes): {counts}")
    print(f"sha256 {archive.digest(data)}")
    if exported.missing_files:
        print(f"warning: {len(exported.missing_files)} files were missing from the media folder")


async def cmd_assembly_import(settings: Settings, args: argparse.Namespace) -> None:
    from server import archive

    data = await asyncio.to_thread(archive.read_file, Path(args.file))
    handle = assemblies.normalise_handle(args.handle)
    ctx = await create_context(settings)
    stored: list[Media] = []
    try:
        async with ctx.sessions() as session:
            if await assemblies.find(session, handle) is not None:
                raise Conflict(f"an assembly with the handle {handle!r} already exists")
        passphrase = _read_passphrase(args, twice=False)
        opened = await asyncio.to_thread(archive.open_archive, data, passphrase)
        async with ctx.sessions() as session, session.begin():
            imported = await archive.import_archive(
                session,
                settings,
                ctx.urls,
                archive=opened,
                handle=handle,
                now=ctx.clock(),
                stored=stored,
            )
    except BaseException:
        media.remove_files(settings, stored)  # the transaction rolled back: no file stays
        raise
    finally:
        await ctx.aclose()
    c = imported.counts
    print(f"imported {imported.old_actor_uri} as {handle} (pending approval)")
    print(
        f"{c['communiques']} communiqués ({c['attachments']} attachments, "
        f"{c['ratification_records']} ratification records, {c['polls']} polls, "
        f"{c['pins']} pinned, {c['shares']} co-signatures), {c['letters']} letters, "
        f"images: {', '.join(imported.images) or 'none'}"
    )
    print(
        f"{c['following']} follows to send again once approved "
        f"(interocc assembly refollow {handle}); {c['followers']} followers kept for recovery"
    )


async def cmd_assembly_refollow(settings: Settings, args: argparse.Namespace) -> None:
    from server import archive

    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session:
            targets = await archive.follow_targets(session, handle=args.handle)
        for target in targets:  # WebFinger and actor fetches before the write transaction
            await following.prefetch(ctx, target)
        async with ctx.sessions() as session, session.begin():
            done = await archive.refollow(session, ctx, handle=args.handle, now=ctx.clock())
    finally:
        await ctx.aclose()
    print(f"follow requests sent: {len(done.sent)}; already followed: {len(done.already)}")
    for target, reason in done.failed:
        print(f"not followed: {target}: {reason}")


async def cmd_assembly_recover(settings: Settings, args: argparse.Namespace) -> None:
    from server import moving

    ctx = await create_context(settings)
    try:
        done = await moving.recover(ctx, handle=args.handle)
    finally:
        await ctx.aclose()
    print(f"Move from {done.old} to {done.new} sent to {len(done.sent)} servers")
    for inbox, why in done.failed:
        print(f"not sent to {inbox}: {why}")
    if done.failed and not done.sent:
        raise CommandError("no follower's server took the Move: run it again later")


async def cmd_unfollow(settings: Settings, args: argparse.Namespace) -> None:
    async def run(ctx: Context, session: AsyncSession) -> None:
        row = await following.unfollow(
            session, ctx, handle=args.handle, target=args.target, now=ctx.clock()
        )
        print(f"unfollowed {row.target_uri}")

    await _with_context(settings, run)


def _read_password(args: argparse.Namespace) -> str:
    """The new password: typed twice without echo at a terminal, else stdin's first line."""
    if not args.password_stdin and sys.stdin.isatty():
        first = _ask("Password: ", "password")
        if _ask("Password again: ", "password") != first:
            raise CommandError("the two passwords differ")
        password = first
    else:
        password = _first_line("password")
    if not password:
        raise CommandError("no password given")
    return accounts.check_password(password)


async def _admin_account(
    settings: Settings,
    args: argparse.Namespace,
    *,
    must_exist: bool,
    fn: Callable[[AsyncSession, str, str], Awaitable[None]],
) -> None:
    """Check the address, then ask for the password, then change the database: nobody is
    asked for a password a command would refuse anyway, and no transaction stays open
    while a person types."""
    email = accounts.normalise_email(args.email)
    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session:
            exists = await accounts.find_by_email(session, email) is not None
        if exists and not must_exist:
            raise Conflict(f"an account with the e-mail address {email} already exists")
        if must_exist and not exists:
            raise NotFound(f"no account with the e-mail address {email}")
        password = _read_password(args)
        async with ctx.sessions() as session, session.begin():
            await fn(session, email, password)
    finally:
        await ctx.aclose()


async def cmd_admin_create(settings: Settings, args: argparse.Namespace) -> None:
    async def run(session: AsyncSession, email: str, password: str) -> None:
        # The operator of the instance gave this address: it counts as confirmed, so that
        # the administrator gets its notices (approvals waiting, mail off…) at once.
        user = await accounts.create_user(
            session,
            email=email,
            password=password,
            is_admin=True,
            confirmed_at=datetime.now(UTC),
        )
        print(f"created the administrator {user.email}")

    await _admin_account(settings, args, must_exist=False, fn=run)


async def cmd_admin_reset_password(settings: Settings, args: argparse.Namespace) -> None:
    async def run(session: AsyncSession, email: str, password: str) -> None:
        user = await accounts.set_password(session, email, password)
        print(f"new password set for {user.email}; every browser signed in as it is signed out")

    await _admin_account(settings, args, must_exist=True, fn=run)


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    from server import worker

    await _check_database(settings, record=True)
    ctx = await create_context(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run_forever(ctx, stop)
    finally:
        await ctx.aclose()


def serve_options(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """How ``interocc serve`` runs uvicorn.

    uvicorn's access log is off: it prints every client's address (and query strings).
    The app logs each request itself without them (server.web.access_log). No WebSocket
    protocol either: we serve none, and uvicorn's WebSocket lines print addresses too.
    """
    return {
        "host": args.host,
        "port": args.port,
        "proxy_headers": True,
        "forwarded_allow_ips": args.forwarded_allow_ips,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "ws": "none",
        "server_header": False,
    }


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from server.app import create_app

    if args.workers > 1 and not settings.database_url.startswith("postgresql"):
        raise CommandError("--workers above 1 needs PostgreSQL (INTEROCC_DATABASE_URL)")
    if args.workers > 1 and args.with_worker:
        raise CommandError("--workers above 1 runs no delivery worker: start `interocc worker`")
    # Recorded here, not in each web process: they only compare (server/app.py).
    asyncio.run(_check_database(settings, record=True))
    if args.workers > 1:
        # Each process builds its own app (and its own context) from the environment.
        uvicorn.run(
            "server.app:app_from_environment",
            factory=True,
            workers=args.workers,
            **serve_options(settings, args),
        )
        return
    app = create_app(settings, run_worker=args.with_worker)
    uvicorn.run(app, **serve_options(settings, args))


async def _restore(settings: Settings, args: argparse.Namespace) -> None:
    """`interocc restore` (server/backup.py) into the new database `interocc migrate` made.

    That database holds one row, its recorded address, which the restore would take for data
    and refuse: the row is set aside while the backup is restored, and recorded again after,
    as this INTEROCC_BASE_URL (the backup's own, or the one --force-base-url chose), or put
    back as it was if the restore fails."""
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            removed = await address.forget(conn)
        try:
            await backup.cmd_restore(settings, args)
        except BaseException:
            if removed is not None:
                async with engine.begin() as conn:
                    await address.replace(conn, removed)
            raise
        async with engine.begin() as conn:
            await address.replace(conn, settings.base_url)
    finally:
        await engine.dispose()


def _limit(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise argparse.ArgumentTypeError(f"a number from 1 to 10000, not {raw!r}")
    return int(raw)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interocc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="create or upgrade the database schema")

    serve = sub.add_parser("serve", help="serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--with-worker", action="store_true", help="also run the delivery worker in-process"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 65),
        metavar="N",
        help="HTTP processes (PostgreSQL only; one per core is a good start)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="proxies trusted for X-Forwarded-* headers (default 127.0.0.1)",
    )
    sub.add_parser("worker", help="run the worker: deliveries and queued incoming activities")
    inbox = sub.add_parser("inbox", help="the queue of incoming activities").add_subparsers(
        dest="action", required=True
    )
    inbox.add_parser("status", help="how many activities wait, were rejected or are parked")
    retry = inbox.add_parser("retry", help="queue parked activities again")
    retry.add_argument(
        "--rejected", action="store_true", help="rejected ones too (after fixing a bug)"
    )

    listed = sub.add_parser("deliveries", help="outgoing deliveries, newest first")
    listed.add_argument("--host", help="one server's only (host, or host:port)")
    listed.add_argument(
        "--status", choices=["pending", "delivered", "failed", "skipped"], help="in one status"
    )
    listed.add_argument("--limit", type=_limit, default=50, metavar="N", help="at most N (50)")

    assembly = sub.add_parser("assembly", help="manage assemblies").add_subparsers(
        dest="action", required=True
    )
    create = assembly.add_parser("create", help="create a pending assembly")
    create.add_argument("handle")
    create.add_argument("--name", required=True)
    create.add_argument("--summary")
    create.add_argument("--manual-approval", action="store_true", help="approve followers by hand")
    for action in ("approve", "suspend"):
        assembly.add_parser(action).add_argument("handle")
    assembly.add_parser("list")
    alias = assembly.add_parser(
        "alias", help="list (or unlist) another identity of the assembly (alsoKnownAs)"
    )
    alias.add_argument("handle")
    which = alias.add_mutually_exclusive_group(required=True)
    which.add_argument("--add", metavar="TARGET", help="@name@host or an actor URL")
    which.add_argument("--remove", metavar="TARGET", help="@name@host or an actor URL")
    assembly.add_parser(
        "recover",
        help="after an import, ask the old identity's followers (its server gone) to follow "
        "this one: a Move signed with the old key",
    ).add_argument("handle")
    move = assembly.add_parser(
        "move", help="move the assembly to another identity that lists it as an alias"
    )
    move.add_argument("handle")
    move.add_argument("--to", required=True, metavar="TARGET", help="@name@host or an actor URL")

    export = assembly.add_parser(
        "export",
        help="write everything that is the assembly's to one encrypted archive file",
        description="Write everything that is the assembly's (profile, images, key pair, "
        "communiqués and their files, followers, following, letters…) to one archive file, "
        "encrypted with a passphrase asked twice at a terminal, or read from the first line "
        "of standard input. See docs/archive.md.",
    )
    export.add_argument("handle")
    export.add_argument("--out", required=True, metavar="FILE", help="a new file")
    imported = assembly.add_parser(
        "import",
        help="recreate an exported assembly here, pending approval",
        description="Recreate an assembly from its archive under a new handle, pending "
        "approval; its old actor id becomes its alias. The passphrase is asked at a "
        "terminal, or read from the first line of standard input. See docs/archive.md.",
    )
    imported.add_argument("file")
    imported.add_argument("--handle", required=True, help="its handle on this instance")
    for p in (export, imported):
        p.add_argument(
            "--passphrase-stdin",
            action="store_true",
            help="read the passphrase from standard input even at a terminal",
        )
    assembly.add_parser(
        "refollow", help="an approved imported assembly follows again what it followed"
    ).add_argument("handle")

    admin = sub.add_parser("admin", help="instance administrators' accounts").add_subparsers(
        dest="action", required=True
    )
    for action, text in (
        ("create", "create an administrator's account"),
        ("reset-password", "set a new password and sign the person out everywhere"),
    ):
        p = admin.add_parser(
            action,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. The password is asked twice at a "
            "terminal, or read from the first line of standard input.",
        )
        p.add_argument("email")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input even at a terminal",
        )

    def text_source(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--text")
        group.add_argument("--file")

    post = sub.add_parser("post", help="publish a communiqué (prints its URL)")
    post.add_argument("handle")
    text_source(post)
    post.add_argument("--language", default="en")
    post.add_argument(
        "--attach",
        action="append",
        metavar="FILE",
        help="attach an image (JPEG, PNG, GIF, WebP) or PDF; up to 4, in order",
    )
    post.add_argument(
        "--alt", action="append", metavar="TEXT", help="describe the --attach before it"
    )
    edit = sub.add_parser("edit", help="edit a communiqué")
    edit.add_argument("url")
    text_source(edit)
    sub.add_parser("delete", help="delete a communiqué").add_argument("url")
    for name, help_text in (
        ("follow", "an assembly follows another assembly or any fediverse actor"),
        ("unfollow", "an assembly stops following"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("handle", help="the local assembly's handle")
        p.add_argument("target", help="@name@host, name@host or an actor URL")
    backup.add_parsers(sub)

    instance = sub.add_parser(
        "instance", help="the instance's address (INTEROCC_BASE_URL) as its database records it"
    ).add_subparsers(dest="action", required=True)
    instance.add_parser("address", help="print the address this database records")
    moved = instance.add_parser(
        "set-address",
        help="change the instance's address, before it federates",
        description="Record URL as the instance's address: every id it publishes starts with "
        "it, and every interocc process on this database must then run with "
        "INTEROCC_BASE_URL=URL. Refused once the instance published, followed, was followed "
        "or received anything (other servers know its ids by the old address), unless --force.",
    )
    moved.add_argument("url", help="the new address, such as https://assemblies.example.org")
    moved.add_argument(
        "--force",
        action="store_true",
        help="change it even though other servers know the old one (their links break)",
    )
    return parser


COMMANDS: dict[tuple[str, str | None], Callable[[Settings, argparse.Namespace], Any]] = {
    ("migrate", None): cmd_migrate,
    ("serve", None): cmd_serve,
    ("worker", None): cmd_worker,
    ("inbox", "status"): cmd_inbox_status,
    ("inbox", "retry"): cmd_inbox_retry,
    ("deliveries", None): cmd_deliveries,
    ("backup", None): backup.cmd_backup,
    ("restore", None): backup.cmd_restore,
    ("assembly", "create"): cmd_assembly_create,
    ("assembly", "approve"): cmd_assembly_approve,
    ("assembly", "suspend"): cmd_assembly_suspend,
    ("assembly", "list"): cmd_assembly_list,
    ("assembly", "alias"): cmd_assembly_alias,
    ("assembly", "move"): cmd_assembly_move,
    ("assembly", "recover"): cmd_assembly_recover,
    ("assembly", "export"): cmd_assembly_export,
    ("assembly", "import"): cmd_assembly_import,
    ("assembly", "refollow"): cmd_assembly_refollow,
    ("admin", "create"): cmd_admin_create,
    ("admin", "reset-password"): cmd_admin_reset_password,
    ("post", None): cmd_post,
    ("edit", None): cmd_edit,
    ("delete", None): cmd_delete,
    ("follow", None): cmd_follow,
    ("unfollow", None): cmd_unfollow,
    ("instance", "address"): cmd_instance_address,
    ("instance", "set-address"): cmd_instance_set_address,
}
# main checks the database (server/address.py too) before every command but these: migrate
# makes it; serve and worker check it once their arguments are, and record the address of a
# database that has none; the instance commands read or fix the address, so the schema only.
CHECKS_ITSELF = {("migrate", None), ("serve", None), ("worker", None)}
SCHEMA_ONLY = {("instance", "address"), ("instance", "set-address")}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"interocc: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command != "migrate":
        # Reading the schema revision makes Alembic log "Context impl …" at INFO: noise on
        # every command that would break "one line on stderr" (alembic.ini has WARNING too).
        logging.getLogger("alembic").setLevel(logging.WARNING)
    key = (args.command, getattr(args, "action", None))
    command = COMMANDS[key]
    if command is backup.cmd_restore:
        command = _restore
    try:
        if key not in CHECKS_ITSELF:
            asyncio.run(_check_database(settings, compare=key not in SCHEMA_ONLY))
        result = command(settings, args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except ConfigError as exc:  # INTEROCC_BASE_URL is not this database's (server/address.py)
        print(f"interocc: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Interrupted as exc:
        print(f"interocc: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InterOccError, CommandError) as exc:
        message = exc.message if isinstance(exc, InterOccError) else str(exc)
        print(f"interocc: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # after the terminal's ^C
        print("interocc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
