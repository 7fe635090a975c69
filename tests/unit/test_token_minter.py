"""The local OIDC issuer's minter: a token is reused per service account and audience for a while, never
across them, and a new one is signed once the reuse time is over."""

from __future__ import annotations

from pathlib import Path

from google.auth import jwt

from infra.emulators.oidc import TOKEN_REUSE_S, TokenMinter, certificates

ACCOUNT = "tasks-invoker@demo.iam.gserviceaccount.com"
OTHER = "other@demo.iam.gserviceaccount.com"
A, B = "http://127.0.0.1:1/a", "http://127.0.0.1:1/b"


def test_a_token_is_reused_for_the_same_account_and_audience_only(tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    minter = TokenMinter(tmp_path, clock=lambda: now[0])

    first = minter.mint(service_account_email=ACCOUNT, audience=A)
    now[0] += TOKEN_REUSE_S - 1
    again = minter.mint(service_account_email=ACCOUNT, audience=A)
    other_audience = minter.mint(service_account_email=ACCOUNT, audience=B)
    other_account = minter.mint(service_account_email=OTHER, audience=A)
    now[0] += 2
    renewed = minter.mint(service_account_email=ACCOUNT, audience=A)

    def claims(token: str) -> tuple[str, str, int]:
        decoded = jwt.decode(token, certs=certificates(tmp_path), verify=False)
        return decoded["email"], decoded["aud"], decoded["iat"]

    start = 1_900_000_000
    assert again == first
    assert claims(first) == (ACCOUNT, A, start)
    assert claims(other_audience) == (ACCOUNT, B, start + TOKEN_REUSE_S - 1)
    assert claims(other_account) == (OTHER, A, start + TOKEN_REUSE_S - 1)
    assert claims(renewed) == (ACCOUNT, A, start + TOKEN_REUSE_S + 1)
