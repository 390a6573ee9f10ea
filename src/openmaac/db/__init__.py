from openmaac.db.base import Base, JSONType, UTCDateTime, utcnow
from openmaac.db.engine import Database, get_database, reset_database

__all__ = ["Base", "Database", "JSONType", "UTCDateTime", "get_database", "reset_database", "utcnow"]
