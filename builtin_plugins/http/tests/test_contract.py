from noa.plugin_sdk.testing.contracts import PluginContract


class TestHttpPluginContract(PluginContract):
    plugin = "http"
