"""The edge's small pieces in-process: trusted proxies, forwarding headers, admin tokens."""

from __future__ import annotations

import pytest

from corral.gateway.adminauth import AdminAuth
from corral.gateway.forwarding import edge_headers, is_trusted, parse_trusted, proxied_headers
from corral.gateway.limits import HeadLimits


def test_trusted_proxies_parse_and_match_v4_v6_and_mapped() -> None:
    trusted = parse_trusted("10.0.0.0/8, 192.168.1.7,,fd00::/8")
    assert is_trusted(b"10.1.2.3", trusted)
    assert is_trusted(b"192.168.1.7", trusted)
    assert is_trusted(b"::ffff:10.9.9.9", trusted)
    assert is_trusted(b"fd00::1", trusted)
    assert not is_trusted(b"192.168.1.8", trusted)
    assert not is_trusted(b"unknown", trusted)
    assert not is_trusted(b"10.1.2.3", ())
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_trusted("10.0.0.0/33")


def test_edge_headers_name_the_peer_only() -> None:
    assert edge_headers(b"::1") == (
        b"x-forwarded-for: ::1\r\nx-real-ip: ::1\r\nx-forwarded-proto: http\r\n"
        b'forwarded: for="[::1]";proto=http\r\n'
    )


def test_a_trusted_proxys_chain_is_kept_and_extended() -> None:
    headers = [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")]
    out = proxied_headers(headers, b"10.0.0.1")
    assert b"x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\n" in out
    assert b"x-real-ip: 10.0.0.1\r\n" in out
    assert b"forwarded: for=10.0.0.1\r\n" in out


def test_admin_auth_takes_any_configured_token_and_nothing_else() -> None:
    auth = AdminAuth(["admin-token", None, "metrics-token"])
    assert auth.allows(b"Bearer admin-token")
    assert auth.allows(b"bearer  metrics-token ")
    for bad in (None, b"", b"Bearer", b"Bearer admin", b"admin-token", b"Basic admin-token"):
        assert not auth.allows(bad)
    assert not AdminAuth([None, ""]).allows(b"Bearer ")


def test_head_limits_refuse_nonsense_and_fill_defaults() -> None:
    assert HeadLimits.of(max_count=5) == HeadLimits(max_count=5)
    with pytest.raises(ValueError, match="max_bytes"):
        HeadLimits(max_bytes=10)
