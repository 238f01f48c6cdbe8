"""THE DEVELOPMENT ISSUER KEY PAIR. PUBLIC ON PURPOSE. NEVER A PRODUCTION KEY.

Anyone can sign licenses with this private key: it is committed so that a fresh checkout can issue
keys for the local stack, the tests and CI without any secret. Every build therefore knows its
public half, and with ``OYEZ_ENV=production`` a key signed by it is refused (``KEY_DEVELOPMENT_ISSUER``)
even if an operator lists this public key as trusted. Production deployments generate their own pair
with ``oyez license keygen`` and configure the public half in ``OYEZ_LICENSE_PUBLIC_KEY``.
"""

from __future__ import annotations

DEVELOPMENT_PRIVATE_KEY_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICFTlnsR5kaSZCphUseAu3AanXkKywNU/6RRU0PnHDYL
-----END PRIVATE KEY-----
"""
