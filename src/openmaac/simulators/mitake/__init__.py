"""Mitake SMS HTTP API simulator: ``create_app()``; suggested mount path ``/_simulators/mitake``."""

from openmaac.simulators.mitake.app import BASE_PATH, DEFAULT_PASSWORD, DEFAULT_USERNAME, create_app

__all__ = ["BASE_PATH", "DEFAULT_PASSWORD", "DEFAULT_USERNAME", "create_app"]
