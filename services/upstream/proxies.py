"""The HTTP proxy of a backend call (see transport.py): the environment's, or one call's."""
from __future__ import annotations

import urllib.request

from yarl import URL

from .errors import TransportError


class Proxies:
    """Which proxy a URL goes through: the environment's, read once (aiohttp's `trust_env`
    would look it up in a thread on every request). Credentials in a proxy URL are sent by
    aiohttp as Proxy-Authorization (on the request, or on CONNECT for https)."""

    def __init__(self) -> None:
        self._env = urllib.request.getproxies_environment()
        self._by_origin: dict[tuple[str, str], URL | None] = {}
        self._parsed: dict[str, URL] = {}

    def parse(self, proxy: str) -> URL:
        got = self._parsed.get(proxy)
        if got is None:
            try:
                got = URL(proxy)
            except ValueError:
                got = URL()
            if got.scheme not in ("http", "https") or not got.host:
                raise TransportError("the configured proxy is not an http:// or https:// URL", retry=False)
            if len(self._parsed) < 1024:
                self._parsed[proxy] = got
        return got

    def for_url(self, url: URL) -> URL | None:
        key = (url.scheme, url.host or "")
        try:
            return self._by_origin[key]
        except KeyError:
            pass
        proxy = self._env.get(url.scheme) or self._env.get("all")
        got = None
        if proxy and not urllib.request.proxy_bypass_environment(url.host or "", self._env):
            got = self.parse(proxy)
        if len(self._by_origin) < 1024:
            self._by_origin[key] = got
        return got
