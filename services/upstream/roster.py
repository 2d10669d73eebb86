"""The pool's members as live objects: built from the member specs, kept in step with files.

`plan()` (blocking: run it in a thread) reads the pool file and every credential file whose
(mtime, size, inode) changed since the last look; `Roster.apply()` (on the event loop) adds
members that appeared, drops members that went away, and hands changed files to their
credential, which revives a DEAD credential when its secret changed (a new login, a new key).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from . import token_store
from .backends import Backend
from .cloud_credentials import (ApiKeyCredential, AuthorizedUserCredential, ServiceAccountCredential, key_id,
                                vertex_file_kind)
from .credentials import Credential
from .oauth_credential import OAuthCredential, looks_like_oauth_creds
from .members import MemberSpec, configured_members
from .settings import Settings
from .token_endpoint import TokenHttp

log = logging.getLogger(__name__)

Stat = tuple[int, int, int]


@dataclass
class Candidate:
    """One member as the files say it is now."""

    identity: str
    spec: MemberSpec
    id: str
    path: Path | None
    stat: Stat | None
    data: Any          # parsed file content, a key string, or None when the file did not change


def _stat(path: Path) -> Stat | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read(path: Path, kind: str) -> Any:
    if kind in ("ai-studio", "vertex-express"):
        return path.read_text().strip()
    return token_store.read_json(path)


def _accepts(kind: str, data: Any) -> bool:
    if kind == "code-assist":
        return looks_like_oauth_creds(data)
    if kind == "vertex":
        return vertex_file_kind(data) is not None
    return isinstance(data, str) and bool(data)


# What a member whose file is a directory reads there (API keys: one key per file).
_DIR_PATTERN = {"code-assist": "*.json", "vertex": "*.json", "ai-studio": "*.key", "vertex-express": "*.key"}

_WHAT = {"code-assist": "a Gemini CLI oauth_creds file (no refresh_token)",
         "vertex": "a service-account or authorized_user JSON file",
         "ai-studio": "a key file", "vertex-express": "a key file"}


def plan(settings: Settings, known: dict[Path, Stat | None]) -> tuple[list[Candidate], list[str]]:
    """Every member now; files unchanged since `known` are not read again (data None)."""
    notes: list[str] = []
    specs = configured_members(settings)  # PoolConfigError goes to the caller
    out: list[Candidate] = []
    for spec in specs:
        if spec.secret is not None:
            prefix = {"ai-studio": "ai-studio", "vertex-express": "vertex-express"}[spec.kind]
            out.append(Candidate(f"{spec.kind}|{spec.secret_source}", spec, spec.name or key_id(prefix, spec.secret),
                                 None, None, spec.secret))
            continue
        assert spec.file is not None
        path = spec.file
        if path.is_dir() and spec.kind in _DIR_PATTERN:
            files = sorted(p for p in path.glob(_DIR_PATTERN[spec.kind]) if p.is_file())
            if not files:
                notes.append(f"no {_DIR_PATTERN[spec.kind]} file in directory {path}")
        elif path.is_file():
            files = [path]
        else:
            notes.append(f"{path} does not exist")
            continue
        for file in files:
            st = _stat(file)
            ident = f"{spec.kind}|{file}"
            cid = (f"{spec.name}-{file.stem}" if len(files) > 1 else spec.name) if spec.name else file.stem
            if file in known and known[file] == st:
                out.append(Candidate(ident, spec, cid, file, st, None))
                continue
            try:
                data = _read(file, spec.kind)
            except (OSError, UnicodeDecodeError, orjson.JSONDecodeError) as exc:
                notes.append(f"{file}: unreadable ({type(exc).__name__})")
                continue
            if not _accepts(spec.kind, data):
                notes.append(f"{file}: not {_WHAT[spec.kind]}")
                continue
            out.append(Candidate(ident, spec, cid, file, st, data))
    return out, notes


class Roster:
    def __init__(self, settings: Settings, http: TokenHttp, backends: dict[str, Backend],
                 make_entry: Callable[[Credential, MemberSpec, Backend], Any]) -> None:
        self._settings = settings
        self._http = http
        self._backends = backends
        self._make_entry = make_entry
        self.stats: dict[Path, Stat | None] = {}

    def credential(self, c: Candidate) -> Credential:
        s, spec = self._settings, c.spec
        if spec.kind == "code-assist":
            cred: Credential = OAuthCredential(c.path, c.data, http=self._http, token_url=s.oauth_token_url,
                                               client_id=s.oauth_client_id, client_secret=s.oauth_client_secret,
                                               timeout=s.refresh_timeout)
            cred.id = c.id
            if not cred.project_override:
                cred.project_override = spec.project or s.google_cloud_project or None
            return cred
        if spec.kind in ("ai-studio", "vertex-express"):
            express = spec.kind == "vertex-express"
            return ApiKeyCredential(c.id, c.data, kind="vertex-ai" if express else "ai-studio-key",
                                    express=express, path=c.path)
        # The member's project, else its file's, else GOOGLE_CLOUD_PROJECT.
        file_project = c.data.get("project_id") or c.data.get("quota_project_id")
        common = dict(http=self._http, token_url=s.vertex_token_url, timeout=s.refresh_timeout, path=c.path,
                      project=spec.project or file_project or s.google_cloud_project or None)
        if vertex_file_kind(c.data) == "service_account":
            return ServiceAccountCredential(c.id, c.data, **common)
        return AuthorizedUserCredential(c.id, c.data, **common)

    def backend(self, spec: MemberSpec) -> Backend:
        return self._backends[{"code-assist": "gemini-cli-oauth", "ai-studio": "ai-studio-key"}.get(spec.kind,
                                                                                                     "vertex-ai")]

    def apply(self, entries: list[Any], candidates: list[Candidate]) -> tuple[list[Any], bool]:
        """The new entry list (same objects for members that stayed) and whether it changed."""
        by_identity = {e.identity: e for e in entries}
        out: list[Any] = []
        changed = False
        for c in candidates:
            entry = by_identity.pop(c.identity, None)
            if entry is not None and entry.spec != c.spec:
                # Routing facts changed (models, priority, ...): rebuild the member.
                entry, changed = None, True
            if entry is None:
                data = c.data
                if data is None and c.path is not None:
                    try:
                        data = _read(c.path, c.spec.kind)
                    except (OSError, UnicodeDecodeError, orjson.JSONDecodeError):
                        continue
                    c.data = data
                try:
                    cred = self.credential(c)
                except (ValueError, KeyError) as exc:
                    log.warning("credential %s: cannot be used: %s", c.id, exc)
                    continue
                entry = self._make_entry(cred, c.spec, self.backend(c.spec))
                entry.identity = c.identity
                changed = True
            elif c.data is not None and c.path is not None:
                if entry.cred.reload(c.data):
                    log.info("credential %s: new secret material picked up from %s", entry.cred.id, c.path)
                    changed = True
            if c.path is not None:
                self.stats[c.path] = c.stat
            out.append(entry)
        if by_identity:
            changed = True
            for gone in by_identity.values():
                log.info("credential %s left the pool", gone.cred.id)
        return out, changed

