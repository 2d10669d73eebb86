"""The admin token: who may use the admin console and its JSON API.

`ADMIN_TOKEN` set: that token. Unset: one is generated at first start, only its keyed hash
(HMAC with the license secret, as license keys are kept) is written to $DATA_DIR/admin_token_hash
(0600), and the token itself is printed once; `python -m services.edge.keys admin-token rotate`
replaces it and prints the new one. A running edge reads the hash file again when it changes,
so a rotation takes effect at once.

Admin tokens start with `gwadmin-`, license keys with `gcli-`: the two never look alike, and
the admin routes also refuse any token that is a license key (see routes/admin.py).
"""
from __future__ import annotations

import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from services.edge.store import hash_key, hashes_equal

ADMIN_SCHEME = "gwadmin-"
HASH_FILE = "admin_token_hash"


def generate_admin_token() -> str:
    return ADMIN_SCHEME + secrets.token_urlsafe(32)


def hash_path(data_dir: Path) -> Path:
    return Path(data_dir) / HASH_FILE


def _write_hash(path: Path, digest: str, *, exclusive: bool) -> bool:
    """Write `digest` to `path` (0600). With `exclusive`, only if no file exists (False then)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(digest + "\n")
        return True
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(digest + "\n")
    os.replace(tmp, path)
    return True


def ensure_admin_token(data_dir: Path, secret: bytes) -> str | None:
    """Generate the admin token on first start: the new token (to print once), or None when
    one was made before (by this or another process; O_EXCL lets exactly one win)."""
    path = hash_path(data_dir)
    if path.exists():
        return None
    token = generate_admin_token()
    return token if _write_hash(path, hash_key(secret, token), exclusive=True) else None


def rotate_admin_token(data_dir: Path, secret: bytes) -> str:
    """A new admin token replacing the stored one; the old one stops working at once."""
    token = generate_admin_token()
    _write_hash(hash_path(data_dir), hash_key(secret, token), exclusive=False)
    return token


class AdminTokenCheck:
    """Verifies presented tokens against ADMIN_TOKEN or the stored hash, in constant time."""

    def __init__(self, secret: bytes, data_dir: Path, configured: str | None) -> None:
        self._secret = secret
        self._path = hash_path(data_dir)
        self._fixed = hash_key(secret, configured) if configured else None
        self._stamp: tuple[int, int, int] | None = None
        self._stored: str | None = None

    @property
    def from_setting(self) -> bool:
        return self._fixed is not None

    def _expected(self) -> str | None:
        if self._fixed is not None:
            return self._fixed
        try:
            st = self._path.stat()
        except OSError:
            self._stamp, self._stored = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                self._stored = self._path.read_text().strip() or None
            except OSError:
                self._stored = None
            self._stamp = stamp
        return self._stored

    def verify(self, token: str) -> bool:
        expected = self._expected()
        presented = hash_key(self._secret, token)
        # Compared even when nothing is configured, so timing says nothing about the setup.
        return hashes_equal(presented, expected or "0" * 64) and expected is not None


@dataclass
class FailedLogins:
    """Failed admin logins per source: after `limit` within `window` seconds, the source waits."""

    limit: int = 10
    window: float = 60.0
    max_sources: int = 10_000
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, source: str, now: float | None = None) -> float:
        """Seconds this source must wait before its next try (0: it may try now)."""
        now = time.monotonic() if now is None else now
        times = self._seen.get(source)
        if not times:
            return 0.0
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._seen[source]
            return 0.0
        return self.window - (now - times[0]) if len(times) >= self.limit else 0.0

    def failed(self, source: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if source not in self._seen and len(self._seen) >= self.max_sources:
            # Bounded memory: forget the oldest sources rather than grow.
            for old in list(self._seen)[: self.max_sources // 10]:
                del self._seen[old]
        self._seen.setdefault(source, deque(maxlen=self.limit)).append(now)

    def succeeded(self, source: str) -> None:
        self._seen.pop(source, None)
