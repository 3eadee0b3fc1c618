from noa.plugin_sdk.testing.contracts import PluginContract


class TestObservabilityPluginContract(PluginContract):
    plugin = "observability"
