"""Admin command line for license keys and the usage ledger.

    python -m services.edge.keys create --name N [--models 'gemini-2.5-*,...'] [--rpm N] [--tpm N]
                                        [--quota N] [--max-concurrent N] [--expires 2026-12-31|30d|12h]
    python -m services.edge.keys list
    python -m services.edge.keys show REF
    python -m services.edge.keys revoke REF
    python -m services.edge.keys enable|disable REF
    python -m services.edge.keys usage [REF] [--since 7d] [--recent N]
    python -m services.edge.keys edit REF [--name N] [--models ...] [--rpm N|none] [--tpm N|none]
                                          [--quota N|none] [--max-concurrent N|none] [--expires 30d|never]
    python -m services.edge.keys admin-token rotate
    python -m services.edge.keys migrate
    python -m services.edge.keys prune [--days N]

Every command goes through services/edge/admin_service.py, the layer the admin console's
JSON API calls too.

REF is a key id, its name, its visible prefix or the key itself. `create` prints the new key
alone on the first line of stdout (scripts rely on that) and never again. The command reads the
same settings as the edge (LICENSE_DB, LICENSE_SECRET, DATA_DIR, GATEWAY_CONFIG), and a running
edge sees every change within AUTH_REFRESH_SECONDS (at once with REDIS_URL set: the change is
announced on Redis). `--data-dir DIR` stands for DATA_DIR;
`--demo` means the database of `make demo` ($DATA_DIR/demo, its own secret, whatever LICENSE_DB
says). Every command names the database it used on stderr (a PostgreSQL password never).
`migrate` brings the database's schema up to date (the edge does so at start-up too); `prune`
runs usage retention now: ledger rows older than USAGE_RETENTION_DAYS (or --days) are summed
into daily totals and deleted.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import datetime, timezone
from typing import Sequence

from services.edge.admin_service import AdminError, AdminService, parse_expiry, parse_models, parse_since
from services.edge.admin_token import rotate_admin_token
from services.edge.data_dir import resolve_data_dir
from services.edge.key_events import KeyChangePublisher, NotifyingStore
from services.edge.settings import EdgeSettings, load_settings
from services.edge import retention
from services.edge.store import KeyRecord, StoreError, describe_location, open_store

# The CLI's errors are the service's (parse_expiry & co. raise them too).
CliError = AdminError
__all__ = ["CliError", "parse_expiry", "parse_models", "parse_since", "main", "run", "build_parser"]


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _fmt_opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def _state(rec: KeyRecord, now: float) -> str:
    return rec.refusal(now) or "active"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def describe(rec: KeyRecord, now: float) -> str:
    rows = [
        ("id", rec.id), ("name", rec.name), ("prefix", rec.prefix + "…"), ("state", _state(rec, now)),
        ("models", ",".join(rec.models) or "* (all)"), ("rpm", _fmt_opt(rec.rpm)), ("tpm", _fmt_opt(rec.tpm)),
        ("quota", _fmt_opt(rec.quota)), ("concurrent", _fmt_opt(rec.max_concurrent)),
        ("tokens_used", rec.tokens_used),
        ("expires", _fmt_time(rec.expires_at)), ("created", _fmt_time(rec.created_at)),
        ("revoked", _fmt_time(rec.revoked_at)),
    ]
    return "\n".join(f"{k + ':':<13}{v}" for k, v in rows)


def cli_settings(args: argparse.Namespace) -> EdgeSettings:
    """The edge's settings, with the data directory chosen the way `make run` / `make demo` do."""
    demo = getattr(args, "demo", False)
    override = getattr(args, "data_dir", None)
    if not demo and not override:
        return load_settings()
    overrides: dict = {"data_dir": resolve_data_dir(os.environ, demo=demo, override=override)}
    if demo:
        # The demo's edge ignores these too (deploy/local.py): its database and secret are its own.
        overrides.update(license_db="", license_secret=None)
    return load_settings(**overrides)


def _limit(text: str | None) -> int | None:
    """An `edit` limit: a number, or 'none' to remove it."""
    if text is None or text.strip().lower() in ("none", "-", ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise CliError(400, f"{text!r} is not a whole number (or 'none')") from None


async def run(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    settings = cli_settings(args)
    if args.cmd == "admin-token":
        token = rotate_admin_token(settings.data_dir, settings.resolve_secret())
        err.write(f"admin token hash: {settings.data_dir / 'admin_token_hash'}\n")
        out.write(token + "\n")
        if settings.admin_token is not None and settings.admin_token.get_secret_value():
            err.write("warning: ADMIN_TOKEN is set, so the edge uses it and ignores this token\n")
        err.write("Store the token now: it is kept only as a hash and cannot be shown again. "
                  "A running edge accepts it at once; the old one no longer works.\n")
        return 0
    err.write(f"database: {describe_location(settings.license_db_location)}\n")
    store = open_store(settings.license_db_location)
    if settings.redis_url_value:
        # Every edge drops its cached key records the moment a key changes (services/edge/key_events.py).
        store = NotifyingStore(store, KeyChangePublisher.from_url(settings.redis_url_value, settings.redis_timeout))
    admin = AdminService(store, settings.resolve_secret())
    now = time.time()
    try:
        if args.cmd == "create":
            for flag in ("rpm", "tpm", "quota", "max_concurrent"):
                v = getattr(args, flag)
                if v is not None and v < 0:
                    raise CliError(400, f"--{flag.replace('_', '-')} must be >= 0")
            expires = parse_expiry(args.expires, now)
            key, rec = await admin.create_key(args.name, models=parse_models(args.models), rpm=args.rpm,
                                              tpm=args.tpm, quota=args.quota, max_concurrent=args.max_concurrent,
                                              expires_at=expires)
            out.write(key + "\n")
            out.write(describe(rec, now) + "\n")
            if expires is not None and expires <= now:
                err.write("warning: this key is already expired\n")
            err.write("Store the key now: it is kept only as a hash and cannot be shown again.\n")
        elif args.cmd == "list":
            keys = await admin.list_keys()
            rows = [(r.id, r.name, r.prefix + "…", _state(r, now), ",".join(r.models) or "*", _fmt_opt(r.rpm),
                     _fmt_opt(r.tpm), _fmt_opt(r.quota), r.tokens_used, _fmt_time(r.expires_at)) for r in keys]
            out.write(table(("ID", "NAME", "PREFIX", "STATE", "MODELS", "RPM", "TPM", "QUOTA", "USED", "EXPIRES"),
                            rows) + "\n")
        elif args.cmd == "show":
            rec = await admin.find(args.ref)
            out.write(describe(rec, now) + "\n")
            summary = await admin.usage_summary(rec.id)
            if summary:
                out.write("\n" + _usage_table(summary, {rec.id: rec.name}) + "\n")
        elif args.cmd == "revoke":
            rec = await admin.find(args.ref)
            rec, changed = await admin.revoke(rec.id)
            out.write(f"{'revoked' if changed else 'already revoked'}: key {rec.id} ({rec.name}, {rec.prefix}…)\n")
        elif args.cmd in ("enable", "disable"):
            rec = await admin.set_enabled((await admin.find(args.ref)).id, args.cmd == "enable")
            out.write(f"{args.cmd}d: key {rec.id} ({rec.name}, {rec.prefix}…)\n")
        elif args.cmd == "edit":
            rec = await admin.find(args.ref)
            changes: dict = {}
            if args.name is not None:
                changes["name"] = args.name
            if args.models is not None:
                changes["models"] = parse_models(args.models)
            for flag in ("rpm", "tpm", "quota", "max_concurrent"):
                if getattr(args, flag) is not None:
                    changes[flag] = _limit(getattr(args, flag))
            if args.expires is not None:
                changes["expires_at"] = parse_expiry(args.expires, now)
            if not changes:
                raise CliError(400, "nothing to change: give --name, --models, --rpm, --tpm, --quota, "
                               "--max-concurrent or --expires")
            rec = await admin.update_key(rec.id, changes)
            out.write(describe(rec, now) + "\n")
        elif args.cmd == "usage":
            key_id = (await admin.find(args.ref)).id if args.ref else None
            since = parse_since(args.since, now) if args.since else None
            names = await admin.key_names()
            if args.recent:
                rows = await admin.recent(key_id, args.recent)
                out.write(table(("TIME", "KEY", "API", "OP", "MODEL", "STATUS", "PROMPT", "COMPLETION", "THOUGHTS",
                                 "TOTAL", "MS", "SERVED BY"),
                                [(_fmt_time(r.created_at), names.get(r.key_id, r.key_id), r.api, r.op, r.model,
                                  r.status, r.prompt_tokens, r.completion_tokens, r.thought_tokens, r.total_tokens,
                                  f"{r.latency_ms:.0f}", _served_by(r.credential_kind, r.credential_id))
                                 for r in rows]) + "\n")
            else:
                out.write(_usage_table(await admin.usage_summary(key_id, since), names) + "\n")
                kinds = await admin.usage_by_credential(key_id, since)
                if any(kind for kind, *_ in kinds):
                    out.write("\n" + table(("SERVED BY", "REQUESTS", "ERRORS", "TOTAL"),
                                           [(kind or "(none)", n, errors, total) for kind, n, errors, total in kinds])
                              + "\n")
        elif args.cmd == "migrate":
            out.write(f"schema version {await store.migrate()}\n")
        elif args.cmd == "prune":
            days = settings.usage_retention_days if args.days is None else args.days
            if days < 0:
                raise CliError(400, "--days must be >= 0")
            if days == 0:
                out.write("retention is off (USAGE_RETENTION_DAYS=0): nothing pruned\n")
            else:
                done = await retention.run_once(store, days, now)
                state = " (another process is pruning right now)" if done.skipped else ""
                out.write(f"rolled up and deleted {done.rows} ledger rows older than "
                          f"{_fmt_time(retention.cutoff(days, now))}{state}\n")
        if isinstance(store, NotifyingStore) and store.announced is False:
            err.write("warning: Redis could not be told; edges see the change within AUTH_REFRESH_SECONDS\n")
        return 0
    finally:
        await store.close()


def _served_by(kind: str, credential_id: str) -> str:
    """Which credential served a call: "ai-studio-key/studio-1", or "-" when none did."""
    if not kind:
        return "-"
    return f"{kind}/{credential_id}" if credential_id else kind


def _usage_table(summary, names: dict[int, str]) -> str:
    return table(("KEY", "MODEL", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "THOUGHTS", "TOTAL"),
                 [(names.get(s.key_id, s.key_id), s.model, s.requests, s.errors, s.prompt_tokens,
                   s.completion_tokens, s.thought_tokens, s.total_tokens) for s in summary])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.edge.keys", description="Manage gateway license keys.")
    p.add_argument("--data-dir", help="the data directory (default: DATA_DIR, else ./data)")
    p.add_argument("--demo", action="store_true", help="the database of `make demo` (DATA_DIR/demo)")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True)
    c.add_argument("--models", help="comma-separated glob patterns, e.g. 'gemini-2.5-*,gemini-3-pro-preview'")
    c.add_argument("--rpm", type=int, help="requests per minute")
    c.add_argument("--tpm", type=int, help="tokens per minute")
    c.add_argument("--quota", type=int, help="total tokens")
    c.add_argument("--max-concurrent", type=int, help="requests of this key that may run at once")
    c.add_argument("--expires", help="30d, 12h, 2026-12-31 (valid through that day, UTC) or an ISO date-time")
    sub.add_parser("list", help="all keys")
    for name, text in (("show", "one key and its usage"), ("revoke", "refuse a key from now on"),
                       ("enable", "re-enable a disabled key"), ("disable", "switch a key off (reversible)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("ref", help="id, name, visible prefix or the key")
    e = sub.add_parser("edit", help="change a key's name, models or limits ('none' removes a limit)")
    e.add_argument("ref", help="id, name, visible prefix or the key")
    e.add_argument("--name")
    e.add_argument("--models", help="comma-separated glob patterns ('' allows every model)")
    for flag, text in (("--rpm", "requests per minute"), ("--tpm", "tokens per minute"), ("--quota", "total tokens"),
                       ("--max-concurrent", "requests that may run at once")):
        e.add_argument(flag, help=f"{text}, or 'none'")
    e.add_argument("--expires", help="30d, 2026-12-31, an ISO date-time, or 'never'")
    t = sub.add_parser("admin-token", help="replace the admin console's token and print the new one once")
    t.add_argument("action", choices=("rotate",))
    u = sub.add_parser("usage", help="token usage per key and model")
    u.add_argument("ref", nargs="?", help="only this key")
    u.add_argument("--since", help="only the last 7d / 24h / ...")
    u.add_argument("--recent", type=int, metavar="N", help="the last N ledger rows instead of totals")
    sub.add_parser("migrate", help="bring the database schema up to date")
    r = sub.add_parser("prune", help="roll up and delete ledger rows older than USAGE_RETENTION_DAYS")
    r.add_argument("--days", type=int, help="this age instead of USAGE_RETENTION_DAYS")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (AdminError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
