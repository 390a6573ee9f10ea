"""SMS+ (LINE notification messages with SMS fallback): scenarios, messages, points, uploads."""
