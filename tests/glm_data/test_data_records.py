"""Record builders: ChatGLM-6B's ptuning layout, from token ids, with the tokenizer's own special ids."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glm_data import records

# Text ids of the golden vocabulary used as opaque numbers; specials come from the tokenizer.
PROMPT = [261, 735, 774, 1184, 294]
ANSWER = [261, 329, 898]


def test_train_record_is_prompt_gmask_sop_answer_eop_then_padding(tokenizer):
    record = records.train_record(tokenizer, PROMPT, ANSWER, max_source_length=8, max_target_length=8)
    t = tokenizer
    expected = [*PROMPT, t.gmask_token_id, t.bos_token_id, *ANSWER, t.eos_token_id] + [t.pad_token_id] * 5
    assert record["input_ids"].tolist() == expected
    assert record["labels"].tolist() == [-100] * 6 + [t.bos_token_id, *ANSWER, t.eos_token_id] + [-100] * 5
    assert record["input_ids"].dtype == record["labels"].dtype == np.int32


def test_train_record_cuts_prompt_to_source_minus_one_and_answer_to_target_minus_two(tokenizer):
    record = records.train_record(tokenizer, list(range(300, 320)), list(range(400, 420)), 6, 7)
    ids = record["input_ids"].tolist()
    assert len(ids) == 13
    assert ids[:5] == [300, 301, 302, 303, 304]
    assert ids[5:7] == [tokenizer.gmask_token_id, tokenizer.bos_token_id]
    assert ids[7:] == [400, 401, 402, 403, 404, tokenizer.eos_token_id]


def test_train_labels_ignore_a_pad_id_inside_the_answer_as_the_reference_does(tokenizer):
    record = records.train_record(tokenizer, PROMPT, [261, tokenizer.pad_token_id, 329], 8, 8)
    assert record["labels"].tolist()[6:11] == [tokenizer.bos_token_id, 261, -100, 329, tokenizer.eos_token_id]


def test_eval_record_keeps_gmask_sop_within_max_lengths(tokenizer):
    record = records.eval_record(tokenizer, list(range(300, 320)), list(range(400, 420)), 6, 7, "问", "答")
    gmask, sop = tokenizer.gmask_token_id, tokenizer.bos_token_id
    assert record["input_ids"].tolist() == [300, 301, 302, 303, gmask, sop]
    assert record["labels"].tolist() == [400, 401, 402, 403, 404, gmask, sop]
    assert (record["content"], record["summary"]) == ("问", "答")


def test_eval_record_of_short_text_is_not_padded(tokenizer):
    record = records.eval_record(tokenizer, PROMPT, ANSWER, 64, 64, "问", "答")
    assert len(record["input_ids"]) == len(PROMPT) + 2
    assert len(record["labels"]) == len(ANSWER) + 2


def test_mindformers_record_shifts_labels_left_by_one(tokenizer):
    train = records.train_record(tokenizer, PROMPT, ANSWER, 8, 8)
    record = records.mindformers_record(train, tokenizer)
    assert record["labels"].tolist() == [*train["labels"].tolist()[1:], -100]
    assert record["input_ids"].tolist() == train["input_ids"].tolist()


def test_mindformers_record_shapes_and_dtypes(tokenizer):
    train = records.train_record(tokenizer, PROMPT, ANSWER, 8, 8)
    record = records.mindformers_record(train, tokenizer)
    shapes = {name: (value.shape, value.dtype) for name, value in record.items()}
    assert shapes == {
        "input_ids": ((16,), np.int32),
        "labels": ((16,), np.int32),
        "position_ids": ((2, 16), np.int32),
        "attention_mask": ((1, 16, 16), np.int32),
    }


def test_position_ids_and_mask_match_the_reference_on_an_unpadded_prompt(tokenizer, golden_case):
    # The second row of the first golden batch has no padding: "请介绍一下华为" + [gMASK] <sop>.
    case = golden_case("batch_encode")[0]
    input_ids = np.array(case["input_ids"][1], np.int32)
    record = records.mindformers_record({"input_ids": input_ids, "labels": input_ids}, tokenizer)
    assert record["position_ids"].tolist() == case["position_ids"][1]
    assert record["attention_mask"].tolist() == case["attention_mask"][1]


def test_position_ids_freeze_at_gmask_and_count_blocks_from_sop(tokenizer):
    train = records.train_record(tokenizer, [300, 301], [400, 401], 4, 5)  # 300 301 gMASK sop 400 401 eop pad pad
    positions = records.mindformers_record(train, tokenizer)["position_ids"]
    assert positions.tolist() == [[0, 1, 2, 2, 2, 2, 2, 2, 2], [0, 0, 0, 1, 2, 3, 4, 5, 6]]


def test_attention_mask_shows_the_whole_context_and_the_answer_causally(tokenizer):
    train = records.train_record(tokenizer, [300], [400], 3, 3)  # 300 gMASK sop 400 eop pad
    mask = records.mindformers_record(train, tokenizer)["attention_mask"]
    assert mask.tolist() == [[
        [0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0],
    ]]


@pytest.mark.parametrize("columns", [("input_ids",), ("input_ids", "labels", "content")])
def test_unknown_column_sets_match_no_layout(columns):
    with pytest.raises(ValueError, match="no glm-data layout"):
        records.layout_of(columns)


text_ids = st.lists(st.integers(min_value=300, max_value=2999), max_size=40)
budgets = st.integers(min_value=3, max_value=24)


@given(
    pairs=st.lists(st.tuples(text_ids, text_ids), min_size=1, max_size=4),
    max_source_length=budgets,
    max_target_length=budgets,
)
@settings(max_examples=200, deadline=None)
def test_train_records_layout_holds_for_any_lengths(tokenizer, pairs, max_source_length, max_target_length):
    prompts, answers = zip(*pairs)
    batch = records.train_records(tokenizer, prompts, answers, max_source_length, max_target_length)
    t = tokenizer
    for index, (prompt, answer) in enumerate(pairs):
        kept_prompt, kept_answer = prompt[: max_source_length - 1], answer[: max_target_length - 2]
        body = [*kept_prompt, t.gmask_token_id, t.bos_token_id, *kept_answer, t.eos_token_id]
        padding = max_source_length + max_target_length - len(body)
        assert batch["input_ids"][index].tolist() == body + [t.pad_token_id] * padding
        context = len(kept_prompt) + 1
        assert batch["labels"][index].tolist() == [-100] * context + body[context:] + [-100] * padding


def test_mindformers_records_of_a_batch_are_its_records_one_by_one(tokenizer):
    prompts, answers = [PROMPT, [300], PROMPT[:2]], [ANSWER, ANSWER[:1], []]
    batch = records.mindformers_record(records.train_records(tokenizer, prompts, answers, 8, 8), tokenizer)
    for index, (prompt, answer) in enumerate(zip(prompts, answers)):
        one = records.mindformers_record(records.train_record(tokenizer, prompt, answer, 8, 8), tokenizer)
        for name, column in one.items():
            assert batch[name][index].tolist() == column.tolist(), name


@given(prompt=text_ids, answer=text_ids, max_source_length=budgets, max_target_length=budgets)
@settings(max_examples=200, deadline=None)
def test_eval_record_never_exceeds_its_budgets(tokenizer, prompt, answer, max_source_length, max_target_length):
    record = records.eval_record(tokenizer, prompt, answer, max_source_length, max_target_length, "", "")
    assert len(record["input_ids"]) == min(len(prompt), max_source_length - 2) + 2
    assert len(record["labels"]) == min(len(answer), max_target_length - 2) + 2
    assert record["input_ids"].tolist()[-2:] == [tokenizer.gmask_token_id, tokenizer.bos_token_id]
