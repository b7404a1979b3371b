"""vuer_sync: the synchronous, threaded way to drive Vuer 3D scenes from plain Python.

>>> from vuer_sync import Vuer, VuerSession, VuerClient
>>> app = Vuer(port=0)

See the README for the quick start.
"""

from ._version import __version__
from .client import VuerClient
from .errors import ProtocolError, RPCTimeout, SessionClosed
from .server import Vuer, VuerSession
from .server.fleet_api import Fleet

__all__ = [
    "Fleet",
    "ProtocolError",
    "RPCTimeout",
    "SessionClosed",
    "Vuer",
    "VuerClient",
    "VuerSession",
    "__version__",
]
