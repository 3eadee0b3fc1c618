"""NOA's gRPC transport plugin: see :mod:`noa.builtin_plugins.grpc.plugin`."""
