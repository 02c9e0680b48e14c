"""Safe fetching of caller-named URLs (file parts, images).

A URL in an add request is attacker-controlled, and ingest runs inside the
deployment's network, so every fetch is checked before any byte is sent:

- only ``http`` and ``https``, no credentials in the URL;
- the host is resolved once; every address it resolves to must be public
  (not private, loopback, link-local, multicast, unspecified, reserved,
  shared, the cloud metadata address, nor an IPv6 form that embeds such an
  IPv4 address: mapped, compatible, 6to4, Teredo, NAT64), unless
  ``MEMOS_FETCH_ALLOW_HOSTS`` names the host, the address or a CIDR holding it;
- the connection goes to the vetted address itself (no second lookup that a
  rebinding DNS server could answer differently), while the Host header, SNI
  and certificate check use the URL's host name;
- redirects are followed by hand, at most ``fetch_max_redirects``, each target
  checked like the first URL;
- the body is limited in size (Content-Length checked first, then counted) and
  the whole fetch in time: a watchdog closes the socket at the deadline, so a
  server trickling bytes cannot hold a worker.

No proxy settings from the environment are used: a proxy would make the
address checks meaningless.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MemosError,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_REDIRECTS = {301, 302, 303, 307, 308}
_METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
}
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]
USER_AGENT = "memos-ingest/0.1"


@dataclass
class Fetched:
    data: bytes
    url: str
    """The final URL, after redirects."""
    media_type: str
    """The declared Content-Type without parameters (may be wrong: callers sniff)."""
    charset: str = ""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (numeric forms such as 0x7f000001 included, as the OS reads them)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(info[4][0] for info in infos))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the transition forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    value = int(ip)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks)
        return ipaddress.IPv4Address(value)
    return None


def refusal_reason(ip: IPAddress) -> str:
    """Why ``ip`` may not be fetched from by default; empty when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            inner = refusal_reason(v4)
            if inner:
                return f"an IPv6 form of {v4}, {inner}"
            if ip.ipv4_mapped is not None:
                return ""
    if ip in _METADATA_ADDRESSES:
        return "the cloud metadata address"
    for attr, what in (
        ("is_loopback", "a loopback address"),
        ("is_unspecified", "the unspecified address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, attr):
            return what
    if not ip.is_global:
        return "not a public address"
    return ""


class AddressPolicy:
    """Which hosts and addresses may be fetched: public ones, plus the allow-list."""

    def __init__(self, allow: Sequence[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            entry = entry.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.rstrip("."))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def address_allowed(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            v4 = embedded_ipv4(ip)
            if v4 is not None:
                candidates.append(v4)
        return any(c in net for c in candidates for net in self.networks if c.version == net.version)

    def check(self, host: str, addresses: Sequence[str]) -> str:
        """The address to connect to; raises PermissionDenied if any address is refused."""
        if not addresses:
            raise Unavailable(f"{host!r} resolved to no address", reason="FETCH_DNS_FAILED", metadata={"host": host})
        parsed = []
        for a in addresses:
            try:
                parsed.append(ipaddress.ip_address(a.split("%", 1)[0]))
            except ValueError:
                raise PermissionDenied(
                    f"{host!r} resolved to an unusable address {a!r}", reason="FETCH_ADDRESS_REFUSED"
                ) from None
        if not self.host_allowed(host):
            for ip in parsed:
                reason = refusal_reason(ip)
                if reason and not self.address_allowed(ip):
                    raise PermissionDenied(
                        f"refused to fetch from {host!r}: it resolves to {ip}, {reason} "
                        "(MEMOS_FETCH_ALLOW_HOSTS can allow it)",
                        reason="FETCH_ADDRESS_REFUSED",
                        metadata={"host": host, "address": str(ip)},
                    )
        return str(parsed[0])


@dataclass
class _Target:
    scheme: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> _Target:
    """Checks a URL's form (scheme, host, port, no credentials) without resolving it."""
    if not url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidArgument("the URL is empty or contains whitespace or control characters", reason="FETCH_BAD_URL")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"not a valid URL: {exc}", reason="FETCH_BAD_URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidArgument(
            f"only http and https URLs are fetched, not {scheme or 'a scheme-less URL'}",
            reason="FETCH_SCHEME_REFUSED",
            metadata={"scheme": scheme},
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("URLs with credentials are not fetched", reason="FETCH_BAD_URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidArgument("the URL has no host", reason="FETCH_BAD_URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), path)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        # SNI and the certificate check use the URL's host, not the pinned address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class SafeFetcher:
    def __init__(
        self,
        *,
        allow: Sequence[str] = (),
        timeout_s: float = 15.0,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 3,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = AddressPolicy(allow)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._resolve = resolver or system_resolver
        self._ssl = ssl_context or ssl.create_default_context()

    async def fetch(self, url: str) -> Fetched:
        return await asyncio.to_thread(self.fetch_sync, url)

    def fetch_sync(self, url: str) -> Fetched:
        deadline = time.monotonic() + self.timeout_s
        current = url
        for hop in range(self.max_redirects + 1):
            result = self._one(current, deadline)
            if isinstance(result, Fetched):
                return result
            current = urllib.parse.urljoin(current, result)
            if hop == self.max_redirects:
                break
        raise FailedPrecondition(
            f"more than {self.max_redirects} redirects", reason="FETCH_TOO_MANY_REDIRECTS", metadata={"url": url}
        )

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"fetch took longer than {self.timeout_s:g}s", reason="FETCH_TIMEOUT")
        return left

    def _one(self, url: str, deadline: float) -> Fetched | str:
        """Fetches one URL; returns the body, or the Location of a redirect."""
        t = parse_url(url)
        try:
            addresses = self._resolve(t.host, t.port)
        except (OSError, UnicodeError) as exc:
            raise Unavailable(
                f"could not resolve {t.host!r}: {exc}", reason="FETCH_DNS_FAILED", metadata={"host": t.host}
            ) from None
        ip = self.policy.check(t.host, addresses)
        timeout = self._remaining(deadline)
        conn: http.client.HTTPConnection
        if t.scheme == "https":
            conn = _PinnedHTTPSConnection(t.host, t.port, ip, timeout, self._ssl)
        else:
            conn = _PinnedHTTPConnection(t.host, t.port, ip, timeout)
        # The watchdog enforces the deadline even while a read is blocked on a slow server.
        expired = threading.Event()

        def _expire() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(timeout, _expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._exchange(conn, t, url, deadline, expired)
        except MemosError:
            raise
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError | socket.timeout):
                raise DeadlineExceeded(
                    f"fetch took longer than {self.timeout_s:g}s", reason="FETCH_TIMEOUT", metadata={"url": url}
                ) from None
            raise Unavailable(f"fetch failed: {exc}", reason="FETCH_FAILED", metadata={"url": url}) from None
        finally:
            watchdog.cancel()
            conn.close()

    def _exchange(
        self, conn: http.client.HTTPConnection, t: _Target, url: str, deadline: float, expired: threading.Event
    ) -> Fetched | str:
        conn.request("GET", t.path, headers={"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"})
        resp = conn.getresponse()
        if resp.status in _REDIRECTS:
            location = resp.getheader("Location")
            if not location:
                raise FailedPrecondition(
                    f"HTTP {resp.status} without a Location", reason="FETCH_BAD_REDIRECT", metadata={"url": url}
                )
            return location
        if resp.status != 200:
            raise FailedPrecondition(
                f"the server answered HTTP {resp.status}",
                reason="FETCH_HTTP_STATUS",
                metadata={"url": url, "status": str(resp.status)},
            )
        length = resp.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            raise ResourceExhausted(
                f"the file is {int(length)} bytes; the limit is {self.max_bytes}",
                reason="FILE_TOO_LARGE",
                metadata={"url": url, "limit": str(self.max_bytes)},
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            left = self._remaining(deadline)
            if conn.sock is not None:
                conn.sock.settimeout(left)
            chunk = resp.read1(65536)
            if not chunk:
                break
            total += len(chunk)
            if total > self.max_bytes:
                raise ResourceExhausted(
                    f"the file is larger than the limit of {self.max_bytes} bytes",
                    reason="FILE_TOO_LARGE",
                    metadata={"url": url, "limit": str(self.max_bytes)},
                )
            chunks.append(chunk)
        if expired.is_set():  # the watchdog closed the socket: what was read is a truncated body
            raise DeadlineExceeded(
                f"fetch took longer than {self.timeout_s:g}s", reason="FETCH_TIMEOUT", metadata={"url": url}
            )
        ctype = resp.getheader("Content-Type") or ""
        media_type, _, params = ctype.partition(";")
        charset = ""
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.lower() == "charset":
                charset = v.strip().strip('"')
        return Fetched(b"".join(chunks), url, media_type.strip().lower(), charset)
