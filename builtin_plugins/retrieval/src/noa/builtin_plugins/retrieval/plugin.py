"""Hook implementations of the retrieval plugin.

For now it declares ``[retrieval]``, which holds the settings of the embedded vector
store (the ``embedded`` driver of the ``vectors`` slot, built with
``EmbeddedVectorStore.from_config(config, data_dir)``). Collections, ingestion and the
search API come next.
"""

from __future__ import annotations

from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.plugin_sdk import PluginConfig, PluginInfo, Registry, hookimpl

PLUGIN_INFO = PluginInfo(description="Retrieval: the embedded vector store (vectors slot)")


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("retrieval", RetrievalConfig)
