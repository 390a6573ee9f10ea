"""Twilio Messages API simulator: ``create_app()``; suggested mount path ``/_simulators/twilio``."""

from openmaac.simulators.twilio.app import BASE_PATH, DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, create_app

__all__ = ["BASE_PATH", "DEFAULT_ACCOUNT_SID", "DEFAULT_AUTH_TOKEN", "create_app"]
