"""In-memory reference drivers, one per slot; each passes its slot's contract suite.

Use them in a plugin's own tests in place of a real service, or as the model a new
driver is written against. Importing this package does not import NumPy:
:class:`NumpyDevice` loads it on first use.
"""

from noa.plugin_sdk.inprocess_broker import InProcessBroker
from noa.plugin_sdk.memory_cache import MemoryCache
from noa.plugin_sdk.sqlite_storage import SqliteStorage, translate_placeholders
from noa.plugin_sdk.testing.fakes.device import NumpyDevice
from noa.plugin_sdk.testing.fakes.vectors import MemoryVectorStore

__all__ = [
    "InProcessBroker",
    "MemoryCache",
    "MemoryVectorStore",
    "NumpyDevice",
    "SqliteStorage",
    "translate_placeholders",
]
