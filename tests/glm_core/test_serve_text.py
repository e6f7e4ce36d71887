"""TextStream: the deltas a streamed answer is sent in add up to the whole answer, however its tail changes."""

import pytest

from glm_core.chat import process_response
from glm_core.serve.worker import TextStream

EOS = 3005  # the golden tokenizer's <eop>


@pytest.fixture
def render(tokenizer):
    return lambda ids: process_response(tokenizer.decode(ids))


def stream_text(stream, ids):
    deltas = [stream.add(token) for token in ids]
    return deltas, stream.close()


@pytest.mark.parametrize("text", [
    "你好,世界!今天[[训练时间]]的天气:晴;好吗?",  # process_response rewrites punctuation and [[训练时间]]
    "Tell me a joke.   And another one, please",
    "表情😀与字节",  # byte-fallback pieces: a character is complete only after its last byte
])
def test_deltas_add_up_to_the_rendered_answer(tokenizer, render, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(render, EOS, [])
    deltas, tail = stream_text(stream, ids)
    assert "".join(deltas) + tail == render(ids)
    assert stream.finish_reason is None  # out of tokens, not ended


def test_the_end_token_finishes_and_later_tokens_are_ignored(tokenizer, render):
    ids = tokenizer.encode("你好", add_special_tokens=False)
    stream = TextStream(render, EOS, [])
    deltas, tail = stream_text(stream, [*ids, EOS, *ids])
    assert "".join(deltas) + tail == render(ids)
    assert stream.finish_reason == "stop"


def test_a_stop_string_ends_the_answer_before_it(tokenizer, render):
    ids = tokenizer.encode("one two three four five six seven", add_special_tokens=False)
    stream = TextStream(render, EOS, ["four", "never"])
    deltas, tail = stream_text(stream, ids)
    assert "".join(deltas) + tail == "one two three "
    assert stream.finish_reason == "stop"


def test_nothing_of_a_stop_string_is_sent_before_it_is_complete(tokenizer, render):
    """A stop string longer than the usual held-back tail still holds its possible start back."""
    stop = "a stop string longer than eight characters"
    ids = tokenizer.encode("words before " + stop, add_special_tokens=False)
    stream = TextStream(render, EOS, [stop])
    sent = ""
    for token in ids:
        sent += stream.add(token)
        assert stop[:2] not in sent
    assert sent + stream.close() == "words before "
