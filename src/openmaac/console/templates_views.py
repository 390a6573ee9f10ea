"""Console pages (stub: replaced by the page that owns it)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
