"""Admin command line for license keys and the usage ledger.

    python -m services.edge.keys create --name N [--models 'gemini-2.5-*,...'] [--rpm N] [--tpm N]
                                        [--quota N] [--max-concurrent N] [--expires 2026-12-31|30d|12h]
    python -m services.edge.keys list
    python -m services.edge.keys show REF
    python -m services.edge.keys revoke REF
    python -m services.edge.keys enable|disable REF
    python -m services.edge.keys usage [REF] [--since 7d] [--recent N]
    python -m services.edge.keys migrate
    python -m services.edge.keys prune [--days N]

REF is a key id, its name, its visible prefix or the key itself. `create` prints the new key
alone on the first line of stdout (scripts rely on that) and never again. The command reads the
same settings as the edge (LICENSE_DB, LICENSE_SECRET, DATA_DIR, GATEWAY_CONFIG), and a running
edge sees every change within AUTH_REFRESH_SECONDS. `--data-dir DIR` stands for DATA_DIR;
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
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Sequence

from services.edge.data_dir import resolve_data_dir
from services.edge.settings import EdgeSettings, load_settings
from services.edge import retention
from services.edge.store import (KeyRecord, LicenseStore, NewKey, StoreError, describe_location, generate_key,
                                 hash_key, key_prefix, open_store)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class CliError(Exception):
    pass


def parse_expiry(text: str | None, now: float | None = None) -> float | None:
    """'30d' / '12h' / '90m' / '45s' / '2w' from now; '2026-12-31' = valid through that day (UTC);
    an ISO date-time (UTC unless it says otherwise); 'never' or empty = no expiry."""
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    text = text.strip()
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.lower())
    if m:
        return now + float(m.group(1)) * _UNITS[m.group(2)]
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return (day + timedelta(days=1)).timestamp()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"cannot read expiry {text!r}: use 30d, 12h, 2026-12-31 or an ISO date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_since(text: str, now: float) -> float:
    """'7d' / '24h' = that long ago; a date or date-time = from then on."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"cannot read --since {text!r}: use 7d, 24h or a date") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def parse_models(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(p.strip() for p in text.split(",") if p.strip())


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


async def _one(store: LicenseStore, ref: str) -> KeyRecord:
    found = await store.get_key(ref)
    if not found:
        raise CliError(f"no key matches {ref!r}")
    if len(found) > 1:
        ids = ", ".join(f"{r.id} ({r.name}, {r.prefix}…)" for r in found)
        raise CliError(f"{ref!r} matches several keys: {ids}; use the id")
    return found[0]


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


async def run(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    settings = cli_settings(args)
    err.write(f"database: {describe_location(settings.license_db_location)}\n")
    store = open_store(settings.license_db_location)
    now = time.time()
    try:
        if args.cmd == "create":
            for flag in ("rpm", "tpm", "quota", "max_concurrent"):
                v = getattr(args, flag)
                if v is not None and v < 0:
                    raise CliError(f"--{flag.replace('_', '-')} must be >= 0")
            spec = NewKey(name=args.name, models=parse_models(args.models), rpm=args.rpm, tpm=args.tpm,
                          quota=args.quota, expires_at=parse_expiry(args.expires, now),
                          max_concurrent=args.max_concurrent)
            key = generate_key()
            rec = await store.create_key(hash_key(settings.resolve_secret(), key), key_prefix(key), spec)
            out.write(key + "\n")
            out.write(describe(rec, now) + "\n")
            if spec.expires_at is not None and spec.expires_at <= now:
                err.write("warning: this key is already expired\n")
            err.write("Store the key now: it is kept only as a hash and cannot be shown again.\n")
        elif args.cmd == "list":
            keys = await store.list_keys()
            rows = [(r.id, r.name, r.prefix + "…", _state(r, now), ",".join(r.models) or "*", _fmt_opt(r.rpm),
                     _fmt_opt(r.tpm), _fmt_opt(r.quota), r.tokens_used, _fmt_time(r.expires_at)) for r in keys]
            out.write(table(("ID", "NAME", "PREFIX", "STATE", "MODELS", "RPM", "TPM", "QUOTA", "USED", "EXPIRES"),
                            rows) + "\n")
        elif args.cmd == "show":
            rec = await _one(store, args.ref)
            out.write(describe(rec, now) + "\n")
            summary = await store.usage_summary(rec.id)
            if summary:
                out.write("\n" + _usage_table(summary, {rec.id: rec.name}) + "\n")
        elif args.cmd == "revoke":
            rec = await _one(store, args.ref)
            changed = await store.revoke(rec.id)
            out.write(f"{'revoked' if changed else 'already revoked'}: key {rec.id} ({rec.name}, {rec.prefix}…)\n")
        elif args.cmd in ("enable", "disable"):
            rec = await _one(store, args.ref)
            await store.set_enabled(rec.id, args.cmd == "enable")
            out.write(f"{args.cmd}d: key {rec.id} ({rec.name}, {rec.prefix}…)\n")
        elif args.cmd == "usage":
            key_id = (await _one(store, args.ref)).id if args.ref else None
            since = parse_since(args.since, now) if args.since else None
            names = {r.id: r.name for r in await store.list_keys()}
            if args.recent:
                rows = await store.recent_usage(key_id, args.recent)
                out.write(table(("TIME", "KEY", "API", "OP", "MODEL", "STATUS", "PROMPT", "COMPLETION", "THOUGHTS",
                                 "TOTAL", "MS", "SERVED BY"),
                                [(_fmt_time(r.created_at), names.get(r.key_id, r.key_id), r.api, r.op, r.model,
                                  r.status, r.prompt_tokens, r.completion_tokens, r.thought_tokens, r.total_tokens,
                                  f"{r.latency_ms:.0f}", _served_by(r.credential_kind, r.credential_id))
                                 for r in rows]) + "\n")
            else:
                out.write(_usage_table(await store.usage_summary(key_id, since), names) + "\n")
                kinds = await store.usage_by_credential(key_id, since)
                if any(kind for kind, *_ in kinds):
                    out.write("\n" + table(("SERVED BY", "REQUESTS", "ERRORS", "TOTAL"),
                                           [(kind or "(none)", n, errors, total) for kind, n, errors, total in kinds])
                              + "\n")
        elif args.cmd == "migrate":
            out.write(f"schema version {await store.migrate()}\n")
        elif args.cmd == "prune":
            days = settings.usage_retention_days if args.days is None else args.days
            if days < 0:
                raise CliError("--days must be >= 0")
            if days == 0:
                out.write("retention is off (USAGE_RETENTION_DAYS=0): nothing pruned\n")
            else:
                done = await retention.run_once(store, days, now)
                state = " (another process is pruning right now)" if done.skipped else ""
                out.write(f"rolled up and deleted {done.rows} ledger rows older than "
                          f"{_fmt_time(retention.cutoff(days, now))}{state}\n")
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
    except (CliError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
