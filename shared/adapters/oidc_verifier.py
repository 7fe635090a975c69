"""Verifies the OIDC ID tokens Cloud Tasks and Cloud Scheduler attach to calls of internal functions.

The certificates are fetched from Google (or, locally, from the emulators' `oidcCertsUrl`) and cached for a
few minutes, rather than on every call as `google.oauth2.id_token.verify_token` would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping

import requests
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

from shared.errors import Forbidden, Unauthenticated

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
CERTS_TTL_S = 300.0


class OidcVerifier:
    def __init__(self, *, certs_url: str | None, session: requests.Session | None = None) -> None:
        self._certs_url = certs_url or GOOGLE_CERTS_URL
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._certs: Mapping[str, str] = {}
        self._fetched_at = 0.0

    def _certificates(self, *, refresh: bool = False) -> Mapping[str, str]:
        with self._lock:
            if refresh or not self._certs or time.monotonic() - self._fetched_at > CERTS_TTL_S:
                response = self._session.get(self._certs_url, timeout=5)
                response.raise_for_status()
                self._certs = response.json()
                self._fetched_at = time.monotonic()
            return self._certs

    def verify(self, authorization: str | None, *, audience: str, allowed_emails: Collection[str]) -> str:
        """Return the caller's service-account email; raise Unauthenticated / Forbidden otherwise."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated("an OIDC token is required (Authorization: Bearer <token>)")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            try:
                claims = jwt.decode(
                    token, certs=self._certificates(), audience=audience, clock_skew_in_seconds=10
                )
            except ValueError as exc:
                if "Certificate for key id" not in str(exc):
                    raise
                # A key rotated since the certificates were cached.
                claims = jwt.decode(
                    token, certs=self._certificates(refresh=True), audience=audience, clock_skew_in_seconds=10
                )
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            raise Unauthenticated(f"invalid OIDC token: {exc}") from exc
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise Unauthenticated("invalid OIDC token: unexpected issuer")
        email = claims.get("email")
        if not claims.get("email_verified") or email not in allowed_emails:
            raise Forbidden("this function accepts only the platform's service accounts")
        return str(email)
