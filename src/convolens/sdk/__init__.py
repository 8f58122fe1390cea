"""The app-side client: validate, enqueue, send in the background, spool to disk when the server is away."""

from convolens.sdk.client import Client

__all__ = ["Client"]
