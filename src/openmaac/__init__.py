"""openmaac: self-hostable marketing automation, wire-compatible with the MAAC and CDH OpenAPIs."""

__version__ = "0.1.0"
