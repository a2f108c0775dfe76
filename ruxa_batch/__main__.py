"""Allow ``python -m ruxa_batch``."""

from __future__ import annotations

from ruxa_batch.cli import main

raise SystemExit(main())
