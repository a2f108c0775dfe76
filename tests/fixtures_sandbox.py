"""Fixtures that start the project's sandbox API server on a loopback port (filled in by the sandbox work)."""

from __future__ import annotations
