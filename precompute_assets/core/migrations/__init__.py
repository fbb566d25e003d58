"""Alembic migrations of the store database (``precompute migrate``); ``versions/`` holds them."""
