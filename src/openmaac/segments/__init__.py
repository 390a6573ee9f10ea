"""Segments: tag-condition audiences and uploaded (custom) LINE user id lists."""
