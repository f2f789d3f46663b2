"""Fetching user-supplied URLs without opening the internal network (SSRF defence).

Every request resolves the host once, refuses loopback, private, link-local
(169.254.169.254 included), multicast, reserved, unspecified and IPv4-mapped/embedded
private addresses, then connects to the address it checked (the URL is rewritten to
the IP; Host header and TLS SNI keep the name), so a DNS answer that changes between
check and connect (rebinding) cannot redirect it. Redirects are followed by hand, at
most three, each re-checked. Responses are streamed under a size and time limit.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

MAX_REDIRECTS = 3
Resolver = Callable[[str, int], list[str]]


class UnsafeURLError(ValueError):
    """The URL may not be fetched; the message says why (safe to show the caller)."""


class FetchError(ValueError):
    """The URL was allowed but fetching it failed (timeout, size, status)."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeURLError(f"host {host!r} does not resolve") from exc
    except (UnicodeError, ValueError) as exc:  # IDNA refused it, or a NUL in it
        raise UnsafeURLError(f"host {host!r} is not a valid host name: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def host_problem(host: str) -> str | None:
    """Why ``host`` (lower-case, no trailing dot) is not a usable host name, or None.

    The resolver's IDNA encoding raises ``UnicodeError`` (not ``gaierror``) for an empty
    label or one over 63 characters; checked here first, each case gets a message."""
    if not host.isprintable() or any(c.isspace() for c in host):
        return "it contains control or space characters"
    if host.startswith("[") or ":" in host:  # an IPv6 literal: the IP checks decide
        return None
    if len(host) > 253:
        return f"it is {len(host)} characters long; at most 253 are allowed"
    for label in host.split("."):
        if not label:
            return "it has an empty label (two dots in a row, or a leading dot)"
        if len(label) > 63:
            return f"the label {label[:20]}... is {len(label)} characters; at most 63"
    try:
        host.encode("idna")
    except UnicodeError as exc:
        return f"IDNA encoding fails: {exc}"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: str) -> str | None:
    """Why ``ip`` may not be contacted, or None when it is a public address."""
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return f"{ip!r} is not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = forbidden_reason(str(inner))
            return f"IPv6 address embedding {inner}: {reason}" if reason else None
    checks = (
        ("loopback", address.is_loopback),
        ("link-local (cloud metadata lives here)", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{address} is a {name} address"
    return None


@dataclass
class URLPolicy:
    allow_hosts: frozenset[str] = frozenset()
    resolver: Resolver = system_resolver
    schemes: tuple[str, ...] = ("http", "https")

    def check(self, url: str) -> tuple[httpx.URL, str]:
        """Validate ``url``; return it and the IP address to connect to."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise UnsafeURLError(f"malformed URL: {exc}") from exc
        if parts.scheme.lower() not in self.schemes:
            raise UnsafeURLError(f"only {', '.join(self.schemes)} URLs are accepted")
        if parts.username or parts.password:
            raise UnsafeURLError("URLs with credentials are not accepted")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise UnsafeURLError("the URL has no host")
        problem = host_problem(host)
        if problem:
            raise UnsafeURLError(f"host {host[:80]!r} is not a valid host name: {problem}")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError as exc:
            raise UnsafeURLError(f"invalid port: {exc}") from exc
        addresses = self.resolver(host, port)
        if not addresses:
            raise UnsafeURLError(f"host {host!r} does not resolve")
        if not (host in self.allow_hosts or f"{host}:{port}" in self.allow_hosts):
            for address in addresses:
                reason = forbidden_reason(address)
                if reason:
                    raise UnsafeURLError(f"{host} resolves to a forbidden address: {reason}")
        try:
            return httpx.URL(url), addresses[0]
        except httpx.InvalidURL as exc:
            raise UnsafeURLError(f"malformed URL: {exc}") from exc


def _pinned(url: httpx.URL, ip: str) -> tuple[str, dict[str, str], dict[str, object]]:
    """The URL rewritten to ``ip``, with the Host header and SNI of the original."""
    parts = urlsplit(str(url))
    host_ip = f"[{ip}]" if ":" in ip else ip
    netloc = host_ip if parts.port is None else f"{host_ip}:{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = parts.hostname or ""
    if parts.port is not None:
        host_header = f"{host_header}:{parts.port}"
    extensions: dict[str, object] = {}
    if parts.scheme == "https":
        extensions["sni_hostname"] = parts.hostname
    return pinned, {"Host": host_header}, extensions


@dataclass
class FetchResult:
    url: str
    status_code: int
    content: bytes
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


class SafeClient:
    """A minimal HTTP client that only talks to addresses the policy allows."""

    def __init__(
        self, policy: URLPolicy, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.client = client or httpx.Client(
            timeout=timeout, follow_redirects=False, trust_env=False
        )

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        max_bytes: int = 20 * 1024 * 1024,
        follow_redirects: bool = True,
    ) -> FetchResult:
        deadline = time.monotonic() + self.timeout
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            checked, ip = self.policy.check(current)
            pinned, host_headers, extensions = _pinned(checked, ip)
            request = self.client.build_request(
                method,
                pinned,
                content=content,
                headers={**(headers or {}), **host_headers},
                extensions={**extensions, "timeout": self._timeouts(deadline)},
            )
            try:
                response = self.client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise FetchError(f"timed out fetching {current}") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"cannot connect to {checked.host}: {exc}") from exc
            try:
                if follow_redirects and response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError("redirect without a Location header")
                    current = urljoin(current, location)
                    if response.status_code == 303:
                        method, content = "GET", None
                    continue
                body = self._read(response, max_bytes, deadline)
                return FetchResult(
                    current,
                    response.status_code,
                    body,
                    response.headers.get("content-type"),
                    dict(response.headers),
                )
            finally:
                response.close()
        raise UnsafeURLError(f"more than {MAX_REDIRECTS} redirects")

    def _timeouts(self, deadline: float) -> dict[str, float]:
        left = max(0.1, deadline - time.monotonic())
        return {"connect": left, "read": left, "write": left, "pool": left}

    @staticmethod
    def _read(response: httpx.Response, max_bytes: int, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"the resource is {declared} bytes, over the {max_bytes}-byte limit")
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"the resource is over the {max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    raise FetchError("the download took too long")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise FetchError(f"the download failed: {exc}") from exc
        return b"".join(chunks)


def policy_for(allow_hosts: Iterable[str]) -> URLPolicy:
    return URLPolicy(allow_hosts=frozenset(h.lower() for h in allow_hosts))
