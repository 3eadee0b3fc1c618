"""The OpenAI-compatible API: ``/v1/embeddings`` and ``/v1/models``, in process and
driven by the official ``openai`` client against a real ``noa serve``."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = Path(__file__).resolve().parents[3] / "docs"
TEXTS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Embeddings map texts to vectors.",
]


async def embeddings(kernel: Any, **body: Any) -> httpx.Response:
    response: httpx.Response = await kernel.client.post(
        "/v1/embeddings", json={"model": MODEL, **body}
    )
    return response


async def native(kernel: Any, texts: list[str]) -> np.ndarray[Any, Any]:
    response = await kernel.client.post("/v1/embed", json={"model": MODEL, "input": texts})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embeddings"], dtype=np.float32)


def vectors(body: dict[str, Any]) -> np.ndarray[Any, Any]:
    rows = []
    for item in body["data"]:
        value = item["embedding"]
        if isinstance(value, str):
            rows.append(np.frombuffer(base64.b64decode(value), dtype="<f4"))
        else:
            rows.append(np.asarray(value, dtype=np.float32))
    return np.stack(rows)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    # OpenAI's error object: every client reads these four.
    assert {"message", "type", "param", "code"} <= error.keys()
    return error


def token_count(minilm_dir: Path, text: str) -> int:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # the file pads every text to 128
    return len(tokenizer.encode(text).ids)


# -- /v1/embeddings ----------------------------------------------------------------------


async def test_one_text_answers_openai_shape(inference: Any) -> None:
    response = await embeddings(inference, input="hello world")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert len(body["data"]) == 1
    item = body["data"][0]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == 384
    assert all(isinstance(v, float) for v in item["embedding"])
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}


async def test_many_texts_keep_order_and_match_native_api(inference: Any) -> None:
    body = (await embeddings(inference, input=TEXTS)).json()
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    np.testing.assert_allclose(vectors(body), await native(inference, TEXTS), atol=1e-6)


async def test_base64_is_little_endian_float32_of_the_float_vectors(inference: Any) -> None:
    floats = (await embeddings(inference, input=TEXTS, encoding_format="float")).json()
    packed = (await embeddings(inference, input=TEXTS, encoding_format="base64")).json()
    assert all(isinstance(item["embedding"], str) for item in packed["data"])
    assert all(len(base64.b64decode(item["embedding"])) == 384 * 4 for item in packed["data"])
    np.testing.assert_allclose(vectors(packed), vectors(floats), rtol=0, atol=1e-6)
    assert packed["usage"] == floats["usage"]


async def test_usage_counts_the_tokens_of_every_input(inference: Any, minilm_dir: Path) -> None:
    body = (await embeddings(inference, input=TEXTS)).json()
    expected = sum(token_count(minilm_dir, text) for text in TEXTS)
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


async def test_long_text_is_cut_to_the_model_limit(inference: Any) -> None:
    body = (await embeddings(inference, input="word " * 2000)).json()
    assert body["usage"]["prompt_tokens"] == 256


async def test_dimensions_truncate_then_rescale_to_unit_length(inference: Any) -> None:
    full = vectors((await embeddings(inference, input=TEXTS)).json())
    short = vectors((await embeddings(inference, input=TEXTS, dimensions=64)).json())
    assert short.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)
    # The model's own size changes nothing (its vectors are already unit length).
    same = vectors((await embeddings(inference, input=TEXTS, dimensions=384)).json())
    np.testing.assert_allclose(same, full, atol=1e-6)
    packed = (await embeddings(inference, input="x", dimensions=8, encoding_format="base64")).json()
    assert len(base64.b64decode(packed["data"][0]["embedding"])) == 8 * 4


@pytest.mark.parametrize("dimensions", [0, -3, 385, 4096])
async def test_dimensions_out_of_range_are_refused(inference: Any, dimensions: int) -> None:
    error = error_of(await embeddings(inference, input="x", dimensions=dimensions), 400)
    assert error["param"] == "dimensions"
    assert error["type"] == "invalid_request_error"
    if dimensions > 384:
        assert error["code"] == "invalid_dimensions"
        assert "at most 384" in error["message"]


@pytest.mark.parametrize(
    "value",
    [[101, 7592, 102], [[101, 7592], [101, 2088, 102]], ["text", 42], [[]]],
    ids=["ids", "rows-of-ids", "mixed", "empty-row"],
)
async def test_token_id_arrays_are_refused_not_embedded(inference: Any, value: Any) -> None:
    error = error_of(await embeddings(inference, input=value), 400)
    assert (error["code"], error["param"]) == ("token_input_unsupported", "input")
    assert "send the texts as strings" in error["message"].lower()


@pytest.mark.parametrize(
    ("value", "param"), [("", "input"), ([], "input"), (["ok", ""], "input[1]")]
)
async def test_empty_input_is_refused(inference: Any, value: Any, param: str) -> None:
    error = error_of(await embeddings(inference, input=value), 400)
    assert (error["code"], error["param"]) == ("validation_error", param)


async def test_unknown_model_is_404_naming_the_loaded_ones(inference: Any) -> None:
    response = await inference.client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
    )
    error = error_of(response, 404)
    assert (error["type"], error["code"], error["param"]) == (
        "not_found_error",
        "model_not_found",
        "model",
    )
    assert "'text-embedding-3-small'" in error["message"]
    assert MODEL in error["message"]


# (body, the param named, words the message holds)
WRONG_BODIES: list[tuple[Any, str | None, str]] = [
    ({"model": MODEL, "input": 3}, "input", "str | array"),
    ({"model": MODEL, "input": [1.5]}, "input[0]", ""),
    ({"model": MODEL, "input": {"text": "x"}}, "input", ""),
    ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format", ""),
    ({"model": MODEL, "input": "x", "dimensions": "many"}, "dimensions", ""),
    ({"model": MODEL, "input": "x", "dimensions": 6.5}, "dimensions", ""),
    ({"model": 7, "input": "x"}, "model", ""),
    ({"model": "", "input": "x"}, "model", ""),
    ({"input": "x"}, None, "model"),
    ({"model": MODEL}, None, "input"),
    ({"model": MODEL, "input": "x", "truncate": False}, None, "truncate"),
    ([MODEL, "x"], None, ""),
]


async def test_wrong_types_are_400_in_the_standard_body(inference: Any) -> None:
    # One kernel for every case: each is a single request that changes nothing.
    for body, param, words in WRONG_BODIES:
        response = await inference.client.post("/v1/embeddings", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error", body
        assert error["code"] == "validation_error", body
        if param is not None:
            assert error["param"] == param, (body, error)
        assert words in error["message"], (body, error)


async def test_a_body_that_is_not_json_is_400(inference: Any) -> None:
    response = await inference.client.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    error_of(response, 400)


async def test_an_unloaded_model_is_404_and_unlisted(inference: Any) -> None:
    unload = await inference.client.post("/v1/admin/models/unload", json={"model": MODEL})
    assert unload.status_code == 200, unload.text
    error = error_of(await embeddings(inference, input="x"), 404)
    assert error["code"] == "model_not_found"
    assert "unloaded" in error["message"]
    assert (await inference.client.get("/v1/models")).json() == {"object": "list", "data": []}
    error = error_of(await inference.client.get(f"/v1/models/{MODEL}"), 404)
    assert "/v1/admin/models/load" in error["message"]


# -- /v1/models --------------------------------------------------------------------------


async def test_models_lists_the_loaded_model(inference: Any) -> None:
    body = (await inference.client.get("/v1/models")).json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert card["id"] == MODEL
    assert (card["object"], card["owned_by"]) == ("model", "noa")
    assert isinstance(card["created"], int) and card["created"] > 1_600_000_000


@pytest.mark.parametrize("path", [MODEL, MODEL.replace("/", "%2F")], ids=["slash", "encoded"])
async def test_one_model_by_an_id_holding_a_slash(inference: Any, path: str) -> None:
    response = await inference.client.get(f"/v1/models/{path}")
    assert response.status_code == 200, response.text
    listed = (await inference.client.get("/v1/models")).json()["data"][0]
    assert response.json() == listed


@pytest.mark.parametrize("name", ["nope", "org/nope", "a..b", "a/b/c", "a" * 300])
async def test_unknown_model_id_is_404(inference: Any, name: str) -> None:
    error = error_of(await inference.client.get(f"/v1/models/{name}"), 404)
    assert (error["code"], error["param"]) == ("model_not_found", "model")


async def test_routes_are_documented_in_openapi(inference: Any) -> None:
    schema = (await inference.client.get("/schema/openapi.json")).json()
    post = schema["paths"]["/v1/embeddings"]["post"]
    assert post["summary"] and post["description"]
    assert {"400", "404", "429", "503"} <= post["responses"].keys()
    error_ref = {"$ref": "#/components/schemas/Error"}
    assert post["responses"]["404"]["content"]["application/json"]["schema"] == error_ref
    request = schema["components"]["schemas"]["EmbeddingsRequest"]
    assert {"input", "model", "encoding_format", "dimensions", "user"} <= request[
        "properties"
    ].keys()
    for path in ("/v1/models", "/v1/models/{model_id}"):
        assert schema["paths"][path]["get"]["summary"]


# -- the official client, in process -------------------------------------------------------


def client_of(kernel: Any) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url="http://noa.test/v1",
        api_key="unused",
        http_client=kernel.client,
        max_retries=0,
    )


async def test_openai_client_raises_its_own_errors_with_our_message(inference: Any) -> None:
    client = client_of(inference)
    with pytest.raises(openai.NotFoundError, match="'text-embedding-3-small' does not exist"):
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="token ids") as caught:
        await client.embeddings.create(model=MODEL, input=[[101, 102]])
    assert caught.value.code == "token_input_unsupported"
    assert caught.value.param == "input"
    assert caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="at most 384") as caught:
        await client.embeddings.create(model=MODEL, input="x", dimensions=1000)
    assert caught.value.param == "dimensions"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.models.retrieve("org/nope")


async def test_openai_client_in_process(inference: Any) -> None:
    client = client_of(inference)
    default = await client.embeddings.create(model=MODEL, input=TEXTS)
    floats = await client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    expected = await native(inference, TEXTS)
    np.testing.assert_allclose([d.embedding for d in default.data], expected, atol=1e-6)
    np.testing.assert_allclose([d.embedding for d in floats.data], expected, atol=1e-6)
    assert (await client.models.retrieve(MODEL)).id == MODEL


# -- the official client against a real server -----------------------------------------------


def doc_example(page: str, name: str) -> str:
    text = (DOCS / page).read_text()
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, f"{page} has no example {name!r}"
    return match.group(1)


def cosines(a: Any, b: Any) -> np.ndarray[Any, Any]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dot = np.sum(x * y, axis=1)
    result: np.ndarray[Any, Any] = dot / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return result


@pytest.mark.e2e
def test_official_openai_client_works_unchanged(
    serve: Any,
    model_repository: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(env={"NOA_INFERENCE__REPOSITORY": str(model_repository)})
    server.wait_ready(timeout=60)
    native_body = httpx.post(
        server.url + "/v1/embed", json={"model": MODEL, "input": TEXTS}, timeout=30
    ).json()
    expected = native_body["embeddings"]

    # The client sends its key as a bearer credential: a real API key, made by the admin
    # API (this local caller is anonymous with every scope in the embedded profile).
    made = httpx.post(
        server.url + "/v1/admin/keys",
        json={"name": "openai-client", "scopes": ["inference:invoke"]},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server.url + "/v1", api_key="sk-unknown").models.list()
    client = OpenAI(base_url=server.url + "/v1", api_key=key)
    request.addfinalizer(client.close)
    # The client asks for base64 unless told otherwise, and decodes it itself.
    default = client.embeddings.create(model=MODEL, input=TEXTS)
    assert [d.index for d in default.data] == [0, 1, 2]
    assert default.model == MODEL
    assert default.usage.prompt_tokens == native_body["total_tokens"]
    np.testing.assert_allclose(cosines([d.embedding for d in default.data], expected), 1, atol=1e-5)

    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    np.testing.assert_allclose(cosines([d.embedding for d in floats.data], expected), 1, atol=1e-5)

    one = client.embeddings.create(model=MODEL, input="The cat sat on the mat.", dimensions=32)
    assert len(one.data[0].embedding) == 32

    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "noa")

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client.embeddings.create(model=MODEL, input=[[101, 7592, 102]])

    # The example in docs/inference.md runs as written, against this server.
    scope: dict[str, Any] = {}
    code = doc_example("inference.md", "openai-client").replace("http://127.0.0.1:8000", server.url)
    monkeypatch.setenv("NOA_API_KEY", key)
    exec(compile(code, "docs/inference.md", "exec"), scope)
    scope["client"].close()
    assert len(scope["vectors"]) == 2 and len(scope["vectors"][0]) == 384
    assert server.terminate() == 0
