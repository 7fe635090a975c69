"""The caller's address for limits and audit: only what the platform's own proxies appended is trusted."""

from __future__ import annotations

import pytest

from shared.http import forwarded_client


@pytest.mark.parametrize(
    ("forwarded_for", "hops", "expected"),
    [
        ("198.51.100.7", 1, "198.51.100.7"),  # Google's front end appended the peer
        ("1.2.3.4, 198.51.100.7", 1, "198.51.100.7"),  # the client's own entry is ignored
        ("1.2.3.4,5.6.7.8 , 198.51.100.7", 1, "198.51.100.7"),
        ("1.2.3.4, 198.51.100.7, 35.191.0.1", 2, "198.51.100.7"),  # behind an external load balancer
        ("198.51.100.7", 2, "10.0.0.9"),  # fewer entries than hops: nothing to trust but the peer
        ("1.2.3.4", 0, "10.0.0.9"),
        ("", 1, "10.0.0.9"),
        (" , ", 1, "10.0.0.9"),
    ],
)
def test_the_address_is_the_entry_the_platforms_proxies_appended(
    forwarded_for: str, hops: int, expected: str
) -> None:
    assert forwarded_client(forwarded_for, "10.0.0.9", hops=hops) == expected


def test_no_peer_and_nothing_trusted_is_unknown() -> None:
    assert forwarded_client("", None, hops=1) == "unknown"
