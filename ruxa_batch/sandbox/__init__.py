"""A local stand-in for the Ruxa API, with fault injection, for tests and zero-setup runs.

Standard library only, so that ``ruxa-batch run --sandbox`` works on a fresh machine::

    with SandboxServer(SandboxConfig(generation_time=0.05)) as sb:
        ...  # talk to sb.base_url with "Authorization: Bearer " + sb.api_key
"""

from __future__ import annotations

from ruxa_batch.sandbox.config import SandboxConfig
from ruxa_batch.sandbox.server import SandboxServer, serve

__all__ = ["SandboxConfig", "SandboxServer", "serve"]
