"""Create an API key for a tenant against the configured Firestore; the key is the last line printed.

make api-key TENANT=acme [ROLE=admin]
"""

from __future__ import annotations

import argparse
import sys

from shared import runtime
from shared.app import platform
from shared.models.auth import Role
from shared.services.auth import create_api_key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per minute")
    args = parser.parse_args()
    tenant = args.tenant.strip()
    if not tenant or len(tenant) > 100 or not tenant.replace("-", "").replace("_", "").isalnum():
        sys.stderr.write("tenant must be 1-100 letters, digits, '-' or '_'\n")
        return 2
    wired = platform()
    key = runtime.run(
        create_api_key(
            keys=wired.keys,
            tenant=tenant,
            role=Role(args.role),
            now=wired.engine.clock(),
            rate_limit_per_minute=args.rate_limit,
        )
    )
    sys.stdout.write(f"API key for tenant {tenant} ({args.role}); keep it, it is shown once:\n{key}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
