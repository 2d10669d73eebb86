"""A small synchronous client for the simulator's /_sim control API (used by tests)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx


class SimControl:
    def __init__(self, base_url: str, timeout: float = 10.0, verify: Any = True) -> None:
        self.url = base_url.rstrip("/")
        # verify: an ssl.SSLContext trusting the test CA when the simulator serves HTTPS.
        self._http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False, verify=verify)

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None) -> Any:
        resp = self._http.request(method, path, json=json, params=params)
        if resp.status_code >= 400:
            raise RuntimeError(f"simulator {method} {path} -> {resp.status_code}: {resp.text}")
        return resp.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faults ---------------------------------------------------------------------------

    def add_fault(self, account: str = "*", op: str = "*", kind: str = "", model: str | None = None,
                  times: int = 1, retry_delay: str | float | None = None, after_chunks: int | None = None,
                  delay: float | None = None, reason: str | None = None, message: str | None = None) -> str:
        """Add a fault; returns its id. See README.md for kinds and ops."""
        if not kind:
            raise TypeError("add_fault() needs kind=, e.g. '429', 'cut', 'slow'")
        spec: dict[str, Any] = {"account": account, "op": op, "kind": str(kind), "times": times}
        optional = {"model": model, "retry_delay": retry_delay, "after_chunks": after_chunks, "delay": delay,
                    "reason": reason, "message": message}
        spec.update({k: v for k, v in optional.items() if v is not None})
        return self._call("POST", "/_sim/faults", spec)["id"]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sim/faults")

    def remove_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"/_sim/faults/{quote(fault_id, safe='')}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/_sim/faults")

    def release(self) -> int:
        """Let every reply held by a "hold" fault go on; how many were waiting."""
        return self._call("POST", "/_sim/release", {})["released"]

    # --- accounts -------------------------------------------------------------------------

    def add_account(self, refresh_token: str, **fields: Any) -> dict[str, Any]:
        """Register (or redefine) an account: email, onboarded, tier, project, token_ttl, revoked."""
        return self._call("POST", "/_sim/accounts", {"refresh_token": refresh_token, **fields})

    def accounts(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sim/accounts")

    def revoke(self, refresh_token: str) -> dict[str, Any]:
        return self._call("POST", f"/_sim/accounts/{quote(refresh_token, safe='')}/revoke")

    def expire(self, refresh_token: str) -> dict[str, Any]:
        return self._call("POST", f"/_sim/accounts/{quote(refresh_token, safe='')}/expire")

    # --- AI Studio / Vertex AI ---------------------------------------------------------------

    def add_key(self, key: str, revoked: bool = False, leaked: bool = False) -> dict[str, Any]:
        return self._call("POST", "/_sim/keys", {"key": key, "revoked": revoked, "leaked": leaked})

    def add_service_account(self, client_email: str, public_key_pem: str, project: str | None = None,
                            revoked: bool = False, token_ttl: float = 3600) -> dict[str, Any]:
        return self._call("POST", "/_sim/service_accounts", {
            "client_email": client_email, "public_key_pem": public_key_pem, "project": project,
            "revoked": revoked, "token_ttl": token_ttl})

    def service_accounts(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sim/service_accounts")

    def revoke_service_account(self, client_email: str) -> dict[str, Any]:
        return self._call("POST", f"/_sim/service_accounts/{quote(client_email, safe='')}/revoke")

    def expire_service_account(self, client_email: str) -> dict[str, Any]:
        return self._call("POST", f"/_sim/service_accounts/{quote(client_email, safe='')}/expire")

    # --- record ---------------------------------------------------------------------------

    def requests(self, op: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("op", op), ("account", account)) if v is not None}
        return self._call("GET", "/_sim/requests", params=params or None)

    def clear_requests(self) -> None:
        self._call("DELETE", "/_sim/requests")

    # --- config ---------------------------------------------------------------------------

    def config(self, chunk_delay: float | None = None, latency: float | None = None) -> dict[str, float]:
        """Set what is given; returns the resulting config."""
        spec = {k: v for k, v in (("chunk_delay", chunk_delay), ("latency", latency)) if v is not None}
        return self._call("POST", "/_sim/config", spec)

    def health(self) -> bool:
        return self._http.get("/_sim/health").status_code == 200
