"""A real ``noa serve`` with the gRPC server on: two workers sharing the gRPC port,
tritonclient[grpc] unchanged against the KServe v2 service, and a clean exit on SIGTERM.

tritonclient runs in a child process: its generated modules define the ``inference``
protobuf package too, and one process can't hold two definitions of it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from noa.proto.v1 import inference_pb2 as pb
from noa.proto.v1 import inference_pb2_grpc as pb_grpc

from .conftest import MODEL, ROOT

pytestmark = pytest.mark.e2e

TEXTS = ["the river bank was flooded", "gRPC serves the same model"]

TRITON = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=sys.argv[1])
    model, texts = sys.argv[2], json.loads(sys.argv[3])
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "metadata": client.get_model_metadata(model, as_json=True),
    }
    text = grpcclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array(texts, dtype=object))
    wanted = [grpcclient.InferRequestedOutput("embedding")]
    result = client.infer(model, [text], outputs=wanted, request_id="e2e", client_timeout=60)
    out["id"] = result.get_response().id
    out["vectors"] = result.as_numpy("embedding").tolist()
    try:
        client.infer("acme/missing", [text])
    except InferenceServerException as exc:
        out["missing"] = [exc.status(), exc.message()]
    print(json.dumps(out))
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_workers_serve_grpc_and_tritonclient_works_unchanged(
    serve: Any, model_repository: Path
) -> None:
    port = free_port()
    env = {
        "NOA_INFERENCE__REPOSITORY": str(model_repository),
        "NOA_GRPC__ENABLED": "true",
        "NOA_GRPC__PORT": str(port),
    }
    server = serve("--workers", "2", env=env)
    server.wait_ready(timeout=180)
    # Each worker listens on the shared port (SO_REUSEPORT); wait for the second one.
    for _ in range(600):
        if server.output().count("gRPC serving") >= 2:
            break
        subprocess.run(["sleep", "0.1"], check=True)
    assert server.output().count("gRPC serving") == 2, server.output()

    reference = httpx.post(server.url + "/v1/embed", json={"input": TEXTS}, timeout=60).json()
    for _ in range(8):  # new connections land on either worker
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            answer = pb_grpc.InferenceServiceStub(channel).Embed(
                pb.EmbedRequest(input=TEXTS), timeout=60
            )
            vectors = [list(v.values) for v in answer.embeddings]
            np.testing.assert_allclose(vectors, reference["embeddings"], atol=1e-5)

    run = subprocess.run(
        [sys.executable, "-c", TRITON, f"127.0.0.1:{port}", MODEL, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["live"] and out["ready"] and out["model_ready"]
    assert out["metadata"]["name"] == MODEL and out["metadata"]["versions"] == ["1"]
    assert out["metadata"]["outputs"][0]["shape"] == ["-1", "384"]
    assert out["id"] == "e2e"
    np.testing.assert_allclose(out["vectors"], reference["embeddings"], atol=1e-5)
    assert out["missing"][0] == "StatusCode.NOT_FOUND"
    assert "model 'acme/missing' does not exist" in out["missing"][1]

    # The example in docs/grpc.md runs as written against this server.
    doc = (ROOT / "docs" / "grpc.md").read_text()
    match = re.search(r"<!-- example: tritonclient -->\s*```python\n(.*?)```", doc, re.DOTALL)
    assert match, "docs/grpc.md has no tritonclient example"
    code = match.group(1).replace("127.0.0.1:50051", f"127.0.0.1:{port}")
    code += "\nprint(json.dumps(vectors.tolist()))\n"
    run = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    doc_vectors = np.array(json.loads(run.stdout))
    assert doc_vectors.shape == (2, 384)

    assert server.terminate(timeout=30) == 0
