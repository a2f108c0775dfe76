"""A local stand-in for the Ruxa API, with fault injection, for tests and zero-setup runs.

Standard library only, so that ``ruxa-batch run --sandbox`` works on a fresh machine::

    with SandboxServer(SandboxConfig(generation_time=0.05)) as sb:
        ...  # talk to sb.base_url with "Authorization: Bearer " + sb.api_key

The server (and with it the API, the image encoders and ``http.server``) is imported on first
use of :class:`SandboxServer` or :func:`serve`, so that the command line can read the sandbox's
flags (:mod:`ruxa_batch.sandbox.options`) without paying for a server it may never start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ruxa_batch.sandbox.config import SandboxConfig

if TYPE_CHECKING:
    from ruxa_batch.sandbox.server import SandboxServer, serve

__all__ = ["SandboxConfig", "SandboxServer", "serve"]

_LAZY = {"SandboxServer", "serve"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ruxa_batch.sandbox import server

        value = getattr(server, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
