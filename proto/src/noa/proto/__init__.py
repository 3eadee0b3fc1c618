"""NOA's gRPC service definitions as Python modules, generated from ``proto/`` at build.

``noa.proto.v1`` holds ``inference``, ``retrieval`` and ``orchestration`` (package
``noa.v1``); ``noa.proto.kserve.v2.grpc_predict_v2`` the KServe v2 / Open Inference
Protocol (package ``inference``). Each has ``*_pb2`` (messages) and ``*_pb2_grpc``
(servicers, ``add_*_to_server``, stubs). Never edit them: change the ``.proto`` source
and reinstall (``uv sync``).
"""
