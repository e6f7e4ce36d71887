"""glm serve over HTTP: a real uvicorn server on loopback serving the golden model, asked through the
``openai`` client and plain httpx. Greedy answers must equal ``GLMChatModel.chat``'s, streamed or not."""

import json
import threading

import httpx
import openai
import pytest
from live_server import LiveServer

from glm_core.serve import create_app
from glm_core.text_generation import generate_texts
from glm_tokenizer import chat_prompt

MODEL_NAME = "glm-tiny"
NEW_TOKENS = 24  # the golden chat rounds are 24 tokens long


@pytest.fixture(scope="module")
def server(chat_model, tokenizer):
    with LiveServer(create_app(chat_model, tokenizer, model_name=MODEL_NAME)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture
def chat(server, chat_model, tokenizer):
    """``chat(query, history, **options)`` → ``model.chat``'s greedy answer, run while the server is idle."""

    def answer(query, history=(), **options):
        server.wait_idle()
        options.setdefault("do_sample", False)
        return chat_model.chat(tokenizer, query, list(history), **options)[0]

    return answer


def as_messages(query, history):
    messages = []
    for old_query, response in history:
        messages += [{"role": "user", "content": old_query}, {"role": "assistant", "content": response}]
    return [*messages, {"role": "user", "content": query}]


def history_of(case):
    return [tuple(turn) for turn in case["history"]]


def sse_data(response: httpx.Response) -> list[str]:
    """The data lines of a server-sent event stream, in order."""
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def post(server, path, body, **kwargs):
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)


# ------------------------------------------------------------------------------------------- answers
@pytest.mark.parametrize("case_index", range(3))
def test_chat_completion_equals_chat(client, chat, tokenizer, golden_case, case_index):
    case = golden_case("chat")[case_index]
    expected = chat(case["query"], history_of(case), max_new_tokens=NEW_TOKENS)
    completion = client.chat.completions.create(model=MODEL_NAME, messages=as_messages(case["query"], history_of(case)),
                                                max_tokens=NEW_TOKENS, temperature=0)
    assert completion.choices[0].message.content == expected == case["response"]
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "length"
    assert completion.model == MODEL_NAME
    prompt_ids = tokenizer.encode(chat_prompt(case["query"], history_of(case)))
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (len(prompt_ids), NEW_TOKENS)


@pytest.mark.parametrize("case_index", range(3))
def test_streamed_chat_completion_equals_chat(client, chat, golden_case, case_index):
    case = golden_case("chat")[case_index]
    expected = chat(case["query"], history_of(case), max_new_tokens=NEW_TOKENS)
    stream = client.chat.completions.create(model=MODEL_NAME, messages=as_messages(case["query"], history_of(case)),
                                            max_tokens=NEW_TOKENS, temperature=0, stream=True)
    chunks = list(stream)
    deltas = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices[0].delta.content]
    assert "".join(deltas) == expected
    assert len(deltas) > 1  # it came in pieces
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "length"
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])


def test_stream_is_server_sent_events_ending_with_done(server, chat):
    expected = chat("你好", max_new_tokens=NEW_TOKENS)
    body = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": NEW_TOKENS, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = sse_data(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"]) == expected
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == NEW_TOKENS


def test_system_message_opens_the_first_user_turn(client, chat):
    system, first, reply, query = "你是一个助手", "你好", "你好！", "请介绍一下华为"
    expected = chat(query, [(f"{system}\n{first}", reply)], max_new_tokens=NEW_TOKENS)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": first},
                {"role": "assistant", "content": reply}, {"role": "user", "content": query}]
    completion = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=NEW_TOKENS,
                                                temperature=0)
    assert completion.choices[0].message.content == expected


def test_text_parts_are_joined(client, chat):
    expected = chat("请介绍一下华为", max_new_tokens=8)
    content = [{"type": "text", "text": "请介绍"}, {"type": "text", "text": "一下华为"}]
    completion = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": content}],
                                                max_tokens=8, temperature=0)
    assert completion.choices[0].message.content == expected


def test_seeded_sampling_follows_the_request(client, chat):
    """temperature > 0 samples (with the original chat's top_p 0.7 unless given); a seed repeats it."""
    expected = chat("你好", max_new_tokens=NEW_TOKENS, do_sample=True, temperature=0.9, top_p=0.95, seed=7)
    answers = [client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "你好"}],
                                              max_tokens=NEW_TOKENS, temperature=0.9, top_p=0.95,
                                              seed=7).choices[0].message.content for _ in range(2)]
    assert answers == [expected, expected]
    assert expected != chat("你好", max_new_tokens=NEW_TOKENS)  # it did sample


def test_completion_continues_the_prompt(client, server, chat_model, tokenizer):
    server.wait_idle()
    results, _ = generate_texts(chat_model, tokenizer, ["你好"], max_new_tokens=NEW_TOKENS)
    completion = client.completions.create(model=MODEL_NAME, prompt="你好", max_tokens=NEW_TOKENS, temperature=0)
    assert completion.choices[0].text == results[0].response
    streamed = client.completions.create(model=MODEL_NAME, prompt="你好", max_tokens=NEW_TOKENS, temperature=0,
                                         stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == results[0].response


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_ends_the_answer_before_it(client, chat, stream):
    full = chat("你好", max_new_tokens=NEW_TOKENS)
    stop = full[10:13]
    expected = full[:full.index(stop)]
    response = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "你好"}],
                                              max_tokens=NEW_TOKENS, temperature=0, stop=[stop], stream=stream)
    if stream:
        chunks = list(response)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        finish_reason = chunks[-1].choices[0].finish_reason
    else:
        text, finish_reason = response.choices[0].message.content, response.choices[0].finish_reason
    assert (text, finish_reason) == (expected, "stop")


def test_models_and_health(client, server):
    assert [model.id for model in client.models.list()] == [MODEL_NAME]
    health = server.health()
    assert (health["status"], health["model"]) == ("ok", MODEL_NAME)


def test_chat_page_is_served(server):
    page = httpx.get(server.url, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from elsewhere


# ------------------------------------------------------------------------------------ concurrency
def test_concurrent_requests_each_get_their_own_answer(server, chat):
    queries = ["你好", "请介绍一下华为", "Tell me a joke."]
    expected = {query: chat(query, max_new_tokens=NEW_TOKENS) for query in queries}
    answers = {}

    def ask(query):
        body = {"messages": [{"role": "user", "content": query}], "max_tokens": NEW_TOKENS, "temperature": 0,
                "stream": True}
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
            chunks = [json.loads(item) for item in sse_data(response)[:-1]]
        answers[query] = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)

    threads = [threading.Thread(target=ask, args=(query,)) for query in queries * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == expected


def test_a_client_leaving_mid_stream_frees_the_model(server, chat_model, chat):
    seq_length = chat_model.config.seq_length
    body = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": seq_length - 8, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        first_chunks = [next(lines) for _ in range(6)]  # the role chunk and two of text, with blank lines
    assert all(line.startswith("data: ") for line in first_chunks[::2])
    server.wait_idle()
    assert chat_model.generation_stats.new_tokens < seq_length // 2  # left long before its end
    expected = chat("请介绍一下华为", max_new_tokens=NEW_TOKENS)
    response = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "请介绍一下华为"}],
                                                      "max_tokens": NEW_TOKENS, "temperature": 0})
    assert response.json()["choices"][0]["message"]["content"] == expected


# ------------------------------------------------------------------------------------ bad requests
USER = [{"role": "user", "content": "你好"}]


@pytest.mark.parametrize("path, body, status, param, words", [
    ("/v1/chat/completions", b'{"messages": [', 422, None, "not valid JSON"),
    ("/v1/chat/completions", {"messages": USER, "max_tokens": "many"}, 422, None, "max_tokens"),
    ("/v1/chat/completions", {"messages": USER, "temperature": 3}, 422, None, "temperature"),
    ("/v1/chat/completions", {"messages": []}, 422, None, "messages"),
    ("/v1/chat/completions", {}, 422, None, "messages: Field required"),
    ("/v1/chat/completions", {"messages": USER, "n": 2}, 400, "n", "only n=1"),
    ("/v1/chat/completions", {"messages": USER, "max_tokens": 1000}, 400, "max_tokens",
     "maximum context length is 256"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "你好" * 300}]}, 400, "messages",
     "no room is left"),
    ("/v1/chat/completions", {"messages": [*USER, {"role": "assistant", "content": "hi"}]}, 400, "messages",
     "last message must be the user's"),
    ("/v1/chat/completions", {"messages": [*USER, *USER]}, 400, "messages[1]", "expected a 'assistant' message"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0]", "role 'tool'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages[0].content", "only text parts"),
    ("/v1/chat/completions", {"messages": USER, "tools": [{"type": "function"}]}, 400, "tools", "not supported"),
    ("/v1/chat/completions", {"messages": USER, "logprobs": True}, 400, "logprobs", "log-probabilities"),
    ("/v1/chat/completions", {"messages": USER, "frequency_penalty": 0.5}, 400, "frequency_penalty", "penalties"),
    ("/v1/chat/completions", {"messages": USER, "stop": list("abcde")}, 400, "stop", "at most 4"),
    ("/v1/chat/completions", {"messages": USER, "beam_width": 4}, 400, "beam_width", "unknown parameter"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt", "one prompt per request"),
    ("/v1/completions", {"prompt": "a", "echo": True}, 400, "echo", "not supported"),
    ("/v1/completions", {"prompt": "你好", "max_tokens": 300}, 400, "max_tokens", "lower max_tokens"),
])
def test_bad_request_gets_its_status_and_a_clear_message(server, path, body, status, param, words):
    if isinstance(body, bytes):
        response = httpx.post(f"{server.url}{path}", content=body, headers={"Content-Type": "application/json"},
                              timeout=60)
    else:
        response = post(server, path, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"]
    assert error["param"] == param
    assert "\n" not in error["message"]


def test_the_openai_client_sees_a_context_overflow_as_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256"):
        client.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=1000)


def test_unknown_route_and_method_are_errors_not_crashes(server):
    assert httpx.get(f"{server.url}/v1/nothing", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/v1/chat/completions", timeout=10).status_code == 405
    assert server.health()["status"] == "ok"


# ------------------------------------------------------------------------------------------ API key
def test_api_key_is_required_when_set(server, chat_model, tokenizer, chat):
    expected = chat("你好", max_new_tokens=8)  # the module's server is idle from here: one generator at a time
    with LiveServer(create_app(chat_model, tokenizer, model_name=MODEL_NAME, api_key="s3cret")) as keyed:
        body = {"messages": USER, "max_tokens": 8, "temperature": 0}
        missing = post(keyed, "/v1/chat/completions", body)
        wrong = post(keyed, "/v1/chat/completions", body, headers={"Authorization": "Bearer nope"})
        assert (missing.status_code, wrong.status_code) == (401, 401)
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert httpx.post(f"{keyed.url}/v1/chat/completions", content=b"{", timeout=10).status_code == 401
        assert httpx.get(f"{keyed.url}/v1/models", timeout=10).status_code == 401
        assert httpx.get(f"{keyed.url}/health", timeout=10).status_code == 200  # open: no model output
        assert httpx.get(keyed.url, timeout=10).status_code == 200  # the page; it asks for the key
        client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="s3cret", max_retries=0, timeout=60)
        answer = client.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=8, temperature=0)
        assert answer.choices[0].message.content == expected
