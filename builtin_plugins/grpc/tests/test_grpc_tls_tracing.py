"""The gRPC port over TLS with the HTTP server's certificate settings, and one trace span
per call exported as the HTTP side's are (a real OTLP/HTTP exporter to a collector on
loopback)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from noa.plugin_sdk.testing import boot
from noa.plugin_sdk.testing.otlp import OtlpCollector
from noa.proto.kserve.v2 import grpc_predict_v2_pb2 as kserve
from noa.proto.kserve.v2 import grpc_predict_v2_pb2_grpc as kserve_grpc

from .conftest import MODEL, grpc_port

PLUGINS = ["http", "observability", "inference", "grpc"]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_the_grpc_port_serves_tls_with_the_http_servers_certificate(
    tmp_path: Path, model_repository: Path
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    config = {
        "server": {"ssl_certificate": str(cert_file), "ssl_keyfile": str(key_file)},
        "inference": {"repository": str(model_repository)},
        "grpc": {"enabled": True, "port": 0},
    }
    async with boot(PLUGINS, config=config) as noa:
        port = grpc_port(noa)
        trusted = grpc.ssl_channel_credentials(root_certificates=cert_file.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{port}", trusted) as channel:
            stub = kserve_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerLive(kserve.ServerLiveRequest(), timeout=30)).live
        # A plaintext client gets no answer from a TLS port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = kserve_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ServerLive(kserve.ServerLiveRequest(), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # Nor does a client that does not trust the certificate.
        async with grpc.aio.secure_channel(
            f"localhost:{port}", grpc.ssl_channel_credentials()
        ) as channel:
            stub = kserve_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ServerLive(kserve.ServerLiveRequest(), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_each_call_is_a_span_in_the_callers_trace(model_repository: Path) -> None:
    with OtlpCollector() as collector:
        config = {
            "observability": {"otlp_endpoint": collector.url, "service_name": "noa-test"},
            "inference": {"repository": str(model_repository)},
            "grpc": {"enabled": True, "port": 0},
        }
        async with boot(PLUGINS, config=config) as noa:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(noa)}")
            async with channel:
                stub = kserve_grpc.GRPCInferenceServiceStub(channel)
                traceparent = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
                live = stub.ServerLive(kserve.ServerLiveRequest(), metadata=traceparent)
                assert (await live).live
                request_id = dict(await live.trailing_metadata())["x-request-id"]
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.ModelMetadata(
                        kserve.ModelMetadataRequest(name=MODEL, version="7"), timeout=30
                    )
        # Shutting the kernel down flushes the batch processor.
        assert collector.received.wait(10)
        spans = {s.name: s for s in collector.spans() if s.name.startswith("grpc ")}

    live_span = spans["grpc inference.GRPCInferenceService/ServerLive"]
    assert live_span.trace_id.hex() == TRACE_ID
    assert live_span.parent_span_id.hex() == PARENT_ID
    attributes = {a.key: a.value for a in live_span.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "ServerLive"
    assert attributes["rpc.grpc.status_code"].int_value == grpc.StatusCode.OK.value[0]
    assert attributes["noa.request_id"].string_value == request_id

    # A call without a traceparent starts a trace; the client's mistake is recorded as
    # its code, not as the server's error.
    failed = spans["grpc inference.GRPCInferenceService/ModelMetadata"]
    assert failed.trace_id.hex() != TRACE_ID and not failed.parent_span_id
    codes = {a.key: a.value.int_value for a in failed.attributes}
    assert codes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert failed.status.code == failed.status.STATUS_CODE_UNSET
