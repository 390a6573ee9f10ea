"""Message performance reports (``event/{id}/report/``)."""
