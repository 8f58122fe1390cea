"""convolens: self-hosted user analytics for LLM-powered products."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from convolens.sdk.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import convolens` in the server or CLI does not pull in the SDK and httpx.
    if name == "Client":
        from convolens.sdk.client import Client

        return Client
    raise AttributeError(name)
