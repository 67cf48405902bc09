"""The OpenAI-compatible HTTP API of a real `afina serve` process, called with the official `openai`
client: chat and text completions (plain and streamed) that match gRPC's answers from the same
engine, the models, embeddings from the retrieval path's model, OpenAI-style errors, the bearer
token, metrics, a client that hangs up, and a hot swap during calls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from services.inference import client
from services.retrieval import embed
from services.tuning import promotion
from tests.integration.harness import (
    Server,
    ensure_champion_tokenizer,
    forget_versions,
    inference_server,
    register_adapter,
)

pytestmark = pytest.mark.integration

CHAT = [("system", "Eres útil."), ("user", "¿Dónde está la sede?")]
GREEDY = dict(temperature=0, max_tokens=12)


@pytest.fixture(scope="module")
def champion(local_stack) -> int:
    return ensure_champion_tokenizer(local_stack)


@pytest.fixture(scope="module")
def serving(local_stack, champion, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("openai") / "serving.log"
    with inference_server(local_stack, log, AFINA_INFERENCE_ALIAS_CHECK_S="3600") as server:
        yield server


def api(server: Server, key: str = "unused", **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.http, api_key=key, max_retries=0, **options)


def grpc_text(server: Server, prompt: str = "", chat=None, max_new_tokens: int = 12) -> str:
    request = client.request(prompt, chat=chat, max_new_tokens=max_new_tokens, temperature=0)
    return server.stub().Generate(request, timeout=60).text


def test_chat_completions_answer_as_grpc_does_with_the_same_engine(serving, champion):
    answer = api(serving).chat.completions.create(
        model="champion", messages=[{"role": r, "content": c} for r, c in CHAT], **GREEDY)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == f"v{champion}"
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert choice.message.content == grpc_text(serving, chat=CHAT)
    assert answer.usage.completion_tokens > 0 and answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    # content as a list of text parts, and the "developer" role, mean the same chat
    parts = api(serving).chat.completions.create(
        model=f"v{champion}", messages=[{"role": "developer", "content": "Eres útil."},
                                        {"role": "user", "content": [{"type": "text", "text": "¿Dónde está "},
                                                                     {"type": "text", "text": "la sede?"}]}],
        **GREEDY)
    assert parts.choices[0].message.content == choice.message.content


def test_text_completions_continue_the_prompt_and_stop_where_asked(serving):
    answer = api(serving).completions.create(model="champion", prompt="La empresa", **GREEDY)
    assert answer.object == "text_completion"
    assert answer.choices[0].text == grpc_text(serving, "La empresa")
    assert answer.usage.completion_tokens <= 12
    full = grpc_text(serving, "La empresa", max_new_tokens=40)
    stop = next(word for word in full.split()[1:] if len(word) > 1)  # a word after the first one
    stopped = api(serving).completions.create(model="champion", prompt="La empresa", temperature=0, max_tokens=40,
                                              stop=[stop])
    assert stopped.choices[0].finish_reason == "stop" and stop not in stopped.choices[0].text
    assert full.startswith(stopped.choices[0].text)


def test_streams_send_deltas_that_add_up_to_the_same_answer(serving, champion):
    messages = [{"role": r, "content": c} for r, c in CHAT]
    whole = api(serving).chat.completions.create(model="champion", messages=messages, **GREEDY)
    chunks = list(api(serving).chat.completions.create(model="champion", messages=messages, stream=True,
                                                       stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert {c.model for c in chunks} == {f"v{champion}"} and len({c.id for c in chunks}) == 1

    text = list(api(serving).completions.create(model="champion", prompt="La empresa", stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in text) == grpc_text(serving, "La empresa")


def test_models_list_the_champion_by_alias_the_versions_and_the_embedding_model(serving, champion):
    listed = [m.id for m in api(serving).models.list()]
    assert listed[0] == "champion" and f"v{champion}" in listed
    assert embed.load().name in listed
    assert api(serving).models.retrieve("champion").id == "champion"
    with pytest.raises(openai.NotFoundError):
        api(serving).models.retrieve("v999999")


def test_embeddings_are_the_retrieval_models_vectors_in_either_encoding(serving):
    model = embed.load()
    texts = ["La devolución de un producto se puede pedir en 30 días.", "Returns are accepted within 30 days."]
    # the openai client asks for base64 unless told otherwise, and decodes it
    answer = api(serving).embeddings.create(model=model.name, input=texts)
    vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert vectors.shape == (2, model.dim) and [d.index for d in answer.data] == [0, 1]
    assert np.allclose(vectors, model.queries(texts), atol=1e-6)
    floats = api(serving).embeddings.create(model=model.name, input=texts[0], encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-6)
    assert answer.usage.prompt_tokens == model.tokens(texts) > 0
    passage = api(serving).embeddings.create(model=model.name, input=texts[0], extra_body={"input_type": "passage"})
    assert np.allclose(passage.data[0].embedding, model.passages([texts[0]])[0], atol=1e-6)
    unrelated = model.queries(["El inventario anual se hace en enero en Huesca."])[0]
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ unrelated)  # a translation is nearer
    with pytest.raises(openai.NotFoundError):
        api(serving).embeddings.create(model="text-embedding-3-small", input="hola")
    with pytest.raises(openai.BadRequestError) as empty:
        api(serving).embeddings.create(model=model.name, input=["hola", " "])
    assert empty.value.body["param"] == "input[1]"


@pytest.mark.parametrize("call, status, param", [
    (dict(model="gpt-4o"), 404, None),
    (dict(max_tokens=100_000), 400, "max_tokens"),
    (dict(messages=[]), 400, "messages"),
    (dict(messages=[{"role": "robot", "content": "hola"}]), 400, "messages.0.role"),
    (dict(n=2), 400, "n"),
    (dict(temperature=-1), 400, "temperature"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), 400, "tools"),
])
def test_bad_requests_get_openai_errors_that_name_the_field(serving, call, status, param):
    fields = dict(model="champion", messages=[{"role": "user", "content": "hola"}], max_tokens=4) | call
    with pytest.raises(openai.APIStatusError) as refused:
        api(serving).chat.completions.create(**fields)
    assert refused.value.status_code == status
    error = refused.value.body
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found" and "GET /v1/models" in error["message"]


def test_a_body_over_the_limit_is_refused_and_unknown_paths_are_openai_errors(serving):
    big = httpx.post(f"{serving.http}/chat/completions", content=b"x" * (2 << 20),
                     headers={"content-type": "application/json"}, timeout=30)
    assert big.status_code == 413 and "more than" in big.json()["error"]["message"]
    missing = httpx.get(f"{serving.http}/assistants", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    broken = httpx.post(f"{serving.http}/completions", content=b"{not json", timeout=10,
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "error" in broken.json()


def test_a_client_that_hangs_up_stops_its_generation(serving):
    before = serving.metric("afina_inference_generated_tokens_total")
    with pytest.raises(openai.APITimeoutError):
        api(serving, timeout=0.3).completions.create(model="champion", prompt="La empresa", max_tokens=480,
                                                     extra_body={"ignore_eos": True})
    deadline = time.monotonic() + 30
    while 'status="499"' not in serving.metrics() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert 'afina_inference_http_requests_total{path="/v1/completions",status="499"}' in serving.metrics()
    time.sleep(1.0)
    generated = serving.metric("afina_inference_generated_tokens_total") - before
    assert generated < 480, f"the generation ran to its end ({generated} tokens) after the client left"


def test_metrics_count_http_requests_by_route_and_status(serving):
    api(serving).models.list()
    text = serving.metrics()
    assert 'afina_inference_http_requests_total{path="/v1/models",status="200"}' in text
    assert 'afina_inference_http_request_seconds_count{path="/v1/models"}' in text


def test_a_promoted_version_is_swapped_in_during_http_calls_without_a_failure(serving, local_stack, champion):
    newer = register_adapter(local_stack, seed=21)
    answered: list[tuple[float, str | None, str | None]] = []
    stop = threading.Event()

    def caller(seed: int) -> None:
        while not stop.is_set():
            try:
                model, error = api(serving, timeout=60).chat.completions.create(
                    model="champion", messages=[{"role": "user", "content": "hola"}], max_tokens=4,
                    seed=seed).model, None
            except openai.OpenAIError as exc:
                model, error = None, repr(exc)
            answered.append((time.monotonic(), model, error))

    callers = [threading.Thread(target=caller, args=(seed,)) for seed in range(3)]
    try:
        for thread in callers:
            thread.start()
        time.sleep(1.0)
        stream = api(serving, timeout=120).completions.create(model="champion", prompt="La empresa", max_tokens=300,
                                                              stream=True, extra_body={"ignore_eos": True})
        first = next(iter(stream))
        asyncio.run(promotion.promote(local_stack, newer))
        deadline = time.monotonic() + 60
        while not any(model == f"v{newer}" for _, model, _ in answered) and time.monotonic() < deadline:
            time.sleep(0.1)
        rest = list(stream)
        stop.set()
        for thread in callers:
            thread.join(60)
        assert [error for _, _, error in answered if error] == []
        assert {model for _, model, _ in answered} == {f"v{champion}", f"v{newer}"}
        # the stream that was in flight when the alias moved finished on the version it began with
        assert {first.model, *(chunk.model for chunk in rest)} == {f"v{champion}"}
        assert rest[-1].choices[0].finish_reason == "length"
        assert api(serving).models.list().data[0].version == newer
    finally:
        stop.set()
        forget_versions(local_stack, [newer], champion)


@pytest.fixture(scope="module")
def secured(local_stack, champion, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("openai") / "secured.log"
    with inference_server(local_stack, log, AFINA_INFERENCE_TOKEN="s3cret") as server:
        yield server


def test_with_a_token_calls_need_it_as_their_api_key(secured):
    with pytest.raises(openai.AuthenticationError) as refused:
        api(secured, key="wrong").models.list()
    assert refused.value.body["code"] == "invalid_api_key"
    assert httpx.post(f"{secured.http}/completions", json={"model": "champion", "prompt": "a"}).status_code == 401
    answer = api(secured, key="s3cret").completions.create(model="champion", prompt="La empresa", max_tokens=2)
    assert answer.usage.completion_tokens >= 1
    assert httpx.get(secured.http.removesuffix("/v1") + "/health").json()["status"] == "serving"  # open, as gRPC's
