"""Internal callers' tokens: the file INTERNAL_TOKENS_FILE that the upstream and Envoy's internal
listener check, and the edge's own token.

    python -m deploy.internal_tokens add NAME --file FILE    new caller; prints its token once
    python -m deploy.internal_tokens init DIR [--chown U:G]  DIR/internal_tokens and DIR/edge.token,
                                                             unless they exist (compose, make run)

The file holds `name:{SHA}base64(sha1(token))` lines (htpasswd's SHA format), never a token.
A caller sends `Authorization: Basic base64(name:token)` (`curl -u name:token ...`). Envoy and the
upstream read the file at start: restart them after adding a caller.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from services.upstream.internal_auth import TokenFileError, htpasswd_line, new_token, parse_tokens

TOKENS_NAME = "internal_tokens"
EDGE_TOKEN_NAME = "edge.token"


@dataclass(frozen=True)
class LocalAuth:
    tokens_file: Path
    edge_token_file: Path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def add_caller(tokens_file: Path, name: str) -> str:
    """Append caller `name` to the file (created if missing); returns its new token."""
    existing = tokens_file.read_text() if tokens_file.exists() else ""
    if existing.strip() and name in parse_tokens(existing, str(tokens_file)):
        raise TokenFileError(f"{tokens_file} already lists caller {name!r}")
    token = new_token()
    line = htpasswd_line(name, token) + "\n"
    if not existing:
        _write_private(tokens_file, line)
    else:
        with tokens_file.open("a") as fh:
            fh.write(("" if existing.endswith("\n") else "\n") + line)
    return token


def ensure(directory: Path) -> LocalAuth:
    """DIR/internal_tokens with an `edge` caller and DIR/edge.token, created once and kept, so
    tokens handed to other internal callers stay valid across restarts."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = LocalAuth(directory / TOKENS_NAME, directory / EDGE_TOKEN_NAME)
    if auth.tokens_file.exists() and auth.edge_token_file.exists():
        parse_tokens(auth.tokens_file.read_text(), str(auth.tokens_file))  # fail early if broken
        return auth
    if auth.tokens_file.exists() or auth.edge_token_file.exists():
        raise TokenFileError(f"{directory} holds only one of {TOKENS_NAME} and {EDGE_TOKEN_NAME}: "
                             "remove it to start over")
    token = new_token()
    _write_private(auth.edge_token_file, token + "\n")
    _write_private(auth.tokens_file, htpasswd_line("edge", token) + "\n")
    return auth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.internal_tokens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add an internal caller and print its token")
    add.add_argument("name")
    add.add_argument("--file", required=True, type=Path, help="the INTERNAL_TOKENS_FILE")
    init = sub.add_parser("init", help="create DIR/internal_tokens and DIR/edge.token if missing")
    init.add_argument("directory", type=Path)
    init.add_argument("--chown", help="UID:GID to hand the files to (containers)")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            print(add_caller(args.file, args.name))
            print(f"caller {args.name!r} added to {args.file}: restart Envoy and the upstream", file=sys.stderr)
            return 0
        auth = ensure(args.directory)
        if args.chown:
            uid, _, gid = args.chown.partition(":")
            for path in (auth.tokens_file, auth.edge_token_file):
                os.chown(path, int(uid), int(gid or uid))
                # Envoy, the edge and the upstream run as one service user in the images.
                path.chmod(0o400)
        print(f"internal callers: {auth.tokens_file}; the edge's token: {auth.edge_token_file}", file=sys.stderr)
        return 0
    except (TokenFileError, OSError, ValueError) as exc:
        print(f"internal_tokens: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
