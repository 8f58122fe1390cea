"""Outbound HTTP to URLs that someone other than the operator chose (a project admin's LLM provider;
later alert webhooks and evaluation targets): the guard against server-side request forgery.

Such a URL must not reach this machine or its network (the database on 127.0.0.1:5432, a cloud's
metadata service on 169.254.169.254, an intranet), so three checks stand in its way:

- ``validate_url``: the URL's shape. http(s) only; no credentials, query or fragment (a query would
  swallow the path a caller appends); the host parsed the way a resolver would, numeric IPv4 forms
  (``0x7f000001``, ``2130706433``, ``0177.1``) included, IPv6 without zone ids.
- ``check_resolved``: every address the host resolves to must be public (IPv4 inside IPv6 judged as
  the IPv4 it carries), unless the operator allowed it.
- ``guarded_transport``: an httpx transport that resolves again when it connects, connects only to an
  address it has just checked and checks the peer it got, so a name that resolves to a public address
  at save time and to 127.0.0.1 later (DNS rebinding) is refused then too.

The operator (never a project admin) allows hosts or networks with ``CONVOLENS_OUTBOUND_ALLOW``, a comma
separated list of networks (``10.0.0.0/8``, ``192.168.1.20``), addresses with a port
(``127.0.0.1:11434``, ``[fd00::5]:8080``) and host names with or without a port (``llm.internal:8080``):
a self-hoster's local model server stays reachable.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpcore
import httpx
import idna

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Host name and port → the addresses it resolves to (as text). Tests give their own to play DNS.
Resolver = Callable[[str, int], list[str]]

ALLOW_ENV = "CONVOLENS_OUTBOUND_ALLOW"
MAX_URL_CHARS = 2000
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and RFC 8215).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
# What inet_aton accepts, and so what getaddrinfo turns into an IPv4 address: 1 to 4 parts, each decimal,
# octal (leading 0) or hex (0x). A host of this shape is an address, never a name.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.I)
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.I)


class RefusedUrl(ValueError):
    """A URL, or an address it leads to, that outbound requests must not use; the message says why."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedUrl(f"the host {host} does not resolve") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class OutboundPolicy:
    """What the operator lets outbound requests reach beyond the public internet, and how names resolve."""

    networks: tuple[Network, ...] = ()
    addresses: frozenset[tuple[Address, int]] = frozenset()
    hosts: frozenset[tuple[str, int | None]] = frozenset()
    resolve: Resolver = field(default=system_resolver, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, resolve: Resolver = system_resolver) -> OutboundPolicy:
        """From ``CONVOLENS_OUTBOUND_ALLOW``'s syntax; a bad entry is an error naming it (a typo must not
        silently allow less, or more, than the operator meant)."""
        networks: list[Network] = []
        addresses: set[tuple[Address, int]] = set()
        hosts: set[tuple[str, int | None]] = set()
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            try:
                parts = urlsplit(f"//{entry}")
                port = parts.port
                host = _host(parts)
            except ValueError as exc:
                raise ValueError(f"{ALLOW_ENV}: {entry!r} is not a network, address:port or host[:port]") from exc
            if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
                raise ValueError(f"{ALLOW_ENV}: {entry!r} is not a network, address:port or host[:port]")
            if isinstance(host, str):
                hosts.add((host, port))
            elif port is None:
                networks.append(ipaddress.ip_network(host))
            else:
                addresses.add((host, port))
        return cls(tuple(networks), frozenset(addresses), frozenset(hosts), resolve)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OutboundPolicy:
        env = os.environ if env is None else env
        return cls.parse(env.get(ALLOW_ENV, ""))

    def allows_host(self, host: str, port: int) -> bool:
        return (host, port) in self.hosts or (host, None) in self.hosts

    def allows_address(self, address: Address, port: int) -> bool:
        forms = _forms(address)
        if any((form, port) in self.addresses or any(form in net for net in self.networks) for form in forms):
            return True
        return _public(address)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _forms(address: Address) -> list[Address]:
    """The address, and the IPv4 address it carries if it is IPv4 in IPv6 clothing."""
    inner = _embedded_ipv4(address)
    return [address] if inner is None else [address, inner]


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address in _NAT64[1]:
        return False  # local-use NAT64: a translator inside some network, not the internet
    inner = _embedded_ipv4(address)
    if inner is not None:
        return _public(inner)  # ::ffff:127.0.0.1 and 64:ff9b::7f00:1 reach 127.0.0.1
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return False
    return address.is_global


def _parse_numeric_ipv4(host: str) -> ipaddress.IPv4Address:
    """``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``127.1``: as inet_aton reads them."""
    parts = host.rstrip(".").split(".")
    values = []
    for part in parts:
        if part.lower().startswith("0x"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if not set(part) <= set("01234567"):
                raise RefusedUrl(f"the host {host} is neither an address nor a name")
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (5 - len(values)):
        raise RefusedUrl(f"the host {host} is neither an address nor a name")
    number = last
    for i, v in enumerate(leading):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _host(parts: SplitResult) -> str | Address:
    """The host of a split URL: an address, or a lower-case ASCII name without a trailing dot."""
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if netloc.startswith("["):
        literal = netloc[1 : netloc.find("]")]
        if "%" in literal:
            raise RefusedUrl("the host may not carry an IPv6 zone id")
        try:
            return ipaddress.IPv6Address(literal)
        except ValueError as exc:
            raise RefusedUrl(f"the host [{literal}] is not an IPv6 address") from exc
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise RefusedUrl("the URL has no host")
    if _NUMERIC_HOST.fullmatch(host):
        return _parse_numeric_ipv4(host)
    try:
        ascii_host = host if host.isascii() else idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise RefusedUrl(f"the host {host} is not a valid name") from exc
    labels = ascii_host.lower().split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise RefusedUrl(f"the host {host} is not a valid name")
    if _NUMERIC_HOST.fullmatch(labels[-1]):
        # "1.2.3.0x4" or "a.0x7f": resolvers (and the URL standard) treat a numeric last label as IPv4.
        raise RefusedUrl(f"the host {host} is neither an address nor a name")
    return ascii_host.lower()


@dataclass(frozen=True)
class OutboundUrl:
    """A URL that passed ``validate_url``: its normalised text and the parts the checks need."""

    url: str
    scheme: str
    host: str | Address
    port: int

    @property
    def origin(self) -> tuple[str, str, int]:
        """Scheme, host and port: what a secret bound to this URL is bound to."""
        return (self.scheme, str(self.host), self.port)


def validate_url(url: str) -> OutboundUrl:
    """The URL normalised (lower-case scheme and host, canonical address, no trailing slash), or
    ``RefusedUrl`` naming the problem. Checks the shape and literal addresses only: ``check_resolved``
    and the transport check what a name leads to."""
    if len(url) > MAX_URL_CHARS:
        raise RefusedUrl(f"the URL is longer than {MAX_URL_CHARS} characters")
    if not url.isprintable() or any(c.isspace() or c == "\\" for c in url):
        raise RefusedUrl("the URL may not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # its message may quote the URL, and so what it carries: not repeated
        raise RefusedUrl("the URL does not parse (look at the host and the port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RefusedUrl("the URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise RefusedUrl("the URL may not carry a user name or password; put the key in the key field")
    if parts.query or "?" in url:
        raise RefusedUrl("the URL may not carry a query string (?...)")
    if parts.fragment or "#" in url:
        raise RefusedUrl("the URL may not carry a fragment (#...)")
    host = _host(parts)
    port = port or (443 if scheme == "https" else 80)
    if port == 0:
        raise RefusedUrl("the port must be between 1 and 65535")
    shown_host = f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host)
    default_port = port == (443 if scheme == "https" else 80)
    normalised = f"{scheme}://{shown_host}{'' if default_port else f':{port}'}{parts.path.rstrip('/')}"
    # The same host as httpx will see: no parser difference between this check and the request.
    try:
        seen = httpx.URL(normalised).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        seen = None
    if seen != str(host):
        raise RefusedUrl(f"the host {shown_host} is read differently by the HTTP client")
    return OutboundUrl(normalised, scheme, host, port)


def check_resolved(url: OutboundUrl, policy: OutboundPolicy) -> list[Address]:
    """The addresses the URL's host leads to, each checked against the policy; ``RefusedUrl`` if any is
    not public and not allowed (a name with one private address among public ones is refused: which
    one a client picks is not ours to choose). A host the operator allowed by name is not resolved."""
    if isinstance(url.host, str):
        if policy.allows_host(url.host, url.port):
            return []
        return _checked(url.host, url.port, policy)
    if not policy.allows_address(url.host, url.port):
        raise RefusedUrl(f"the address {url.host} is not public; the server's operator may allow it ({ALLOW_ENV})")
    return [url.host]


def _checked(host: str, port: int, policy: OutboundPolicy) -> list[Address]:
    found = policy.resolve(host, port)
    if not found:
        raise RefusedUrl(f"the host {host} does not resolve")
    addresses = []
    for text in found:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not policy.allows_address(address, port):
            raise RefusedUrl(
                f"the host {host} resolves to {address}, which is not public; the server's operator may allow"
                f" it ({ALLOW_ENV})"
            )
        addresses.append(address)
    return addresses


def safe_url(url: OutboundUrl | str, policy: OutboundPolicy) -> OutboundUrl:
    """``validate_url`` then ``check_resolved``: what a form runs on a URL before saving it."""
    checked = url if isinstance(url, OutboundUrl) else validate_url(url)
    check_resolved(checked, policy)
    return checked


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, but every TCP connection goes to an address checked just now."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            literal: Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        # A name the operator allowed is trusted whatever it resolves to; everything else is checked.
        vouched = literal is None and self.policy.allows_host(host.lower().rstrip("."), port)
        if literal is not None:
            candidates = [literal]
        elif vouched:
            candidates = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.policy.resolve(host, port)]
        else:
            candidates = _checked(host, port, self.policy)
        failure: Exception = RefusedUrl(f"the host {host} does not resolve")
        for address in candidates:
            if not vouched and not self.policy.allows_address(address, port):
                raise RefusedUrl(f"the address {address} is not public")
            try:
                # The address just checked, not the name: a second look-up could answer differently.
                stream = self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            peer = ipaddress.ip_address(str(stream.get_extra_info("server_addr")[0]).split("%", 1)[0])
            if not vouched and not self.policy.allows_address(peer, port):
                stream.close()
                raise RefusedUrl(f"connected to {peer}, which is not public")
            return stream
        raise failure

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise RefusedUrl("outbound requests do not use unix sockets")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections pass the policy at connect time (no proxy: a proxy
    from the environment would connect on our behalf, past the check)."""

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(trust_env=False, **kwargs)
        limits = kwargs.get("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20))
        # HTTPTransport takes no network backend, so its pool is built again with ours; ``_pool`` is what
        # handle_request uses (test_outbound's rebinding test fails if a new httpx stops doing so).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )


def guarded_client(url: OutboundUrl, policy: OutboundPolicy, **kwargs: Any) -> httpx.Client:
    """An httpx client for one checked base URL: guarded transport, no redirects, no proxy from the
    environment."""
    return httpx.Client(
        base_url=url.url, transport=GuardedTransport(policy), follow_redirects=False, trust_env=False, **kwargs
    )


def redacted(url: str) -> str:
    """The URL without user name, password, query or fragment: what may be shown or logged."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return "(an unreadable URL)"
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else netloc + parts.path


class _NoCredentialsInUrls(logging.Filter):
    """httpx logs every request's URL at INFO; a URL with a password in it must not reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                redacted(str(a)) if isinstance(a, httpx.URL) and (a.userinfo or a.query) else a for a in record.args
            )
        return True


def keep_credentials_out_of_httpx_logs() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _NoCredentialsInUrls) for f in logger.filters):
        logger.addFilter(_NoCredentialsInUrls())


keep_credentials_out_of_httpx_logs()
