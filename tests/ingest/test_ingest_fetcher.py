"""Safe fetching: the SSRF table, pinning, redirects, size and time limits, over a real loopback server."""

from __future__ import annotations

import time

import pytest

from services.ingest.fetcher import AddressPolicy, SafeFetcher, refusal_reason
from services.ingest.settings import IngestSettings
from shared.errors import MemosError
from tests.ingest.helpers import FileServer

# Names the tests resolve themselves (no DNS): what a hostile or misconfigured DNS could answer.
FAKE_DNS = {
    "internal.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "10.0.0.1"],
    "v6private.test": ["fd12:3456::1"],
    "public.test": ["93.184.216.34"],
}


def resolver(host: str, port: int) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    from services.ingest.fetcher import system_resolver

    return system_resolver(host, port)


@pytest.fixture(scope="module")
def server():
    fs = FileServer(files={"/doc.md": ("text/markdown", b"# Title\n\nHello loopback.")})
    with fs.serve():
        yield fs


def refused_reason(fetcher: SafeFetcher, url: str) -> str:
    with pytest.raises(MemosError) as err:
        fetcher.fetch_sync(url)
    return err.value.reason


# (url template, expected reason). {port} is the loopback file server's port.
# The private and metadata addresses below are refusal cases, never contacted: the fetcher
# vets the resolved address before it opens a socket, and tests/conftest.py's socket guard
# fails any connect that is not to loopback, so a regression would fail here, not send traffic.
SSRF_TABLE = [
    ("http://127.0.0.1:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),
    ("http://127.0.0.2:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),
    ("http://localhost:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),
    ("http://2130706433:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),  # decimal 127.0.0.1
    ("http://0177.0.0.1:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),  # octal
    ("http://0x7f000001:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),  # hex
    ("http://127.1:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),  # short form
    ("http://[::1]:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),
    ("http://[::ffff:127.0.0.1]:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),  # IPv4-mapped
    ("http://[::ffff:7f00:1]:{port}/doc.md", "FETCH_ADDRESS_REFUSED"),  # IPv4-mapped, hex
    ("http://[::127.0.0.1]/", "FETCH_ADDRESS_REFUSED"),  # IPv4-compatible
    ("http://[64:ff9b::7f00:1]/", "FETCH_ADDRESS_REFUSED"),  # NAT64 of loopback
    ("http://[2002:7f00:1::]/", "FETCH_ADDRESS_REFUSED"),  # 6to4 of loopback
    ("http://0.0.0.0:{port}/", "FETCH_ADDRESS_REFUSED"),
    ("http://0/", "FETCH_ADDRESS_REFUSED"),
    ("http://[::]/", "FETCH_ADDRESS_REFUSED"),
    ("http://10.0.0.1/", "FETCH_ADDRESS_REFUSED"),
    ("http://172.16.0.1/", "FETCH_ADDRESS_REFUSED"),
    ("http://172.31.255.254/", "FETCH_ADDRESS_REFUSED"),
    ("http://192.168.1.1/", "FETCH_ADDRESS_REFUSED"),
    ("http://169.254.169.254/latest/meta-data/", "FETCH_ADDRESS_REFUSED"),
    ("http://[::ffff:169.254.169.254]/", "FETCH_ADDRESS_REFUSED"),
    ("http://100.100.100.200/", "FETCH_ADDRESS_REFUSED"),  # Alibaba Cloud metadata
    ("http://100.64.0.1/", "FETCH_ADDRESS_REFUSED"),  # carrier-grade NAT
    ("http://224.0.0.1/", "FETCH_ADDRESS_REFUSED"),
    ("http://[ff02::1]/", "FETCH_ADDRESS_REFUSED"),
    ("http://[fe80::1]/", "FETCH_ADDRESS_REFUSED"),
    ("http://[fc00::1]/", "FETCH_ADDRESS_REFUSED"),
    ("http://internal.test/", "FETCH_ADDRESS_REFUSED"),  # a name resolving to a private address
    ("http://metadata.test/", "FETCH_ADDRESS_REFUSED"),
    ("http://v6private.test/", "FETCH_ADDRESS_REFUSED"),
    ("http://mixed.test/", "FETCH_ADDRESS_REFUSED"),  # one bad answer among good ones
    ("ftp://example.com/file.md", "FETCH_SCHEME_REFUSED"),
    ("file:///etc/passwd", "FETCH_SCHEME_REFUSED"),
    ("gopher://127.0.0.1:70/_x", "FETCH_SCHEME_REFUSED"),
    ("dict://127.0.0.1:11211/", "FETCH_SCHEME_REFUSED"),
    ("//example.com/x", "FETCH_SCHEME_REFUSED"),
    ("http://user:pass@public.test/", "FETCH_BAD_URL"),
    ("http://public.test:99999/", "FETCH_BAD_URL"),
    ("http://exa mple.com/", "FETCH_BAD_URL"),
]


@pytest.mark.parametrize(("template", "reason"), SSRF_TABLE, ids=[t for t, _ in SSRF_TABLE])
def test_ssrf_table_is_refused_by_default(server: FileServer, template: str, reason: str) -> None:
    fetcher = SafeFetcher(resolver=resolver, timeout_s=3)
    before = len(server.seen)
    assert refused_reason(fetcher, template.format(port=server.port)) == reason
    assert len(server.seen) == before  # refused before any byte was sent


def test_the_table_has_at_least_twenty_address_forms() -> None:
    assert sum(1 for _, r in SSRF_TABLE if r == "FETCH_ADDRESS_REFUSED") >= 20


def test_loopback_is_allowed_only_through_the_allow_list(server: FileServer) -> None:
    url = f"{server.base}/doc.md"
    assert refused_reason(SafeFetcher(), url) == "FETCH_ADDRESS_REFUSED"
    got = SafeFetcher(allow=["127.0.0.1"]).fetch_sync(url)
    assert got.data.startswith(b"# Title") and got.media_type == "text/markdown"
    # A CIDR works too; allowing 127.0.0.1 does not allow other private addresses.
    assert SafeFetcher(allow=["127.0.0.0/8"]).fetch_sync(url).data
    assert refused_reason(SafeFetcher(allow=["127.0.0.1"]), "http://10.0.0.1/") == "FETCH_ADDRESS_REFUSED"
    assert refused_reason(SafeFetcher(allow=["127.0.0.1"]), "http://[::1]/") == "FETCH_ADDRESS_REFUSED"


def test_allow_list_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    monkeypatch.setenv("MEMOS_FETCH_ALLOW_HOSTS", " 127.0.0.1 , files.internal,10.0.0.0/8")
    settings = IngestSettings()
    assert settings.allow_list() == ["127.0.0.1", "files.internal", "10.0.0.0/8"]
    assert SafeFetcher(allow=settings.allow_list()).fetch_sync(f"{server.base}/doc.md").data
    monkeypatch.setenv("MEMOS_FETCH_ALLOW_HOSTS", "10.0.0.0/33")
    with pytest.raises(ValueError):
        IngestSettings()


def test_a_host_named_in_the_allow_list_is_allowed_by_name(server: FileServer) -> None:
    FAKE_DNS["files.internal"] = ["127.0.0.1"]
    try:
        got = SafeFetcher(allow=["files.internal"], resolver=resolver).fetch_sync(
            f"http://files.internal:{server.port}/doc.md"
        )
    finally:
        del FAKE_DNS["files.internal"]
    assert got.data.startswith(b"# Title")


def test_dns_is_resolved_once_and_the_connection_pinned_with_the_right_host_header(server: FileServer) -> None:
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        # A rebinding DNS server: first answer vetted, any later one would be hostile.
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.9.9.9"]

    got = SafeFetcher(allow=["127.0.0.1"], resolver=rebinding).fetch_sync(f"http://rebind.test:{server.port}/doc.md")
    assert got.data.startswith(b"# Title")
    assert calls == ["rebind.test"]
    assert server.seen[-1]["host"] == f"rebind.test:{server.port}"


def test_redirects_are_checked_at_every_hop(server: FileServer) -> None:
    server.redirects.update(
        {
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-private": "http://10.0.0.1/x",
            "/to-mapped": "http://[::ffff:192.168.0.1]/x",
            "/to-ftp": "ftp://example.com/x",
            "/to-doc": "/doc.md",
            "/loop": "/loop",
        }
    )
    f = SafeFetcher(allow=["127.0.0.1"], max_redirects=3)
    for path in ("/to-metadata", "/to-private", "/to-mapped"):
        assert refused_reason(f, f"{server.base}{path}") == "FETCH_ADDRESS_REFUSED", path
    assert refused_reason(f, f"{server.base}/to-ftp") == "FETCH_SCHEME_REFUSED"
    assert f.fetch_sync(f"{server.base}/to-doc").data.startswith(b"# Title")
    assert refused_reason(f, f"{server.base}/loop") == "FETCH_TOO_MANY_REDIRECTS"
    assert sum(1 for s in server.seen if s["path"] == "/loop") == 4  # first request + 3 redirects


def test_size_limits(server: FileServer) -> None:
    f = SafeFetcher(allow=["127.0.0.1"], max_bytes=1024 * 1024)
    assert refused_reason(f, f"{server.base}/huge-declared") == "FILE_TOO_LARGE"
    assert refused_reason(f, f"{server.base}/huge-streamed") == "FILE_TOO_LARGE"


def test_a_slow_server_times_out_within_the_limit(server: FileServer) -> None:
    f = SafeFetcher(allow=["127.0.0.1"], timeout_s=1.0)
    started = time.monotonic()
    assert refused_reason(f, f"{server.base}/slow") == "FETCH_TIMEOUT"
    assert time.monotonic() - started < 2.5


def test_http_errors_and_unreachable_hosts(server: FileServer) -> None:
    f = SafeFetcher(allow=["127.0.0.1"], timeout_s=3)
    assert refused_reason(f, f"{server.base}/missing") == "FETCH_HTTP_STATUS"
    from tests.conftest import free_port

    assert refused_reason(f, f"http://127.0.0.1:{free_port()}/") == "FETCH_FAILED"


def test_refusal_reasons_name_the_problem() -> None:
    import ipaddress

    assert refusal_reason(ipaddress.ip_address("8.8.8.8")) == ""
    assert refusal_reason(ipaddress.ip_address("2606:4700::1111")) == ""
    assert "metadata" in refusal_reason(ipaddress.ip_address("169.254.169.254"))
    assert "127.0.0.1" in refusal_reason(ipaddress.ip_address("::ffff:127.0.0.1"))
    policy = AddressPolicy(["10.0.0.0/8"])
    assert policy.address_allowed(ipaddress.ip_address("::ffff:10.1.1.1"))
    assert not policy.address_allowed(ipaddress.ip_address("11.0.0.1"))
