"""Use what the fluxlit gateway proves, from FastAPI and Streamlit apps behind it.

- `fluxlit_gateway.identity`: verify the gateway's signed identity assertion.
- `fluxlit_gateway.fastapi`: `GatewayIdentity`, a dependency that does it per request.
- `fluxlit_gateway.streamlit`: `current_user()`, login and logout links, the login's token.
- `fluxlit_gateway.client`: `ApiClient`, an HTTP client for the app's internal API only.
- `fluxlit_gateway.exchange`: the auth-code exchange, framework-free.
- `fluxlit_gateway.testing`: test assertions and keys, for an app's own tests.

The framework modules are imported on their own, so the package works without them.
"""

from fluxlit_gateway.identity import Identity, IdentityError, IdentityVerifier

__all__ = ["Identity", "IdentityError", "IdentityVerifier"]
__version__ = "0.1.0"
