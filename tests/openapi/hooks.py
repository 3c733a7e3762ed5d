"""Schemathesis hooks for the receiver's API (crates/duress-receiver/tests/openapi.rs).

The agent API's bodies are compact JWS text (`application/jose`), which schemathesis has no
serializer for: send generated strings as they are, like text/plain.
"""
import schemathesis

schemathesis.serializer.alias("application/jose", "text/plain")
