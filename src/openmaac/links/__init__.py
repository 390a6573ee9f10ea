"""Tracked links (``/r/{code}``), open images (``/o/{code}/...``) and message-action taps."""
