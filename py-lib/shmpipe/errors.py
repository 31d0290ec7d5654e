"""The one error class of the client, ShmpipeError, with a stable string ``code``: the wire codes
of SPEC §8 (a completion's negative status) and the codes the client raises itself. The names
are the TypeScript client's, so logs read the same in every runtime."""

from __future__ import annotations

from .protocol import CODE_BY_STATUS

# Local codes: raised by the client, never on the wire.
DISCONNECTED = "SHMPIPE_E_DISCONNECTED"
HANDSHAKE = "SHMPIPE_E_HANDSHAKE"
VERSION = "SHMPIPE_E_VERSION"
PERMISSION = "SHMPIPE_E_PERMISSION"
INVALID_ARGUMENT = "SHMPIPE_E_INVALID_ARGUMENT"
CLOSED = "SHMPIPE_E_CLOSED"
QUEUE_FULL = "SHMPIPE_E_QUEUE_FULL"
PROTOCOL = "SHMPIPE_E_PROTOCOL"
IO = "SHMPIPE_E_IO"
UNRESPONSIVE = "SHMPIPE_E_UNRESPONSIVE"
# A wire code the client also raises: a call whose awaiting task was cancelled.
CANCELLED = "SHMPIPE_E_CANCELLED"
NOT_FOUND = "SHMPIPE_E_NOT_FOUND"
INTEGRITY = "SHMPIPE_E_INTEGRITY"
OUT_OF_RANGE = "SHMPIPE_E_OUT_OF_RANGE"


class ShmpipeError(Exception):
    """A failed call. ``code`` is stable; ``status`` is the completion status for wire errors."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status


def error_from_status(status: int, op: str, detail: str = "") -> ShmpipeError:
    code = CODE_BY_STATUS.get(status)
    if code is None:
        return ShmpipeError(PROTOCOL, f"{op}: the sidecar returned unknown status {status}", status)
    return ShmpipeError(code, f"{op} failed (status {status})" + (f": {detail}" if detail else ""), status)


def invalid(message: str) -> ShmpipeError:
    return ShmpipeError(INVALID_ARGUMENT, message)
