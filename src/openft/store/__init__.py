"""Persistent state: the database (SQLite by default, PostgreSQL by URL) and blob storage.

Knows nothing about HTTP or training; the API and the worker both go through here.
"""
