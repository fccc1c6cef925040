"""The URL guard (core/http_fetch.py) against loopback servers that count every request that reaches them."""

import socket
import time
from urllib.parse import quote

import pytest

from chiquito_or_not.core.http_fetch import FetchError, FetchPolicy, fetch_image, parse_url

from .httpserver import Server, tls_server_context

# the guarded policy serve uses, with 127.0.0.2 let through so a trusted loopback server can redirect
GUARDED = FetchPolicy(
    allow_private=False, allow_networks=("127.0.0.2/32",), retries=0, connect_timeout=1, read_timeout=2, deadline=3
)


def tricky(port: int) -> list[str]:
    """URLs that name, hide or disguise 127.0.0.1:port (the target) in ways parsers disagree on."""
    p = port
    return [
        f"http://127.0.0.1:{p}/x.jpg",
        f"http://127.0.0.1:{p}\\@1.1.1.1/x",
        f"http://127.0.0.1:{p}\\\\@1.1.1.1/x",
        f"http://1.1.1.1@127.0.0.1:{p}/x",
        f"http://user:pw@127.0.0.1:{p}/x",
        f"http://1.1.1.1:80@127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}#@1.1.1.1/",
        f"http://127.0.0.1:{p}?@1.1.1.1/",
        f"http:/\\127.0.0.1:{p}/",
        f"http:\\\\127.0.0.1:{p}/",
        f"http:127.0.0.1:{p}/",
        f"HTTP://127.0.0.1:{p}/",
        f"hTtP://127.0.0.1:{p}/",
        f"http://127.1:{p}/",
        f"http://127.0.1:{p}/",
        f"http://0x7f000001:{p}/",
        f"http://0x7f.0.0.1:{p}/",
        f"http://2130706433:{p}/",
        f"http://017700000001:{p}/",
        f"http://0177.0.0.1:{p}/",
        f"http://127.000.000.001:{p}/",
        f"http://0:{p}/",
        f"http://0.0.0.0:{p}/",
        f"http://localhost:{p}/",
        f"http://LOCALHOST:{p}/",
        f"http://localhost.:{p}/",
        f"http://[::1]:{p}/",
        f"http://[::ffff:127.0.0.1]:{p}/",
        f"http://[::ffff:7f00:1]:{p}/",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/",
        f"http://[::]:{p}/",
        f"http://[64:ff9b::7f00:1]:{p}/",
        f"http://[2002:7f00:1::]:{p}/",
        f"http://[::1%25lo]:{p}/",
        "http://[::1/",
        "http://[zz]/",
        f"http://[::1]x:{p}/",
        f"http://%31%32%37.0.0.1:{p}/",
        f"http://127%2e0%2e0%2e1:{p}/",
        f"http://127\u30020\u30020\u30021:{p}/",
        f"http://\u2460\u2461\u2466.0.0.1:{p}/",
        f"http://127.0.0.1\uff1a{p}/",
        f"http://127.0.0.1:{p} /",
        f"http://127.0.0.1:{p}\t/",
        f" http://127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}\r\nX: y/",
        f"http://127.0.0.1:{p}\x00/",
        f"http://127.0.0.1:+{p}/",
        f"http://127.0.0.1:0{p}/",
        f"http://127.0.0.1:{p + 65536}/",
        f"http://127.0.0.1:{p}:{p}/",
        f"//127.0.0.1:{p}/",
        f"ftp://127.0.0.1:{p}/",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{p}/",
        f"http://127.0.0.1.:{p}/",
        f"http://[::127.0.0.1]:{p}/",
        f"http://10.0.0.1:{p}/",
        f"http://169.254.169.254:{p}/",
        f"http://100.64.0.1:{p}/",
        f"http://224.0.0.1:{p}/",
        f"http://255.255.255.255:{p}/",
        f"http://[fe80::1]:{p}/",
        f"http://[fc00::1]:{p}/",
    ]


@pytest.fixture(scope="module")
def target():
    with Server() as s:  # 127.0.0.1: must never be reached
        yield s


@pytest.fixture(scope="module")
def trusted():
    with Server(host="127.0.0.2") as s:  # in allow_networks: its redirects are the attack
        yield s


def test_fuzz_no_tricky_url_reaches_the_target(target, trusted):
    urls = tricky(target.port)
    outcomes, direct = {}, set()
    for url in urls:  # directly, then through a redirect from the trusted server
        direct.add(url)
        for u in (url, f"{trusted.base}/go?to={quote(url, safe='')}"):
            if u != url and any(c in url for c in "\r\n\x00"):
                continue  # the test server would write them into its own header
            try:
                fetch_image(u, GUARDED)
                outcomes[u] = "fetched"
            except FetchError as e:
                outcomes[u] = e.reason
    assert sum(target.hits.values()) == 0, target.hits
    assert "fetched" not in outcomes.values()
    assert trusted.hits["/go"] >= len(urls) - 3  # the redirect variants were really served
    # each direct refusal is the guard's, not a lucky connection failure (a redirect to "http:127.0.0.1:P/"
    # is a relative path on the trusted server, which answers 404)
    assert {outcomes[u] for u in direct} <= {"bad_url", "bad_scheme", "private_address"}, outcomes


def test_backslash_authority_is_refused_in_serve_form():
    with pytest.raises(FetchError) as e:
        parse_url("http://127.0.0.1:8000\\@1.1.1.1/x")
    assert e.value.reason == "bad_url" and "backslash" in e.value.detail


@pytest.mark.parametrize(
    "url, host, port, path",
    [
        ("https://Example.org/a%20b.jpg?x=1#frag", "example.org", 443, "/a%20b.jpg?x=1"),
        ("http://example.org:8080", "example.org", 8080, "/"),
        ("http://[2001:db8::1]:81/x", "2001:db8::1", 81, "/x"),
        ("http://bücher.example/ñ.jpg", "xn--bcher-kva.example", 80, "/%C3%B1.jpg"),
        ("http://93.184.215.14/x.jpg", "93.184.215.14", 80, "/x.jpg"),
    ],
)
def test_good_urls_parse_as_every_client_reads_them(url, host, port, path):
    t = parse_url(url)
    assert (t.host, t.port, t.path) == (host, port, path)


def _pin(monkeypatch, answers: dict):
    """A resolver that answers from `answers` (name -> list of addresses, consumed one per call)."""
    real = socket.getaddrinfo

    def fake(host, port, *a, **kw):
        if host in answers:
            ip = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_the_checked_address_is_the_connected_one(monkeypatch):
    """DNS rebinding: the name resolves to the allowed address first and to the target afterwards;
    the fetch connects to the address it checked, with the URL's Host header."""
    with Server(host="127.0.0.2") as allowed:
        with Server(host="127.0.0.1", port=allowed.port) as tgt:
            _pin(monkeypatch, {"images.test": ["127.0.0.2", "127.0.0.1", "127.0.0.1"]})
            body, final, _ = fetch_image(f"http://images.test:{allowed.port}/img/3.jpg", GUARDED)
            assert body[:3] == b"\xff\xd8\xff" and final == f"http://images.test:{allowed.port}/img/3.jpg"
            assert allowed.hits["/img/3.jpg"] == 1 and sum(tgt.hits.values()) == 0
            assert allowed.host_headers == [f"images.test:{allowed.port}"]
            # a name with one allowed and one private address is refused outright
            _pin(monkeypatch, {"both.test": ["127.0.0.2"]})
            real = socket.getaddrinfo
            monkeypatch.setattr(
                socket,
                "getaddrinfo",
                lambda h, p, *a, **k: (
                    [
                        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", p)),
                        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)),
                    ]
                    if h == "both.test"
                    else real(h, p, *a, **k)
                ),
            )
            with pytest.raises(FetchError) as e:
                fetch_image(f"http://both.test:{allowed.port}/img/3.jpg", GUARDED)
            assert e.value.reason == "private_address" and allowed.hits["/img/3.jpg"] == 1


def test_tls_name_is_the_urls_host_while_connecting_to_the_pinned_address(monkeypatch, tmp_path):
    ctx, ca_file = tls_server_context(tmp_path, "images.test")
    with Server(ssl_context=ctx) as s:
        _pin(monkeypatch, {"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        policy = FetchPolicy(verify=str(ca_file), retries=0)
        body, _, _ = fetch_image(f"https://images.test:{s.port}/img/4.jpg", policy)
        assert body[:3] == b"\xff\xd8\xff" and s.host_headers[-1] == f"images.test:{s.port}"
        with pytest.raises(FetchError) as e:  # same address, a name the certificate does not cover
            fetch_image(f"https://other.test:{s.port}/img/4.jpg", policy)
        assert e.value.reason == "tls_error"


def test_one_overall_deadline_stops_a_dripping_server():
    """One byte every 0.4 s never trips a 2 s read timeout; the 1.5 s deadline ends the fetch (the reason
    says which limit ended it; it did not end before the deadline)."""
    with Server() as s:
        t = time.monotonic()
        with pytest.raises(FetchError) as e:
            fetch_image(s.base + "/drip.jpg", FetchPolicy(read_timeout=2, deadline=1.5, retries=0))
        took = time.monotonic() - t
    assert e.value.reason == "deadline" and took >= 1.4, (e.value, took)


def test_proxy_carries_every_download_plain_and_tls(tmp_path):
    from .httpserver import Proxy

    ctx, ca_file = tls_server_context(tmp_path, "127.0.0.1")
    with Proxy() as proxy, Server() as plain, Server(ssl_context=ctx) as tls:
        policy = FetchPolicy(proxy=proxy.url, verify=str(ca_file), retries=0)
        assert fetch_image(plain.base + "/img/5.jpg", policy)[0][:3] == b"\xff\xd8\xff"
        assert fetch_image(plain.base + "/redirect-ok", policy)[0][:3] == b"\xff\xd8\xff"
        assert fetch_image(tls.base + "/img/6.jpg", policy)[0][:3] == b"\xff\xd8\xff"
        assert proxy.requests == [plain.base + "/img/5.jpg", plain.base + "/redirect-ok", plain.base + "/img/7.jpg"]
        assert proxy.tunnels == [f"127.0.0.1:{tls.port}"]
        with pytest.raises(FetchError) as e:  # TLS is still checked end to end through the tunnel
            fetch_image(tls.base + "/img/6.jpg", FetchPolicy(proxy=proxy.url, retries=0))
        assert e.value.reason == "tls_error"
    with pytest.raises(FetchError) as e:
        fetch_image("http://127.0.0.1:9/x.jpg", FetchPolicy(proxy="http://127.0.0.1:9", retries=0))
    assert e.value.reason == "proxy_error"  # a refusing proxy on an http URL is the proxy's failure
    assert e.value.detail.endswith("Connection refused")  # the cause itself, not urllib3's wrapper cut short
    with pytest.raises(FetchError) as e:
        fetch_image("https://127.0.0.1:9/x.jpg", FetchPolicy(proxy="http://127.0.0.1:9", retries=0))
    assert e.value.reason == "proxy_error"


def test_each_fetch_keeps_its_own_timeouts_on_a_shared_connection():
    """Kept-alive connections are shared by a thread's fetches; a policy's timeouts go with each request."""
    with Server() as s:
        patient = FetchPolicy(read_timeout=10, deadline=20, retries=0)
        assert fetch_image(s.base + "/slow.jpg", patient)[0][:3] == b"\xff\xd8\xff"  # 3 s to answer
        with pytest.raises(FetchError) as e:
            fetch_image(s.base + "/slow.jpg", FetchPolicy(read_timeout=0.5, deadline=20, retries=0))
        assert e.value.reason == "timeout"
        assert fetch_image(s.base + "/slow.jpg", patient)[0][:3] == b"\xff\xd8\xff"


def test_clip_never_leaves_a_parenthesis_or_quote_open():
    from chiquito_or_not.core.http_fetch import clip

    long = (
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /x.jpg (Caused by "
        + "x" * 200
        + ")"
    )
    out = clip(long, 120)
    assert len(out) <= 121 and out.endswith("…") and out.count("(") == out.count(")"), out
    assert clip("short (fine)", 120) == "short (fine)"
    assert clip("a " * 100, 20).endswith("…") and len(clip("a " * 100, 20)) <= 21
