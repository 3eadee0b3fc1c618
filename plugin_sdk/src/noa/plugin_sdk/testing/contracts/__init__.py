"""Contract test suites: one per driver slot (what makes a driver a driver), and
:class:`PluginContract`, which every plugin passes.

Subclass the suite of your slot in a ``Test*`` class, implement ``make_driver``, and
pytest runs every behavioural test against your driver. The SDK's in-memory fakes in
:mod:`noa.plugin_sdk.testing.fakes` pass every one of them. Importing this package does
not import NumPy; the device suite skips without it.
"""

from noa.plugin_sdk.testing.contracts.broker import BrokerContract, Inbox
from noa.plugin_sdk.testing.contracts.cache import CacheContract
from noa.plugin_sdk.testing.contracts.device import DeviceContract
from noa.plugin_sdk.testing.contracts.plugin import PluginContract
from noa.plugin_sdk.testing.contracts.storage import StorageContract
from noa.plugin_sdk.testing.contracts.vectors import VectorStoreContract

__all__ = [
    "BrokerContract",
    "CacheContract",
    "DeviceContract",
    "Inbox",
    "PluginContract",
    "StorageContract",
    "VectorStoreContract",
]
