"""Typed ports of the kernel's driver slots: what each ``noa.drivers.<slot>`` driver is.

The kernel loads the driver that config chooses for a slot (``host.driver("cache")``,
usually a class) and the plugin that uses it creates the instance. Every driver passes
its slot's contract suite in :mod:`noa.plugin_sdk.testing.contracts`.

======== =========================== ===================================
slot     port                        values
======== =========================== ===================================
storage  :class:`StoragePort`        :class:`SqlRunner` (a transaction)
cache    :class:`CachePort`
vectors  :class:`VectorStorePort`    :class:`Point`, :class:`ScoredPoint`,
                                     :class:`CollectionInfo`
broker   :class:`BrokerPort`         :class:`Message`, :class:`Subscription`
device   :class:`DevicePort`         NumPy ``float32`` arrays
======== =========================== ===================================
"""

from noa.plugin_sdk.ports.broker import (
    DEAD_LETTER_SUFFIX,
    DELIVERIES_HEADER,
    BrokerPort,
    Message,
    MessageHandler,
    Subscription,
    dead_letter_subject,
    subject_matches,
    validate_subject,
)
from noa.plugin_sdk.ports.cache import CACHE_STATE_KEY, CachePort, TieredCachePort
from noa.plugin_sdk.ports.device import DevicePort
from noa.plugin_sdk.ports.storage import SqlRunner, StoragePort
from noa.plugin_sdk.ports.vectors import (
    COLLECTION_NAME_PATTERN,
    CollectionInfo,
    Distance,
    FieldType,
    Point,
    ScoredPoint,
    VectorStorePort,
)

__all__ = [
    "CACHE_STATE_KEY",
    "COLLECTION_NAME_PATTERN",
    "DEAD_LETTER_SUFFIX",
    "DELIVERIES_HEADER",
    "BrokerPort",
    "CachePort",
    "CollectionInfo",
    "DevicePort",
    "Distance",
    "FieldType",
    "Message",
    "MessageHandler",
    "Point",
    "ScoredPoint",
    "SqlRunner",
    "StoragePort",
    "Subscription",
    "TieredCachePort",
    "VectorStorePort",
    "dead_letter_subject",
    "subject_matches",
    "validate_subject",
]
