"""One guarded HTTP(S) fetch for every download: strict URLs, the address checked is the address connected
to, and one overall deadline.

Why not `requests`: it resolves the host itself when it connects, so a guard that resolved it first
checks one address and the client may connect to another (DNS rebinding), and its URL parser reads some
authorities differently from others (`http://127.0.0.1\\@1.1.1.1/`). Here a URL is parsed once, strictly;
its host is resolved once; every resolved address is checked; and urllib3 connects to exactly that
address, with the `Host` header and the TLS name (SNI and certificate check) of the URL's host.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urljoin

__all__ = [
    "FetchError",
    "FetchPolicy",
    "Target",
    "Abort",
    "fetch_image",
    "parse_url",
    "resolve",
    "check_address",
    "open_url",
    "REDIRECTS",
    "clip",
    "short_error",
]

REDIRECTS = (301, 302, 303, 307, 308)
MAX_URL = 4096
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)\Z")
_local = threading.local()


class FetchError(Exception):
    """A URL that could not be fetched: `reason` is a short code (http_404, timeout, too_large, ...)."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None, transient=False):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retry_after, self.transient = reason, detail, retry_after, transient


@dataclass(frozen=True)
class Target:
    """A parsed URL: what is connected to and what is asked for."""

    scheme: str
    host: str  # lower-case name, dotted IPv4, or IPv6 without brackets
    port: int
    path: str  # path and query, percent-encoded ASCII
    url: str  # the normalised URL (no fragment, no userinfo)

    @property
    def host_header(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port == (443 if self.scheme == "https" else 80) else f"{h}:{self.port}"


def _bad(detail: str) -> FetchError:
    return FetchError("bad_url", detail)


def _parse_host(raw: str) -> str:
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise _bad("unclosed '[' in the host")
        if "%" in raw:
            raise _bad("IPv6 zone ids (fe80::1%eth0) are refused: they name an interface, not a host")
        try:
            return str(ipaddress.IPv6Address(raw[1:-1]))
        except ValueError:
            raise _bad(f"{raw!r} is not an IPv6 address") from None
    if not raw:
        raise _bad("no host")
    if not raw.isascii():
        try:
            import idna

            raw = idna.encode(raw, uts46=True).decode("ascii")
        except (ImportError, UnicodeError, ValueError) as e:
            raise _bad(f"host {raw!r} is not a valid international domain name ({e})") from None
    host = raw.lower().rstrip(".") if raw.endswith(".") and not raw.endswith("..") else raw.lower()
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # WHATWG, glibc and Python read 127.1, 0x7f.1, 0177.0.0.1 and 2130706433 differently: only the
        # plain dotted-quad form means the same address to every parser
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad(
                f"host {raw!r} is an IPv4 address in a form parsers read differently; "
                "write it as four decimal numbers (a.b.c.d)"
            ) from None
        return str(ip)
    if len(host) > 253 or not all(_HOST_LABEL.match(x) for x in labels):
        raise _bad(f"host {raw!r} has characters a host name cannot have")
    return host


def _split_scheme(url: str) -> tuple[str, str]:
    """(scheme, what follows its '//'), refusing what is not plainly an absolute http(s) URL."""
    if not isinstance(url, str) or not url:
        raise _bad("empty URL")
    if len(url) > MAX_URL:
        raise _bad(f"URL over {MAX_URL} characters")
    if any(c <= " " or c == "\x7f" or c == "\\" for c in url):
        raise _bad("URL contains whitespace, a control character or a backslash, which parsers read differently")
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    scheme = m.group(1).lower() if m else ""
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"only http and https URLs are fetched, not {url[:60]!r}")
    rest = url[m.end() :]
    if not rest.startswith("//"):
        raise _bad("expected '//' after the scheme")
    return scheme, rest[2:].split("#", 1)[0]


def _split_authority(authority: str) -> tuple[str, str]:
    """(host as written, port as written) of an authority without userinfo."""
    if "@" in authority:
        raise _bad("URLs with a user name or password (user@host) are refused")
    if not authority.startswith("["):
        host_raw, _, port_raw = authority.partition(":")
        return host_raw, port_raw
    end = authority.find("]")
    host_raw, port_raw = (authority, "") if end < 0 else (authority[: end + 1], authority[end + 1 :])
    if port_raw and not port_raw.startswith(":"):
        raise _bad(f"unexpected text after the IPv6 address: {port_raw[:20]!r}")
    return host_raw, port_raw[1:]


def parse_url(url: str) -> Target:
    """Parse an absolute http(s) URL strictly; refuse what URL parsers disagree on (backslashes, control
    characters, whitespace, userinfo, odd IPv4 forms) with FetchError("bad_url" or "bad_scheme")."""
    scheme, rest = _split_scheme(url)
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    host_raw, port_raw = _split_authority(authority)
    host = _parse_host(host_raw)
    if port_raw and not (port_raw.isascii() and port_raw.isdigit() and 0 < int(port_raw) < 65536):
        raise _bad(f"port {port_raw[:10]!r} is not a number from 1 to 65535")
    port = int(port_raw) if port_raw else (443 if scheme == "https" else 80)
    path = quote(path or "/", safe="/?&=%:;@!$'()*+,~-._[]|^`{}\"<>")  # only non-ASCII gets encoded
    shown = f"[{host}]" if ":" in host else host
    default = port == (443 if scheme == "https" else 80)
    return Target(scheme, host, port, path, f"{scheme}://{shown}{'' if default else f':{port}'}{path}")


def check_address(host: str, ip: str) -> None:
    """Refuse any address that is not globally routable: loopback, private, link-local, CGNAT, multicast,
    reserved, unspecified, and IPv6 forms that embed such an IPv4 address."""
    a = ipaddress.ip_address(ip)
    embedded = []
    if isinstance(a, ipaddress.IPv6Address):
        embedded = [x for x in (a.ipv4_mapped, a.sixtofour) if x is not None]
        if a.teredo:
            embedded += list(a.teredo)
        if a in ipaddress.IPv6Network("64:ff9b::/96") or a in ipaddress.IPv6Network("::/96"):  # NAT64, v4-compatible
            embedded.append(ipaddress.IPv4Address(int(a) & 0xFFFFFFFF))
    for x in (a, *embedded):
        if not x.is_global or x.is_multicast or x.is_reserved:
            raise FetchError("private_address", f"{host} resolves to {a}, which is not a public address")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def resolve(t: Target, allow_private: bool, allow_networks: tuple = ()) -> list[str]:
    """The addresses of the target's host (resolved once), every one checked unless allow_private or
    inside one of `allow_networks` (CIDR strings, e.g. an intranet host the user trusts)."""
    if _is_ip(t.host):
        ips = [t.host]
    else:
        try:
            infos = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise FetchError("connection_error", f"cannot resolve {t.host!r}: {e}", transient=True) from None
        ips = list(dict.fromkeys(info[4][0] for info in infos))
        if not ips:
            raise FetchError("connection_error", f"{t.host!r} resolves to no address", transient=True)
    if not allow_private:
        nets = [ipaddress.ip_network(n, strict=False) for n in allow_networks]
        for ip in ips:  # every one: a name that resolves to one public and one private address is refused
            a = ipaddress.ip_address(ip)
            if not any(a.version == n.version and a in n for n in nets):
                check_address(t.host, ip)
    return ips


class Abort:
    """Stops every fetch that was given it, at once (Ctrl-C): their sockets are shut down."""

    def __init__(self):
        self.event, self.lock, self.active = threading.Event(), threading.Lock(), set()

    @property
    def aborted(self) -> bool:
        return self.event.is_set()

    def abort(self):
        self.event.set()
        with self.lock:
            for d in list(self.active):
                d.expire(stopped=True)


class _Deadline:
    """Shuts down every socket of one fetch when its time is up, so a server that drips a byte now and
    then (each read within the read timeout) cannot hold the fetch open."""

    def __init__(self, seconds: float | None):
        self.seconds, self.expired, self.stopped, self.socks = seconds, False, False, []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self.expire) if seconds else None
        if self.timer:
            self.timer.daemon = True
            self.timer.start()

    def expire(self, stopped: bool = False):
        with self.lock:
            self.expired, self.stopped = True, self.stopped or stopped
            for s in self.socks:
                _shutdown(s)

    def register(self, sock):
        with self.lock:
            self.socks.append(sock)
            if self.expired:
                _shutdown(sock)

    def cancel(self):
        if self.timer:
            self.timer.cancel()

    def error(self) -> FetchError:
        """What an expired fetch ends with: the deadline passed, or Abort stopped it."""
        if self.stopped:
            return FetchError("interrupted", "stopped before it finished", transient=True)
        return FetchError("deadline", f"no complete answer within {self.seconds:g} s")


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _pools():
    """urllib3 pool classes whose connections report their sockets to the current fetch's deadline."""
    if getattr(_pools, "cache", None):
        return _pools.cache
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def registering(base):
        class Conn(base):
            def _new_conn(self):
                sock = super()._new_conn()
                d = getattr(_local, "deadline", None)
                if d is not None:
                    d.register(sock)
                return sock

            def request(self, *a, **kw):  # a kept-alive connection is reused without _new_conn
                d = getattr(_local, "deadline", None)
                if d is not None and self.sock is not None:
                    d.register(self.sock)
                return super().request(*a, **kw)

        return Conn

    class Http(HTTPConnectionPool):
        ConnectionCls = registering(HTTPConnection)

    class Https(HTTPSConnectionPool):
        ConnectionCls = registering(HTTPSConnection)

    _pools.cache = (Http, Https)
    return _pools.cache


def _tls(verify, host: str | None = None) -> dict:
    """urllib3's certificate settings for `verify` (True: certifi's CAs, a path: that bundle, False: none);
    with `host`, the name the certificate must carry (else urllib3 checks the URL's own)."""
    if verify is False:
        return dict(cert_reqs="CERT_NONE", assert_hostname=False)
    import certifi

    tls = dict(cert_reqs="CERT_REQUIRED", ca_certs=verify if isinstance(verify, str) else certifi.where())
    return {**tls, "assert_hostname": host} if host else tls


def _pool(t: Target, ip: str, verify):
    """A per-thread kept-alive pool for (address, port, host name, TLS settings); timeouts go with each
    request, since fetches with different policies share a thread's pools."""
    cache = _local.__dict__.setdefault("pools", {})
    key = (t.scheme, ip, t.port, t.host, verify)
    pool = cache.get(key)
    if pool is None:
        http, https = _pools()
        if t.scheme == "http":
            pool = http(ip, t.port, maxsize=1, retries=False)
        else:
            pool = https(ip, t.port, maxsize=1, retries=False, server_hostname=t.host, **_tls(verify, t.host))
        if len(cache) > 64:
            for p in cache.values():
                p.close()
            cache.clear()
        cache[key] = pool
    return pool


def _proxy_manager(proxy: str, verify):
    """A per-thread urllib3 ProxyManager for `proxy` (http(s)://[user:password@]host:port): plain http
    requests go to it with absolute URLs, https ones through a CONNECT tunnel, TLS still checked end to end."""
    cache = _local.__dict__.setdefault("proxies", {})
    key = (proxy, verify)
    if key in cache:
        return cache[key]
    from urllib3 import ProxyManager
    from urllib3.util import make_headers

    m = re.match(r"(https?)://(?:([^@/]*)@)?([^@/]+?)/?\Z", proxy, re.I)
    if not m:
        raise FetchError("bad_proxy", f"proxy {proxy!r} is not http(s)://[user:password@]host:port")
    headers = make_headers(proxy_basic_auth=m.group(2)) if m.group(2) else None
    http, https = _pools()
    pm = ProxyManager(
        f"{m.group(1)}://{m.group(3)}", proxy_headers=headers, num_pools=16, maxsize=1, retries=False, **_tls(verify)
    )
    pm.pool_classes_by_scheme = {"http": http, "https": https}  # sockets reported to the deadline
    cache[key] = pm
    return pm


def clip(text: str, n: int = 120) -> str:
    """`text` in at most about `n` characters: cut at a word, never inside an unclosed parenthesis or
    quote (cut before it), with "…" when something was left out."""
    text = " ".join(str(text).split())
    if len(text) <= n:
        return text
    cut = text[:n].rsplit(" ", 1)[0] if " " in text[:n] else text[:n]
    depth, start = 0, None
    for i, ch in enumerate(cut):
        if ch in "([{":
            depth, start = depth + 1, start if depth else i
        elif ch in ")]}" and depth:
            depth -= 1
    if depth and start is not None:
        cut = cut[:start].rstrip(" :,")
    return cut + "…"


def short_error(e: BaseException, n: int = 120) -> str:
    """The innermost cause of a urllib3/socket error (`[Errno 111] Connection refused`, not the
    pool's long wrapper), clipped."""
    seen, inner = set(), e
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = getattr(inner, "reason", None) or inner.__cause__ or inner.__context__
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    text = str(inner) or type(inner).__name__
    text = re.sub(r"<urllib3\.[^>]*>: ", "", text)  # "<urllib3.connection.HTTPConnection object at 0x...>: "
    return clip(text, n)


def _connect_error(e, t: Target) -> FetchError:
    from urllib3 import exceptions as x

    if isinstance(e, x.NewConnectionError) and "timed out" not in str(e).lower():  # refused, unreachable
        return FetchError("connection_error", f"{t.host}: {short_error(e)}", transient=True)
    if isinstance(e, (x.ConnectTimeoutError, x.ReadTimeoutError)) or "timed out" in str(e).lower():
        return FetchError("timeout", f"{t.host}: {short_error(e)}", transient=True)
    if isinstance(e, x.SSLError):
        return FetchError("tls_error", f"{t.host}: {short_error(e, 160)}")
    return FetchError("connection_error", f"{t.host}: {short_error(e)}", transient=True)


class Response:
    """A response being read: status, headers, final URL, and its body in chunks."""

    def __init__(self, raw, url: str, deadline: _Deadline):
        self.raw, self.url, self.deadline = raw, url, deadline
        self.status, self.headers = raw.status, raw.headers

    def iter_chunks(self, size: int = 64 * 1024):
        from urllib3 import exceptions as x

        try:
            while chunk := self.raw.read(size, decode_content=False):
                yield chunk
        except (x.HTTPError, OSError) as e:
            if self.deadline.expired:
                raise self.deadline.error() from None
            if isinstance(e, x.ReadTimeoutError) or "timed out" in str(e).lower():
                raise FetchError("timeout", short_error(e), transient=True) from None
            raise FetchError("connection_error", short_error(e), transient=True) from None
        if self.deadline.expired:  # a shut-down socket can also look like a clean end of the body
            raise self.deadline.error()


def _send(
    t: Target, hdrs: dict, d: _Deadline, *, allow_private: bool, allow_networks: tuple, verify, timeout, proxy: str
):
    """One GET for one hop, its body unread: through `proxy` (which resolves the host; we check it too,
    as far as our resolver can), or to the first checked address of the host that takes the connection."""
    from urllib3 import exceptions as x

    kw = dict(headers=hdrs, redirect=False, retries=False, preload_content=False, timeout=timeout)
    if proxy:
        if not allow_private:
            resolve(t, allow_private, allow_networks)
        try:
            return _proxy_manager(proxy, verify).urlopen("GET", t.url, **kw)
        except (x.HTTPError, OSError) as e:
            if d.expired:
                raise d.error() from None
            # the only connection made here is to the proxy: a refused or silent connection is the proxy's
            # (an http URL gets no CONNECT, so urllib3 says NewConnectionError, not ProxyError)
            if isinstance(e, (x.ProxyError, x.NewConnectionError, x.ConnectTimeoutError)):
                raise FetchError("proxy_error", f"{proxy}: {short_error(e)}", transient=True) from None
            raise _connect_error(e, t) from None
    last = None
    for ip in resolve(t, allow_private, allow_networks):
        try:
            return _pool(t, ip, verify).urlopen("GET", t.path, assert_same_host=False, **kw)
        except (x.HTTPError, OSError) as e:
            if d.expired:
                raise d.error() from None
            last = _connect_error(e, t)
            if last.reason == "tls_error" or not isinstance(e, (x.NewConnectionError, x.ConnectTimeoutError)):
                raise last from None  # the server was reached: another address would not help
    raise last


@contextmanager
def open_url(
    url: str,
    *,
    allow_private: bool = True,
    allow_networks: tuple = (),
    verify: bool | str = True,
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
    deadline: float | None = 60.0,
    max_redirects: int = 5,
    headers: dict | None = None,
    abort: Abort | None = None,
    proxy: str = "",
):
    """GET `url`, following at most `max_redirects` http(s) redirects, each hop parsed strictly, resolved
    once, checked (unless allow_private) and connected to at exactly the checked address (through a
    `proxy`, the proxy resolves and connects: the check is then only as good as its resolver). Yields a
    Response; raises FetchError. `deadline` bounds the whole fetch, body included; `abort` ends it early."""
    from urllib3.util import Timeout

    d = _Deadline(deadline)
    _local.deadline = d
    resp = None
    if abort is not None:
        with abort.lock:
            abort.active.add(d)
        if abort.aborted:
            d.expire(stopped=True)
    try:
        for _ in range(max_redirects + 1):
            t = parse_url(url)
            hdrs = {"Host": t.host_header, "Accept-Encoding": "identity", "Connection": "keep-alive", **(headers or {})}
            raw = _send(
                t,
                hdrs,
                d,
                allow_private=allow_private,
                allow_networks=allow_networks,
                verify=verify,
                timeout=Timeout(connect=connect_timeout, read=read_timeout),
                proxy=proxy,
            )
            if raw.status in REDIRECTS:
                loc = raw.headers.get("Location")
                _release(raw)
                if not loc:
                    raise FetchError("bad_redirect", f"HTTP {raw.status} without Location")
                try:
                    url = urljoin(t.url, loc)  # parse_url judges the result, spaces and all
                except ValueError as e:
                    raise _bad(f"redirect to an unreadable Location {loc[:80]!r} ({e})") from None
                continue
            resp = Response(raw, t.url, d)
            yield resp
            return
        raise FetchError("too_many_redirects", f"more than {max_redirects}")
    finally:
        d.cancel()
        _local.deadline = None
        if abort is not None:
            with abort.lock:
                abort.active.discard(d)
        if resp is not None:
            _release(resp.raw)


def _release(raw) -> None:
    """Give the connection back for reuse only when its body was read to the end; else close it."""
    if raw.length_remaining == 0:
        raw.drain_conn()  # nothing left to read, but http.client must see the response finished
    else:
        raw.close()
    raw.release_conn()


@dataclass(frozen=True)
class FetchPolicy:
    """How hard and how politely to fetch: limits, timeouts, retries, the address guard, TLS and proxy."""

    workers: int = 32
    per_host: int = 12
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    retries: int = 3
    backoff: float = 0.5  # seconds, doubled on each retry
    max_retry_after: float = 30.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    min_size: int = 32
    verify: bool | str = True  # or a CA bundle path
    deadline: float = 60.0  # seconds for one attempt at one URL, redirects and body included
    allow_private: bool = True  # False: refuse loopback, private, link-local... addresses (serve's pasted URLs)
    allow_networks: tuple[str, ...] = ()  # CIDRs let through even when allow_private is False
    proxy: str = ""  # http(s)://host:port: every request goes through it (it resolves the hosts)
    user_agent: str = "chiquito_or_not/0.1 (+image dataset builder)"


def fetch_image(url: str, p: FetchPolicy = FetchPolicy(), abort: Abort | None = None) -> tuple[bytes, str, str]:
    """One image URL's (body, final url, content type) through open_url: strict URL, checked and pinned
    address at every redirect, one overall deadline; FetchError on a refused status, type or size."""
    with open_url(
        url,
        allow_private=p.allow_private,
        allow_networks=p.allow_networks,
        verify=p.verify,
        connect_timeout=p.connect_timeout,
        read_timeout=p.read_timeout,
        deadline=p.deadline,
        max_redirects=p.max_redirects,
        headers={"User-Agent": p.user_agent},
        abort=abort,
        proxy=p.proxy,
    ) as r:
        if r.status == 429 or r.status >= 500:
            ra = r.headers.get("Retry-After", "")
            raise FetchError(
                f"http_{r.status}",
                r.raw.reason or "",
                retry_after=float(ra) if ra.replace(".", "", 1).isdigit() else None,
                transient=True,
            )
        if r.status != 200:
            raise FetchError(f"http_{r.status}", r.raw.reason or "")
        ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
            raise FetchError("not_image_content_type", ctype)
        length = r.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > p.max_bytes:
            raise FetchError("too_large", f"Content-Length {length} > {p.max_bytes}")
        body = bytearray()
        for chunk in r.iter_chunks(64 * 1024):
            body += chunk
            if len(body) > p.max_bytes:
                raise FetchError("too_large", f"body over {p.max_bytes} bytes")
        return bytes(body), r.url, ctype
