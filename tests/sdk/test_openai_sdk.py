"""The official `openai` Python SDK, unchanged, against Conclave's gateway: models, completions
streamed and not (with usage), agents as models, and errors mapped to the SDK's exceptions."""

import openai
import pytest


def client(server, key=None):
    return openai.OpenAI(base_url=f"{server['base']}/v1", api_key=key or server["key"], max_retries=0, timeout=20)


def test_lists_the_tenants_models(server):
    ids = sorted(m.id for m in client(server).models.list())
    assert ids == ["mock-large", "mock-model"]


def test_plain_completion_with_usage(server):
    reply = client(server).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "What does privilege protect?"}],
        temperature=0.2,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Hello from the mock provider."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0


def test_streamed_completion_with_include_usage(server):
    stream = client(server).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "Stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from the mock provider."
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_an_agent_is_a_model(server):
    reply = client(server).chat.completions.create(
        model=f"agent:{server['agent']}", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "mock-model"
    assert reply.choices[0].message.content


def test_an_access_token_works_too(server):
    reply = client(server, key=server["token"]).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content


def test_errors_become_the_sdks_exceptions(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, key="ck_not-a-real-key").models.list()
    with pytest.raises(openai.NotFoundError) as found:
        client(server).chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client(server).chat.completions.create(model="mock-model", messages=[])
