"""The example web app: one NanoBanana client per process, shared by every request."""

from .app import make_app

__all__ = ["make_app"]
