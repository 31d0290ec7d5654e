"""shmpipe: a pure-Python agent for the shmpipe sidecar (shared-memory rings, standard library only).

``Client`` is the blocking API, ``AsyncClient`` the asyncio one; both speak shm-protocol/SPEC.md
directly. Errors are ``ShmpipeError`` with a stable ``code``.
"""

from . import errors, protocol
from .aio import AsyncClient, AsyncReadStream, AsyncWriter, Chunk, Slot, key_problem
from .client import Client, ReadStream, Writer
from .errors import ShmpipeError

__all__ = ["AsyncClient", "AsyncReadStream", "AsyncWriter", "Chunk", "Client", "ReadStream", "ShmpipeError",
           "Slot", "Writer", "errors", "key_problem", "protocol"]
__version__ = "0.1.0"
