"""Local OIDC issuer: the key the Cloud Tasks and Cloud Scheduler emulators sign ID tokens with.

Google signs the ID tokens that Cloud Tasks and Cloud Scheduler attach to HTTP targets with its own keys
and publishes the certificates at https://www.googleapis.com/oauth2/v1/certs (a JSON object mapping key
id to a PEM X.509 certificate). This module does the same on loopback: one RSA key kept under
`.localcloud/`, tokens with the claims Google sets, and the certificates served in the same format at
`oidcCertsUrl` from emulator.json, so `google.oauth2.id_token.verify_token(..., certs_url=...)` accepts
them unchanged.

Run the certificate endpoint with `python -m infra.emulators.oidc`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cachetools import TTLCache
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from shared.emulator_config import STATE_DIR, load_emulator_config

ISSUER = "https://accounts.google.com"
TOKEN_LIFETIME_S = 3600
TOKEN_REUSE_S = 300.0
DEFAULT_KEY_DIR = STATE_DIR / "oidc"

log = logging.getLogger("oidc-emulator")


def ensure_signing_key(key_dir: Path = DEFAULT_KEY_DIR) -> None:
    """Create the local signing key and its self-signed certificate once; later calls keep them."""
    key_path, cert_path = key_dir / "signing-key.pem", key_dir / "signing-cert.pem"
    if key_path.exists() and cert_path.exists():
        return
    key_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local-cloud-oidc")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    # Write to temporary names first so a concurrent reader never sees half a key.
    tmp_key, tmp_cert = key_path.with_suffix(".tmp"), cert_path.with_suffix(".tmp")
    tmp_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp_key.chmod(0o600)
    tmp_key.replace(key_path)
    tmp_cert.replace(cert_path)


def _key_id(cert_pem: bytes) -> str:
    return hashlib.sha1(cert_pem).hexdigest()  # noqa: S324 - a key id, not a security digest


def certificates(key_dir: Path = DEFAULT_KEY_DIR) -> dict[str, str]:
    """The published certificates, in the format of Google's oauth2/v1/certs."""
    cert_pem = (key_dir / "signing-cert.pem").read_bytes()
    return {_key_id(cert_pem): cert_pem.decode("ascii")}


class TokenMinter:
    """Signs Google-shaped ID tokens for a service account with the local key.

    A token is reused for the same account and audience for TOKEN_REUSE_S, as a token source reuses one
    until shortly before it expires: it stays valid for an hour, and an RSA signature costs about 1 ms of CPU
    per delivery otherwise.
    """

    def __init__(self, key_dir: Path = DEFAULT_KEY_DIR, *, clock: Callable[[], float] = time.time) -> None:
        ensure_signing_key(key_dir)
        cert_pem = (key_dir / "signing-cert.pem").read_bytes()
        self._signer = crypt.RSASigner.from_string(
            (key_dir / "signing-key.pem").read_bytes(), key_id=_key_id(cert_pem)
        )
        self._recent: TTLCache[tuple[str, str], str] = TTLCache(maxsize=1024, ttl=TOKEN_REUSE_S, timer=clock)
        self._clock = clock
        self._lock = threading.Lock()

    def mint(self, *, service_account_email: str, audience: str) -> str:
        key = (service_account_email, audience)
        with self._lock:
            token = self._recent.get(key)
            if token is None:
                token = self._recent[key] = self._sign(service_account_email, audience)
            return token

    def _sign(self, service_account_email: str, audience: str) -> str:
        now = int(self._clock())
        subject = str(int(hashlib.sha256(service_account_email.encode()).hexdigest()[:20], 16))
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "azp": subject,
            "sub": subject,
            "email": service_account_email,
            "email_verified": True,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_S,
        }
        token: bytes = jwt.encode(self._signer, claims)
        return token.decode("ascii")


def _handler(key_dir: Path, path: str) -> type[BaseHTTPRequestHandler]:
    class CertsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] != path:
                self.send_error(404)
                return
            body = json.dumps(certificates(key_dir)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Cache-Control", "public, max-age=300")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug(format, *args)

    return CertsHandler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key-dir", type=Path, default=DEFAULT_KEY_DIR)
    args = parser.parse_args()
    config = load_emulator_config()
    endpoint = config.oidc
    ensure_signing_key(args.key_dir)
    from urllib.parse import urlsplit

    server = ThreadingHTTPServer(
        (endpoint.host, endpoint.port), _handler(args.key_dir, urlsplit(config.oidc_certs_url).path)
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info(json.dumps({"severity": "INFO", "message": f"oidc issuer on {config.oidc_certs_url}"}))
    server.serve_forever()


if __name__ == "__main__":
    main()
