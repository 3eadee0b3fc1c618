"""Security through a real ``noa serve``: the prod profile refuses anonymous calls, two
servers share one rate limit exactly, TLS with HTTP/2 and HSTS."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import websockets
from grpc_health.v1 import health_pb2, health_pb2_grpc
from noa.proto.v1 import inference_pb2 as pb


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.nats
def test_prod_profile_refuses_anonymous_calls(serve: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        grpc_port = probe.getsockname()[1]
    server = serve(
        "--profile",
        "prod",
        env={
            "NOA_SERVER__HOST": "127.0.0.1",
            "NOA_SERVER__WORKERS": "1",
            "NOA_STORAGE__POSTGRES_URL": "postgresql://127.0.0.1:5432/test",
            "NOA_STORAGE__MIGRATE_ON_START": "true",
            "NOA_CACHE__REDIS_PREFIX": f"noa-test-{uuid.uuid4().hex}:",
            # No Qdrant server here: the prod profile's vectors on this PostgreSQL instead.
            "NOA_DRIVERS__VECTORS": "pgvector",
            "NOA_GRPC__PORT": str(grpc_port),
        },
    )
    server.wait_ready(timeout=60)
    base = f"http://127.0.0.1:{server.port}"
    # The same on every transport: gRPC (on by the profile) and WebSocket.
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        embed = channel.unary_unary(
            "/noa.v1.InferenceService/Embed",
            request_serializer=pb.EmbedRequest.SerializeToString,
            response_deserializer=pb.EmbedResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            embed(pb.EmbedRequest(input=["hello"]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING

    async def websocket_refused() -> int | None:
        url = f"ws://127.0.0.1:{server.port}/ws/events"
        async with websockets.connect(url) as socket_:
            await socket_.send('{"type": "subscribe", "topic": "models"}')
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:  # an error frame may come before the close
                    await asyncio.wait_for(socket_.recv(), 10)
            return socket_.close_code

    assert asyncio.run(websocket_refused()) == 4401
    # Even from this machine: the prod profile has no anonymous access.
    for method, path in (("GET", "/v1/plugins"), ("POST", "/v1/embed"), ("GET", "/v1/models")):
        response = httpx.request(method, base + path, json={} if method == "POST" else None)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["type"] == "authentication_error"
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(base + path).status_code == 200, path
    assert "anonymous" not in server.output()
    assert server.terminate() == 0


@pytest.mark.redis
def test_two_servers_sharing_a_limit_of_100_let_exactly_100_of_400_through(
    serve: Any, tmp_path: Path
) -> None:
    config = tmp_path / "limits.toml"
    config.write_text("[auth.rate_limits.plugins]\nper_s = 0.001\nburst = 100\n")
    env = {
        "NOA_DRIVERS__CACHE": "redis",
        "NOA_CACHE__REDIS_PREFIX": f"noa-test-{uuid.uuid4().hex}:",
        "NOA_PLUGINS__DISABLE": '["inference"]',
    }
    servers = [
        serve("--config", str(config), env={**env, "NOA_SERVER__DATA_DIR": str(tmp_path / name)})
        for name in ("a", "b")
    ]
    for server in servers:
        server.wait_ready(timeout=60)

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            calls = [
                client.get(f"http://127.0.0.1:{servers[i % 2].port}/v1/plugins") for i in range(400)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(fire())
    assert statuses.count(200) == 100
    assert statuses.count(429) == 300
    for server in servers:
        assert server.terminate() == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl command not installed")
def test_tls_serves_http2_and_hsts(serve: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = serve("--ssl-certificate", str(cert), "--ssl-keyfile", str(key))
    url = f"https://127.0.0.1:{server.port}/health"
    for _ in range(300):
        probe = subprocess.run(
            ["curl", "-s", "--cacert", str(cert), "--http2", "-D", "-", "-o", "/dev/null", url],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            break
        if server.proc.poll() is not None:
            pytest.fail(server.output())
        subprocess.run(["sleep", "0.1"], check=True)
    head = probe.stdout.lower()
    assert head.startswith("http/2 200"), head
    assert "strict-transport-security: max-age=31536000" in head
    # Plain HTTP/1.1 over TLS still works, and a client that does not trust the
    # certificate is refused by TLS itself.
    old = subprocess.run(
        ["curl", "-s", "--cacert", str(cert), "--http1.1", "-o", "/dev/null", "-w",
         "%{http_version} %{http_code}", url],
        capture_output=True, text=True,
    )  # fmt: skip
    assert old.stdout == "1.1 200"
    untrusted = subprocess.run(["curl", "-s", "-o", "/dev/null", url], capture_output=True)
    assert untrusted.returncode != 0
    assert server.terminate() == 0
