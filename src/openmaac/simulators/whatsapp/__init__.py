"""WhatsApp Cloud API simulator: ``create_app()``; suggested mount path ``/_simulators/whatsapp``."""

from openmaac.simulators.whatsapp.app import (
    BASE_PATH,
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_APP_SECRET,
    DEFAULT_PHONE_NUMBER_ID,
    create_app,
)

__all__ = ["BASE_PATH", "DEFAULT_ACCESS_TOKEN", "DEFAULT_APP_SECRET", "DEFAULT_PHONE_NUMBER_ID", "create_app"]
