"""Copy Gemini CLI credentials from a read-only source into the upstream's writable directory.

    python -m deploy.seed_credentials SOURCE DEST [--chown UID:GID]

The upstream rewrites a credential file whenever it refreshes the access token, but a
Kubernetes Secret or a file bind-mounted from the host is read-only. So an init step
(Kubernetes initContainer, compose one-shot service) copies each credential into a volume:

- SOURCE is one credential file or a directory of them (a mounted Secret: every visible
  file whose content is a Gemini CLI oauth_creds.json, whatever its name).
- DEST/<name>.json is written when missing, or when its refresh token differs from the
  source's (a new login); an existing copy with the same refresh token is kept, since it may
  hold a fresher access token than the source.

Exit status 1 when SOURCE holds no credential at all, so a misconfigured deployment stops at
the init step with a message instead of starting an upstream with an empty pool.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Literal, NamedTuple

import orjson

from services.upstream.oauth_credential import looks_like_oauth_creds
from services.upstream.token_store import atomic_write_json, read_json


def source_files(source: Path) -> list[Path]:
    if source.is_dir():
        # Secret volumes also hold hidden bookkeeping entries (..data, ..2026_...): skip them.
        return sorted(p for p in source.iterdir() if not p.name.startswith(".") and p.is_file())
    return [source] if source.is_file() else []


class Outcome(NamedTuple):
    action: Literal["copied", "replaced", "kept", "skipped"]
    source: Path
    detail: str

    @property
    def usable(self) -> bool:
        return self.action != "skipped"

    def __str__(self) -> str:
        return f"{self.action} {self.source.name}: {self.detail}"


def seed(source: Path, dest: Path, owner: tuple[int, int] | None = None) -> list[Outcome]:
    """Copy credentials from `source` into `dest`; one outcome per source file."""
    dest.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    for src in source_files(source):
        try:
            data = read_json(src)
        except (OSError, orjson.JSONDecodeError):
            outcomes.append(Outcome("skipped", src, "not JSON"))
            continue
        if not looks_like_oauth_creds(data):
            outcomes.append(Outcome("skipped", src, "not a Gemini CLI oauth_creds file (no refresh_token)"))
            continue
        # The upstream loads *.json from its directory.
        target = dest / (src.name if src.suffix == ".json" else f"{src.name}.json")
        try:
            current = read_json(target)
        except (OSError, orjson.JSONDecodeError):
            current = None
        if isinstance(current, dict) and current.get("refresh_token") == data["refresh_token"]:
            outcomes.append(Outcome("kept", src, f"{target} has the same login, maybe a fresher token"))
            continue
        atomic_write_json(target, data)
        if owner is not None:
            os.chown(target, *owner)
        outcomes.append(Outcome("replaced" if current is not None else "copied", src, f"-> {target}"))
    return outcomes


def _owner(value: str) -> tuple[int, int]:
    uid, _, gid = value.partition(":")
    return int(uid), int(gid or uid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.seed_credentials", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--chown", type=_owner, metavar="UID:GID",
                        help="owner of the written files (when run as root for a non-root upstream)")
    args = parser.parse_args(argv)
    outcomes = seed(args.source, args.dest, args.chown)
    if args.chown is not None:
        os.chown(args.dest, *args.chown)
    for outcome in outcomes:
        print(f"seed_credentials: {outcome}")
    if not any(o.usable for o in outcomes):
        print(f"seed_credentials: no Gemini CLI credential in {args.source}: provide oauth_creds.json "
              "(run `gemini` once and log in with Google; it writes ~/.gemini/oauth_creds.json)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
