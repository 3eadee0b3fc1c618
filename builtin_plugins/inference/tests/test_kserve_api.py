"""The KServe v2 / Open Inference Protocol routes: in-process over the real MiniLM model,
and end to end with ``tritonclient[http]`` against a real ``noa serve``.

Every vector is checked against ``/v1/embed``: the protocol changes the wire format,
never the numbers.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from noa.builtin_plugins.inference.api_kserve import parse_model_path

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[3]

TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics", "ünïcödé ✓ text"]
DIM = 384
INFER = f"/v2/models/{MODEL}/infer"


def _bytes_tensor(items: Sequence[bytes]) -> bytes:
    """The binary form of a BYTES tensor: 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


def _text_input(texts: Sequence[str], *, binary: bool) -> tuple[dict[str, Any], bytes]:
    if not binary:
        return {
            "name": "text",
            "datatype": "BYTES",
            "shape": [len(texts)],
            "data": list(texts),
        }, b""
    raw = _bytes_tensor([t.encode() for t in texts])
    return {
        "name": "text",
        "datatype": "BYTES",
        "shape": [len(texts)],
        "parameters": {"binary_data_size": len(raw)},
    }, raw


async def _reference(client: httpx.AsyncClient, texts: Sequence[str]) -> np.ndarray[Any, Any]:
    response = await client.post("/v1/embed", json={"input": list(texts), "model": MODEL})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embeddings"], dtype=np.float32)


def _json_vectors(body: dict[str, Any]) -> np.ndarray[Any, Any]:
    (output,) = body["outputs"]
    assert output["name"] == "embedding" and output["datatype"] == "FP32"
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def _binary_vectors(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.headers["content-type"] == "application/octet-stream"
    size = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:size])
    (output,) = header["outputs"]
    assert "data" not in output
    raw = response.content[size:]
    assert output["parameters"] == {"binary_data_size": len(raw)}
    return np.frombuffer(raw, dtype="<f4").reshape(output["shape"])


def _assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    assert fragment in body["error"], body["error"]


# -- paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("/org/name", ("org/name", None, "")),
        ("/org/name/ready", ("org/name", None, "ready")),
        ("/org/name/versions/1", ("org/name", "1", "")),
        ("/org/name/versions/1/config", ("org/name", "1", "config")),
        ("/plain/infer", ("plain", None, "infer")),
        ("/plain", ("plain", None, "")),
        # A model literally named x/ready is reached through its versioned path.
        ("/x/ready/versions/1", ("x/ready", "1", "")),
        ("/ready", ("ready", None, "")),
    ],
)
def test_model_paths_are_read_from_the_end(tail: str, expected: tuple[Any, ...]) -> None:
    path = parse_model_path(tail)
    assert (path.model, path.version, path.action) == expected


# -- health and metadata --------------------------------------------------------------


async def test_server_metadata_lists_only_what_is_implemented(inference: Any) -> None:
    response = await inference.client.get("/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "noa" and body["version"]
    assert body["extensions"] == ["binary_tensor_data", "model_configuration"]


async def test_health(inference: Any) -> None:
    live = await inference.client.get("/v2/health/live")
    ready = await inference.client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


async def test_server_is_not_ready_while_a_model_it_loads_is_unloaded(inference: Any) -> None:
    assert (
        await inference.client.post("/v1/admin/models/unload", json={"model": MODEL})
    ).is_success
    ready = await inference.client.get("/v2/health/ready")
    model_ready = await inference.client.get(f"/v2/models/{MODEL}/ready")
    metadata = await inference.client.get(f"/v2/models/{MODEL}")
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    assert (model_ready.status_code, model_ready.json()) == (503, {"name": MODEL, "ready": False})
    _assert_error(metadata, 503, "unloaded, not ready")
    assert metadata.headers["retry-after"] == "5"


async def test_model_metadata_plain_and_versioned(inference: Any) -> None:
    plain = await inference.client.get(f"/v2/models/{MODEL}")
    versioned = await inference.client.get(f"/v2/models/{MODEL}/versions/1")
    assert plain.status_code == 200
    assert plain.json() == versioned.json()
    assert plain.json() == {
        "name": MODEL,
        "versions": ["1"],
        "platform": "noa_bert",
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
            {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
            {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
        ],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, DIM]}],
    }


async def test_model_ready_plain_and_versioned(inference: Any) -> None:
    for path in (f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/1/ready"):
        response = await inference.client.get(path)
        assert (response.status_code, response.json()) == (200, {"name": MODEL, "ready": True})


async def test_model_config_is_triton_shaped(inference: Any) -> None:
    response = await inference.client.get(f"/v2/models/{MODEL}/config")
    assert response.status_code == 200
    config = response.json()
    assert config["name"] == MODEL and config["max_batch_size"] == 0
    assert config["input"][0] == {
        "name": "text",
        "data_type": "TYPE_STRING",
        "dims": [-1],
        "optional": True,
    }
    assert config["output"] == [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [-1, DIM]}]
    assert config["parameters"]["dimension"] == {"string_value": str(DIM)}


async def test_unknown_models_versions_and_routes_are_404_in_kserve_shape(inference: Any) -> None:
    client = inference.client
    _assert_error(await client.get("/v2/models/nobody/here"), 404, "'nobody/here' does not exist")
    _assert_error(await client.get("/v2/models/nobody/ready"), 404, "'nobody' does not exist")
    _assert_error(await client.get(f"/v2/models/{MODEL}/versions/2"), 404, "no version '2'")
    _assert_error(await client.get("/v2/repository/index"), 404, "no KServe v2 route")
    _assert_error(await client.post("/v2/repository/index"), 404, "no KServe v2 route")
    _assert_error(await client.post(f"/v2/models/{MODEL}/config"), 404, "no KServe v2 route")
    wrong_method = await client.get(INFER)
    _assert_error(wrong_method, 405, "POST")
    assert wrong_method.headers["allow"] == "POST"


async def test_routes_are_documented_under_their_tag(inference: Any) -> None:
    schema = (await inference.client.get("/schema/openapi.json")).json()
    v2 = {path: item for path, item in schema["paths"].items() if path.startswith("/v2")}
    assert set(v2) == {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{tail}"}
    for item in v2.values():
        for operation in item.values():
            assert operation["tags"] == ["kserve-v2"] and operation["summary"]


# -- infer, JSON ------------------------------------------------------------------------


async def test_json_infer_with_text_matches_v1_embed(inference: Any) -> None:
    request = {"id": "req-1", "inputs": [_text_input(TEXTS, binary=False)[0]]}
    response = await inference.client.post(INFER, json=request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "1", "req-1")
    assert body["outputs"][0]["shape"] == [len(TEXTS), DIM]
    np.testing.assert_allclose(
        _json_vectors(body), await _reference(inference.client, TEXTS), atol=1e-5
    )


async def test_versioned_infer_takes_nested_n_by_1_text(inference: Any) -> None:
    request = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [[t] for t in TEXTS[:2]]}
        ],
        "outputs": [{"name": "embedding"}],
    }
    response = await inference.client.post(f"/v2/models/{MODEL}/versions/1/infer", json=request)
    assert response.status_code == 200, response.text
    assert "id" not in response.json()
    np.testing.assert_allclose(
        _json_vectors(response.json()), await _reference(inference.client, TEXTS[:2]), atol=1e-5
    )


async def test_json_infer_with_input_ids_matches_v1_embed(inference: Any, minilm_dir: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(TEXTS[:2])
    ids = [e.ids for e in encodings]
    mask = [e.attention_mask for e in encodings]
    shape = [len(ids), len(ids[0])]
    request = {
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": shape, "data": ids},
            {"name": "attention_mask", "datatype": "INT32", "shape": shape, "data": mask},
        ],
        "parameters": {"timeout_ms": 10_000},
    }
    response = await inference.client.post(INFER, json=request)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        _json_vectors(response.json()), await _reference(inference.client, TEXTS[:2]), atol=1e-5
    )


async def test_normalize_parameter_is_honoured(inference: Any) -> None:
    request = {
        "inputs": [_text_input(TEXTS[:1], binary=False)[0]],
        "parameters": {"normalize": False},
    }
    raw = _json_vectors((await inference.client.post(INFER, json=request)).json())
    request["parameters"] = {"normalize": True}
    unit = _json_vectors((await inference.client.post(INFER, json=request)).json())
    assert abs(float(np.linalg.norm(unit[0])) - 1.0) < 1e-4
    np.testing.assert_allclose(raw[0] / np.linalg.norm(raw[0]), unit[0], atol=1e-5)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "b"]}, "shape [3]"),
        ({"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}, "datatype BYTES"),
        ({"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}, "[n, 1]"),
        (
            {"name": "input_ids", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]},
            "integer datatype",
        ),
        (
            {"name": "input_ids", "datatype": "INT64", "shape": [1, 3], "data": [1, 2]},
            "shape [1, 3]",
        ),
    ],
)
async def test_shape_and_datatype_mismatches_are_400(
    inference: Any, tensor: dict[str, Any], fragment: str
) -> None:
    response = await inference.client.post(INFER, json={"inputs": [tensor]})
    _assert_error(response, 400, fragment)


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        ({"inputs": "nope"}, "malformed inference request"),
        ({}, "malformed inference request"),
        ({"inputs": [{"name": "text", "shape": ["x"], "datatype": "BYTES"}]}, "$.inputs[0].shape"),
        (
            {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "outputs": [{"name": "logits"}],
            },
            "unknown output 'logits'",
        ),
        (
            {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "parameters": {"truncate": "yes"},
            },
            "'truncate' must be a boolean",
        ),
        (
            {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "parameters": {"timeout_ms": -1},
            },
            "'timeout_ms' must be a positive number",
        ),
    ],
)
async def test_malformed_requests_are_400(
    inference: Any, request_body: dict[str, Any], fragment: str
) -> None:
    _assert_error(await inference.client.post(INFER, json=request_body), 400, fragment)


async def test_malformed_json_and_unknown_inputs(inference: Any) -> None:
    client = inference.client
    _assert_error(
        await client.post(INFER, content=b"{not json"), 400, "malformed inference request"
    )
    unknown = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0.0]}]}
    _assert_error(await client.post(INFER, json=unknown), 422, "unknown input 'pixels'")


async def test_infer_on_an_unknown_model_is_404(inference: Any) -> None:
    request = {"inputs": [_text_input(TEXTS[:1], binary=False)[0]]}
    response = await inference.client.post("/v2/models/acme/missing/infer", json=request)
    _assert_error(response, 404, "model 'acme/missing' does not exist")


async def test_untruncated_long_input_is_400(inference: Any) -> None:
    request = {
        "inputs": [_text_input(["word " * 2000], binary=False)[0]],
        "parameters": {"truncate": False},
    }
    _assert_error(await inference.client.post(INFER, json=request), 400, "longer than")


# -- infer, binary tensor data ---------------------------------------------------------


async def test_binary_request_and_binary_response_round_trip(inference: Any) -> None:
    tensor, raw = _text_input(TEXTS, binary=True)
    body, headers = _binary_body(
        {
            "inputs": [tensor],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}],
        },
        raw,
    )
    response = await inference.client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        _binary_vectors(response), await _reference(inference.client, TEXTS), atol=1e-5
    )


async def test_binary_data_output_parameter_and_output_override(inference: Any) -> None:
    tensor, _ = _text_input(TEXTS[:1], binary=False)
    request: dict[str, Any] = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
    as_binary = await inference.client.post(INFER, json=request)
    assert _binary_vectors(as_binary).shape == (1, DIM)
    request["outputs"] = [{"name": "embedding", "parameters": {"binary_data": False}}]
    as_json = await inference.client.post(INFER, json=request)
    np.testing.assert_array_equal(_json_vectors(as_json.json()), _binary_vectors(as_binary))


async def test_binary_int64_input_ids(inference: Any) -> None:
    reference_ids = (
        await inference.client.post(
            INFER,
            json={
                "inputs": [
                    {
                        "name": "input_ids",
                        "datatype": "INT64",
                        "shape": [1, 4],
                        "data": [101, 7592, 2088, 102],
                    }
                ]
            },
        )
    ).json()
    raw = np.asarray([[101, 7592, 2088, 102]], dtype="<i8").tobytes()
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "input_ids",
                    "datatype": "INT64",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        raw,
    )
    response = await inference.client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(_json_vectors(response.json()), _json_vectors(reference_ids))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_binary_request(inference: Any, encoding: str) -> None:
    tensor, raw = _text_input(TEXTS, binary=True)
    body, headers = _binary_body({"inputs": [tensor]}, raw)
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    headers["Content-Encoding"] = encoding
    response = await inference.client.post(INFER, content=packed, headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        _json_vectors(response.json()), await _reference(inference.client, TEXTS), atol=1e-5
    )


def _case(header_length: str | None, body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {} if header_length is None else {"Inference-Header-Content-Length": header_length}


async def test_binary_framing_errors_are_400(inference: Any) -> None:
    client = inference.client
    raw = _bytes_tensor([b"hello"])

    def header(size: Any, shape: list[int] | None = None) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": shape or [1],
                    "parameters": {"binary_data_size": size},
                }
            ]
        }

    cases: list[tuple[bytes, dict[str, str], str]] = []
    body, headers = _binary_body(header(len(raw) + 10), raw)
    cases.append((body, headers, "overruns the binary data"))
    body, headers = _binary_body(header(len(raw)), raw + b"extra")
    cases.append((body, headers, "belong to no input"))
    body, headers = _binary_body(header(-1), raw)
    cases.append((body, headers, "non-negative integer"))
    body, headers = _binary_body(header(True), raw)
    cases.append((body, headers, "non-negative integer"))
    # An element length that runs past the tensor's own bytes.
    bad = struct.pack("<I", 1000) + b"abc"
    body, headers = _binary_body(header(len(bad)), bad)
    cases.append((body, headers, "overruns"))
    body, headers = _binary_body(header(2), b"\x01\x00")
    cases.append((body, headers, "4-byte length"))
    # Binary data claimed without a binary section at all.
    cases.append((json.dumps(header(len(raw))).encode(), {}, "overruns the binary data"))
    for value in ("abc", "-5", "0", "99999999", "1e3", ""):
        cases.append(
            (
                *_case(value, json.dumps(header(len(raw))).encode() + raw),
                "Inference-Header-Content-Length",
            )
        )
    # The header length cuts the JSON short.
    body, headers = _binary_body(header(len(raw)), raw)
    cases.append((body, {"Inference-Header-Content-Length": "10"}, "malformed inference request"))
    # Invalid UTF-8 in a BYTES element.
    bad_utf8 = _bytes_tensor([b"\xff\xfe"])
    body, headers = _binary_body(header(len(bad_utf8)), bad_utf8)
    cases.append((body, headers, "not valid UTF-8"))
    # INT64 data that is not a whole number of elements.
    ids = {
        "inputs": [
            {
                "name": "input_ids",
                "datatype": "INT64",
                "shape": [1, 1],
                "parameters": {"binary_data_size": 5},
            }
        ]
    }
    body, headers = _binary_body(ids, b"\x00" * 5)
    cases.append((body, headers, "whole number of INT64"))
    for body, headers, fragment in cases:
        _assert_error(await client.post(INFER, content=body, headers=headers), 400, fragment)


async def test_bad_compression_is_refused(inference: Any) -> None:
    client = inference.client
    request = json.dumps({"inputs": [_text_input(["a"], binary=False)[0]]}).encode()
    garbage = await client.post(INFER, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    _assert_error(garbage, 400, "not valid gzip")
    cut = gzip.compress(request)[:-12]
    _assert_error(
        await client.post(INFER, content=cut, headers={"Content-Encoding": "gzip"}),
        400,
        "truncated",
    )
    _assert_error(
        await client.post(INFER, content=request, headers={"Content-Encoding": "br"}), 415, "'br'"
    )
    # 4 MiB of zeros packs into a few KiB; inflated it passes the 1 MiB body limit.
    bomb = gzip.compress(b"0" * (4 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    _assert_error(
        await client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"}),
        413,
        "inflates to more than",
    )


async def test_raw_body_limit_is_kserve_shaped(inference: Any) -> None:
    response = await inference.client.post(INFER, content=b"x" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert isinstance(response.json()["error"], str)


# -- end to end: tritonclient against noa serve ----------------------------------------
# One server per test (starting one loads the model): the infer test walks every
# combination of input and output encoding and compression on the same server.


@pytest.fixture
def triton_server(serve: Any, model_repository: Path) -> Any:
    server = serve(env={"NOA_INFERENCE__REPOSITORY": str(model_repository)})
    server.wait_ready(timeout=120)
    return server


@pytest.mark.e2e
def test_tritonclient_health_metadata_and_errors(triton_server: Any) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{triton_server.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, model_version="1")
        assert not client.is_model_ready("acme/missing")
        server = client.get_server_metadata()
        assert server["name"] == "noa" and "binary_tensor_data" in server["extensions"]
        metadata = client.get_model_metadata(MODEL)
        assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
        assert metadata["outputs"] == [
            {"name": "embedding", "datatype": "FP32", "shape": [-1, DIM]}
        ]
        config = client.get_model_config(MODEL, model_version="1")
        assert config["input"][0]["data_type"] == "TYPE_STRING"
        assert config["output"][0]["dims"] == [-1, DIM]

        text = httpclient.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array(["hello"], dtype=object))
        with pytest.raises(InferenceServerException) as missing:
            client.infer("acme/missing", [text])
        assert missing.value.status() == "404"
        assert "model 'acme/missing' does not exist" in missing.value.message()
        with pytest.raises(InferenceServerException) as unknown_route:
            client.get_model_repository_index()
        assert unknown_route.value.status() == "404"
        assert "no KServe v2 route" in unknown_route.value.message()
        # The client checks the shape only when data is set; a later shape disagrees.
        wrong = httpclient.InferInput("text", [1], "BYTES")
        wrong.set_data_from_numpy(np.array(["only one"], dtype=object)).set_shape([2])
        with pytest.raises(InferenceServerException) as mismatch:
            client.infer(MODEL, [wrong])
        assert mismatch.value.status() == "400"
        assert "has shape [2] (2 elements) but 1 data items" in mismatch.value.message()
    finally:
        client.close()


@pytest.mark.e2e
def test_tritonclient_infer_matches_v1_embed(triton_server: Any) -> None:
    import tritonclient.http as httpclient

    response = httpx.post(
        triton_server.url + "/v1/embed", json={"input": TEXTS, "model": MODEL}, timeout=60
    )
    assert response.status_code == 200, response.text
    reference = np.asarray(response.json()["embeddings"], dtype=np.float32)
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{triton_server.port}")
    try:
        for binary_input in (True, False):
            # None: no output named, so the client asks for every output in binary.
            for binary_output in (True, False, None):
                for compression in (None, "gzip", "deflate"):
                    case = f"{binary_input=} {binary_output=} {compression=}"
                    text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
                    text.set_data_from_numpy(
                        np.array(TEXTS, dtype=object), binary_data=binary_input
                    )
                    outputs = (
                        None
                        if binary_output is None
                        else [
                            httpclient.InferRequestedOutput("embedding", binary_data=binary_output)
                        ]
                    )
                    result = client.infer(
                        MODEL,
                        [text],
                        outputs=outputs,
                        request_id="e2e",
                        request_compression_algorithm=compression,
                        response_compression_algorithm=compression,
                    )
                    body = result.get_response()
                    assert body["model_name"] == MODEL and body["id"] == "e2e", case
                    vectors = result.as_numpy("embedding")
                    assert vectors is not None and vectors.dtype == np.float32, case
                    assert vectors.shape == (len(TEXTS), DIM), case
                    np.testing.assert_allclose(vectors, reference, atol=1e-5, err_msg=case)
        # The versioned path, as the client spells it.
        text = httpclient.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array(TEXTS[:1], dtype=object))
        result = client.infer(MODEL, [text], model_version="1")
        np.testing.assert_allclose(result.as_numpy("embedding"), reference[:1], atol=1e-5)
    finally:
        client.close()

    # The example in docs/inference.md runs as written, against this server.
    scope: dict[str, Any] = {}
    code = _doc_example("tritonclient").replace("127.0.0.1:8000", f"127.0.0.1:{triton_server.port}")
    exec(compile(code, "docs/inference.md", "exec"), scope)
    assert scope["vectors"].shape == (2, DIM)
    np.testing.assert_allclose(scope["vectors"][0], reference[0], atol=1e-5)


def _doc_example(name: str) -> str:
    text = (ROOT / "docs" / "inference.md").read_text()
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, f"docs/inference.md has no example {name!r}"
    return match.group(1)


async def test_the_http_cores_own_timeout_answers_in_kserve_shape(
    model_repository: Path, ready: Any
) -> None:
    from noa.plugin_sdk.testing import boot

    config = {
        "inference": {"repository": str(model_repository)},
        "http": {"request_timeout_s": 0.05},
    }
    texts = ["a long text that keeps the model busy for a while " * 20] * 64
    async with boot(["http", "inference"], config=config) as kernel:
        client = kernel.client
        await ready(client)
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [64], "data": texts}]}
        late = await client.post(f"/v2/models/{MODEL}/infer", json=body)
        assert late.status_code == 504
        assert late.json() == {"error": "the request took longer than 0.05 s"}
        native = await client.post("/v1/embed", json={"input": texts})
        assert native.status_code == 504
        assert native.json()["error"]["code"] == "timeout"
