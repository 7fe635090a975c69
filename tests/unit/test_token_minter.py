"""The local OIDC issuer's minter: a token is reused per service account and audience, never across them."""

from __future__ import annotations

from pathlib import Path

from google.auth import jwt

from infra.emulators.oidc import TokenMinter, certificates

ACCOUNT = "tasks-invoker@demo.iam.gserviceaccount.com"


def test_a_token_is_reused_for_the_same_account_and_audience_only(tmp_path: Path) -> None:
    minter = TokenMinter(tmp_path)

    first = minter.mint(service_account_email=ACCOUNT, audience="http://127.0.0.1:1/a")

    assert minter.mint(service_account_email=ACCOUNT, audience="http://127.0.0.1:1/a") == first
    other_audience = minter.mint(service_account_email=ACCOUNT, audience="http://127.0.0.1:1/b")
    other_account = minter.mint(
        service_account_email="x@demo.iam.gserviceaccount.com", audience="http://127.0.0.1:1/a"
    )
    claims = [jwt.decode(t, certs=certificates(tmp_path)) for t in (first, other_audience, other_account)]
    assert [(c["email"], c["aud"]) for c in claims] == [
        (ACCOUNT, "http://127.0.0.1:1/a"),
        (ACCOUNT, "http://127.0.0.1:1/b"),
        ("x@demo.iam.gserviceaccount.com", "http://127.0.0.1:1/a"),
    ]


def test_without_reuse_every_token_is_signed_anew(tmp_path: Path) -> None:
    minter = TokenMinter(tmp_path, reuse_s=0)
    signed = []
    minter._sign = lambda email, audience: signed.append((email, audience)) or "token"  # type: ignore[method-assign]

    for _ in range(2):
        minter.mint(service_account_email=ACCOUNT, audience="http://127.0.0.1:1/a")

    assert signed == [(ACCOUNT, "http://127.0.0.1:1/a")] * 2
