"""``convolens`` on the command line: serve, migrate, tokens, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from convolens.config import Settings
from convolens.enrich import names
from convolens.store import migrate, outcome_judge, projects
from convolens.store.db import Database


def _db(settings: Settings, *, yields_writes: bool = False) -> Database:
    db = Database(settings.database_url, yields_writes=yields_writes)
    migrate.upgrade(db)
    return db


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from convolens.server import garbage_collection
    from convolens.server.app import create_app
    from convolens.server.asgi.observability import configure_logging

    settings = Settings.from_env()
    configure_logging(args.log_level, json=args.log_format == "json")
    ssl = {"ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile} if args.ssl_certfile else {}
    common = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "log_config": None,  # ours, from configure_logging: JSON lines, no uvicorn access log
        "access_log": False,
        "timeout_graceful_shutdown": args.graceful_timeout,
        # Only these peers' X-Forwarded-Proto/-For are believed (uvicorn otherwise trusts 127.0.0.1 alone).
        "proxy_headers": True,
        "forwarded_allow_ips": list(settings.trusted_proxies),
        **ssl,
    }
    workers = args.workers or 1
    print(
        f"convolens serving on http://{args.host}:{args.port} ({_describe(settings)}"
        f"{f', {workers} API processes' if workers > 1 else ''})",
        flush=True,
    )
    if workers == 1:
        app = create_app(settings)
        garbage_collection.tune()
        uvicorn.run(app, **common)
        return 0
    return _serve_processes(settings, workers, args, common)


def _serve_processes(settings: Settings, workers: int, args: argparse.Namespace, common: dict) -> int:
    """Several API processes on one port (uvicorn's supervisor), so that parsing, validation and PII
    scrubbing use every core; the schema is migrated once, here, and the embedded enrichment worker, if
    on, runs as one child process beside them (worker/process.py) rather than once in each."""
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from convolens.server import listeners
    from convolens.worker.process import WorkerProcess

    try:
        # A listening socket per process (SO_REUSEPORT): with uvicorn's one shared socket, one process
        # took every keep-alive connection that arrived together (server/listeners.py).
        sockets, held = listeners.for_processes(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    migrate.upgrade(Database(settings.database_url))
    os.environ["CONVOLENS_SERVE_LOG_LEVEL"] = args.log_level
    os.environ["CONVOLENS_SERVE_LOG_FORMAT"] = args.log_format
    # The same child process a single-process server starts (worker/process.py), here once for all.
    worker = WorkerProcess(settings) if settings.embedded_worker else None
    if worker is not None:
        worker.start()
    os.environ["CONVOLENS_EMBEDDED_WORKER"] = "0"
    config = uvicorn.Config("convolens.server.app:api_process_app", factory=True, workers=workers, **common)
    try:
        Multiprocess(config, sockets=sockets).run()
    finally:
        held.close()
        if worker is not None:
            worker.stop()
    return 0


def _describe(settings: Settings) -> str:
    if settings.is_sqlite:
        return f"SQLite at {settings.database_url.removeprefix('sqlite:///')}"
    return "PostgreSQL"


def cmd_migrate(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    db = Database(settings.database_url)
    migrate.upgrade(db)
    print(f"schema is up to date ({_describe(settings)})")
    return 0


def cmd_tokens_create(args: argparse.Namespace) -> int:
    try:
        scopes = projects.parse_scopes(args.scope)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db = _db(Settings.from_env())
    with db.writer() as conn:
        project_pk, created = projects.ensure_project(conn, args.project)
        token, _ = projects.create_token(conn, project_pk, scopes, args.label)
    if created:
        print(f"created project {args.project!r}", file=sys.stderr)
    print(
        f"token for project {args.project!r} with scopes {','.join(sorted(scopes))} (shown once; store it now):",
        file=sys.stderr,
    )
    print(token)
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    db = _db(Settings.from_env())
    with db.reader() as conn:
        rows = projects.list_tokens(conn, args.project)
    print(f"{'id':>4}  {'prefix':<12} {'project':<20} {'scopes':<12} {'created':<20} {'last used':<20} status")
    for r in rows:
        status = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        last = f"{r.last_used_at:%Y-%m-%d %H:%M:%S}" if r.last_used_at else "never"
        print(
            f"{r.pk:>4}  {r.prefix:<12} {r.project[:20]:<20} {r.scopes:<12} "
            f"{r.created_at:%Y-%m-%d %H:%M:%S}  {last:<20} {status}"
        )
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    db = _db(Settings.from_env())
    with db.writer() as conn:
        count = projects.revoke_token(conn, args.token)
    if count == 0:
        print(f"error: no active token with id or prefix {args.token!r}", file=sys.stderr)
        return 1
    print(f"revoked {count} token(s)")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import signal
    from datetime import timedelta

    from convolens.server.asgi.observability import configure_logging
    from convolens.store.suggestions import Timing
    from convolens.worker.runner import Worker

    configure_logging(args.log_level)
    settings = Settings.from_env()
    worker = Worker(
        _db(settings, yields_writes=True),  # ingestion first: on SQLite the API's writes go before its own
        batch_size=args.batch_size,
        lease=timedelta(seconds=args.lease_seconds),
        llm=settings.llm,
        outbound=settings.outbound,
        smtp=settings.smtp,
        public_url=settings.public_url,
        suggest_timing=Timing(min_messages=settings.suggest_min_messages),
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    return 0


def cmd_reenrich(args: argparse.Namespace) -> int:
    from convolens.store import enrichment, user_figures
    from convolens.timeutil import utcnow

    db = _db(Settings.from_env())
    with db.writer() as conn:
        project_pk = None
        if args.project:
            project_pk = projects.get_project_pk(conn, args.project)
            if project_pk is None:
                print(f"error: no project {args.project!r}", file=sys.stderr)
                return 1
        count = enrichment.requeue(conn, project_pk)
        days = user_figures.rebuild(conn, project_pk, utcnow())
    print(f"{count} messages queued for enrichment again; running workers pick them up")
    print(f"users' figures of {days} days to be recomputed by the workers")
    return 0


def cmd_projects_set(args: argparse.Namespace) -> int:
    changes: dict[str, object] = {
        name: value == "on"
        for name, value in (("pii_scrubbing", args.pii), ("pii_names", args.pii_names))
        if value is not None
    }
    if args.retention_days is not None:
        if args.retention_days != "off" and not (args.retention_days.isdigit() and int(args.retention_days) > 0):
            print("error: --retention-days must be a number of days or off", file=sys.stderr)
            return 2
        changes["retention_days"] = None if args.retention_days == "off" else int(args.retention_days)
    cap = args.judge_daily_cap
    if cap is not None and not (cap.isdigit() and len(cap) <= 7 and int(cap) <= outcome_judge.MAX_DAILY_CAP):
        print(
            f"error: --judge-daily-cap must be a whole number from 0 to {outcome_judge.MAX_DAILY_CAP:,}",
            file=sys.stderr,
        )
        return 2
    if not changes and args.outcome_judge is None and cap is None:
        print(
            "error: give --pii, --pii-names, --retention-days, --outcome-judge and/or --judge-daily-cap",
            file=sys.stderr,
        )
        return 2
    if changes.get("pii_names") and not names.available():
        print("error: name redaction needs the names extra: pip install 'convolens[names]'", file=sys.stderr)
        return 1
    db = _db(Settings.from_env())
    with db.writer() as conn:
        pk = projects.get_project_pk(conn, args.project)
        if pk is None:
            print(f"error: no project {args.project!r}", file=sys.stderr)
            return 1
        if args.outcome_judge is not None or cap is not None:
            # The same setting the Settings page writes: the flag not given keeps its value.
            judge = outcome_judge.settings_from(projects.settings_of(conn, pk))
            enabled = judge.enabled if args.outcome_judge is None else args.outcome_judge == "on"
            changes["outcome_judge"] = {"enabled": enabled, "daily_cap": judge.daily_cap if cap is None else int(cap)}
        for name, value in changes.items():
            projects.set_project_setting(conn, args.project, name, value)
    for name, value in changes.items():
        if name == "outcome_judge" and isinstance(value, dict):
            state, cap_text = "on" if value["enabled"] else "off", f"{value['daily_cap']:,}"
            print(f"project {args.project!r}: LLM outcome judge {state}, at most {cap_text} conversations a day")
            continue
        if name == "retention_days":
            print(f"project {args.project!r}: " + (f"keeps {value} days" if value else "keeps everything"))
            continue
        label = "PII scrubbing" if name == "pii_scrubbing" else "name and place redaction"
        print(f"project {args.project!r}: {label} {'on' if value else 'off'}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete old conversations now: older than --older-than, else as each project's retention says."""
    from datetime import timedelta

    from convolens.store import erasure, retention
    from convolens.timeutil import utcnow

    db = _db(Settings.from_env())
    now = utcnow()
    with db.reader() as conn:
        if args.project:
            project_pk = projects.get_project_pk(conn, args.project)
            if project_pk is None:
                print(f"error: no project {args.project!r}", file=sys.stderr)
                return 1
            targets = [project_pk]
        else:
            targets = list(projects.all_project_pks(conn))
        policies = projects.retention_days(conn)
    try:
        age = retention.parse_age(args.older_than) if args.older_than else None
    except ValueError as exc:
        print(f"error: --older-than: {exc}", file=sys.stderr)
        return 2
    total = retention.Pruned()
    for project_pk in targets:
        keep = age if age is not None else timedelta(days=policies[project_pk]) if project_pk in policies else None
        if keep is None:
            continue
        while True:
            with db.writer() as conn:
                pruned = retention.prune_batch(conn, project_pk, now - keep, now)
            total.add(pruned)
            if not pruned.conversations:
                break
    if total.conversations:
        erasure.wipe_deleted(db)
    print(
        f"pruned {total.conversations} conversations, {total.messages} messages, "
        f"{total.end_users} end users left without conversations"
    )
    return 0


def cmd_users_erase(args: argparse.Namespace) -> int:
    import json

    from convolens.store.erasure import erase_end_user, wipe_deleted

    db = _db(Settings.from_env())
    with db.writer() as conn:
        project_pk = projects.get_project_pk(conn, args.project)
        if project_pk is None:
            print(f"error: no project {args.project!r}", file=sys.stderr)
            return 1
        receipt = erase_end_user(conn, project_pk, args.user_id)
    if receipt is None:
        print(f"error: no end user {args.user_id!r} in project {args.project!r}", file=sys.stderr)
        return 1
    wipe_deleted(db)
    print(json.dumps({"status": "erased", **receipt.as_dict()}))
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    """A dashboard account with a role in a project (created if new); prints a generated password once,
    which its owner must change at first sign-in."""
    from convolens.store import accounts, passwords
    from convolens.timeutil import utcnow

    password = args.password or passwords.generated()
    db = _db(Settings.from_env())
    try:
        with db.writer() as conn:
            project_pk, _ = projects.ensure_project(conn, args.project)
            existed = accounts.account_pk(conn, args.email) is not None
            account_pk = accounts.create_account(
                conn, args.email, password, utcnow(), must_change_password=not args.password
            )
            accounts.set_role(conn, account_pk, project_pk, args.role)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{accounts.normalize_email(args.email)} is {args.role} of project {args.project!r}")
    if not existed and not args.password:
        print(f"password (shown once, to be changed at first sign-in): {password}")
    elif existed:
        print("the account existed already: its password is unchanged")
    return 0


def cmd_users_set_password(args: argparse.Namespace) -> int:
    """A dashboard account's new password (its sessions end): the one given, or a generated one printed
    once that must be changed at the next sign-in."""
    from convolens.store import accounts, passwords

    password = args.password or passwords.generated()
    db = _db(Settings.from_env())
    try:
        with db.writer() as conn:
            account_pk = accounts.account_pk(conn, args.email)
            if account_pk is None:
                print(f"error: no dashboard account {accounts.normalize_email(args.email)!r}", file=sys.stderr)
                return 1
            accounts.set_password(conn, account_pk, password, must_change_password=not args.password)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"password of {accounts.normalize_email(args.email)} changed; its sessions are signed out")
    if not args.password:
        print(f"password (shown once, to be changed at next sign-in): {password}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from convolens.demo import run_demo

    return run_demo(host=args.host, port=args.port, conversations=args.conversations)


def cmd_eval_run(args: argparse.Namespace) -> int:
    import os

    from convolens.evaluations import ci

    if not 0 <= args.fail_under <= 1:
        print("convolens eval run: --fail-under is a pass rate from 0 to 1", file=sys.stderr)
        return 2
    return ci.main(
        url=args.url or os.environ.get("CONVOLENS_URL") or "http://127.0.0.1:8000",
        token=args.token or os.environ.get("CONVOLENS_TOKEN") or "",
        test_set=args.test_set,
        version=args.version,
        iterations=args.iterations,
        fail_under=args.fail_under,
        junit_path=args.junit,
        timeout=args.timeout,
        verify=not args.insecure,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convolens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (embedded SQLite unless CONVOLENS_DATABASE_URL)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="json: one object per line with request ids (default); text: for reading by eye",
    )
    serve.add_argument(
        "--graceful-timeout", type=float, default=10.0, help="seconds to let in-flight requests finish on shutdown"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes sharing the port (default 1); on SQLite they take turns writing, on PostgreSQL "
        "they write in parallel",
    )
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(func=cmd_migrate)

    tokens = sub.add_parser("tokens", help="manage API tokens").add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", help="create a token (and its project if new); printed once")
    create.add_argument("--project", required=True)
    create.add_argument("--scope", default="ingest,read", help="comma-separated: ingest, read, admin")
    create.add_argument("--label")
    create.set_defaults(func=cmd_tokens_create)
    listing = tokens.add_parser("list", help="list tokens (prefix, project, scopes, created, last used)")
    listing.add_argument("--project")
    listing.set_defaults(func=cmd_tokens_list)
    revoke = tokens.add_parser("revoke", help="revoke a token by id or prefix; effective at once")
    revoke.add_argument("token", help="the token's id or its prefix as shown by 'tokens list'")
    revoke.set_defaults(func=cmd_tokens_revoke)

    worker = sub.add_parser("worker", help="run an enrichment worker (any number, on PostgreSQL)")
    worker.add_argument("--batch-size", type=int, default=256)
    worker.add_argument(
        "--lease-seconds",
        type=float,
        default=60.0,
        help="how long claimed work stays with this worker before another may take it over (if it died)",
    )
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(func=cmd_worker)
    evals = sub.add_parser("eval", help="evaluations (for CI)").add_subparsers(dest="action", required=True)
    eval_run = evals.add_parser("run", help="run a test set on a server, wait, exit 1 below --fail-under")
    eval_run.add_argument("test_set", help="the test set's name")
    eval_run.add_argument("--version", type=int, help="default: the latest")
    eval_run.add_argument("--iterations", type=int, default=1)
    eval_run.add_argument("--fail-under", type=float, default=1.0, help="the pass rate needed, 0..1 (default 1.0)")
    eval_run.add_argument("--junit", help="write a JUnit XML report to this file")
    eval_run.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the run")
    eval_run.add_argument("--url", help="the server (default CONVOLENS_URL, else http://127.0.0.1:8000)")
    eval_run.add_argument("--token", help="an ingest+read token (default CONVOLENS_TOKEN)")
    eval_run.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    eval_run.set_defaults(func=cmd_eval_run)
    reenrich = sub.add_parser("reenrich", help="queue messages for enrichment again (after a model change)")
    reenrich.add_argument("--project", help="only this project")
    reenrich.set_defaults(func=cmd_reenrich)

    project_cmd = sub.add_parser("projects", help="project settings").add_subparsers(dest="action", required=True)
    project_set = project_cmd.add_parser("set", help="change a project's settings")
    project_set.add_argument("--project", required=True)
    project_set.add_argument(
        "--pii",
        choices=("on", "off"),
        help="scrub PII from messages and metadata before storing them (default on)",
    )
    project_set.add_argument(
        "--pii-names",
        choices=("on", "off"),
        help="also replace people's names and places in message text (default off; needs the names extra)",
    )
    project_set.add_argument(
        "--retention-days", help="delete conversations inactive for this many days (or off: keep everything)"
    )
    project_set.add_argument(
        "--outcome-judge",
        choices=("on", "off"),
        help="let the project's LLM provider judge finished conversations' outcomes (default off; needs a provider)",
    )
    project_set.add_argument(
        "--judge-daily-cap",
        help=f"conversations sent to the judge per UTC day (default {outcome_judge.DEFAULT_DAILY_CAP})",
    )
    project_set.set_defaults(func=cmd_projects_set)

    prune = sub.add_parser("prune", help="delete old conversations now, in small batches")
    prune.add_argument("--older-than", help="an age such as 90d, 12w or 48h (default: each project's retention)")
    prune.add_argument("--project", help="only this project")
    prune.set_defaults(func=cmd_prune)

    users = sub.add_parser("users", help="dashboard accounts, and end users").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", help="a dashboard account with a role in a project")
    create.add_argument("--email", required=True)
    create.add_argument("--role", choices=("admin", "member", "viewer"), required=True)
    create.add_argument("--project", required=True)
    create.add_argument(
        "--password",
        help="at least 10 characters and not a common one; when absent, one is generated, printed once, and "
        "must be changed at first sign-in",
    )
    create.set_defaults(func=cmd_users_create)
    set_password = users.add_parser("set-password", help="give a dashboard account a new password")
    set_password.add_argument("--email", required=True)
    set_password.add_argument(
        "--password",
        help="at least 10 characters and not a common one; when absent, one is generated, printed once, and "
        "must be changed at the next sign-in",
    )
    set_password.set_defaults(func=cmd_users_set_password)
    erase = users.add_parser("erase", help="erase an end user and all their conversations (GDPR)")
    erase.add_argument("--project", required=True)
    erase.add_argument("user_id")
    erase.set_defaults(func=cmd_users_erase)

    demo = sub.add_parser("demo", help="serve with a demo project seeded through the public API")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--conversations", type=int, default=300)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # Ctrl-C: uvicorn has shut down cleanly and raises the signal again after it; a traceback here
        # reads like a crash. 130 is the shell's code for "ended by SIGINT".
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
