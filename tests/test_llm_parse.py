import pytest

from hnl_ray.llm.parse import FAILED, OK, REPAIRED, TRUNCATED, extract_json, validate
from hnl_ray.llm.schemas import json_schema


@pytest.mark.parametrize("reply, status", [
    ('{"summarization": "Kids who love dinosaurs", "reasoning": "T-rex theme"}', OK),
    ('Sure, here it is:\n```json\n{"summarization": "a", "reasoning": "b"}\n```\nAnything else?', REPAIRED),
    ('{"summarization": "a", "reasoning": "b",}', REPAIRED),  # trailing comma
    ("{'summarization': 'a', 'reasoning': 'b'}", REPAIRED),  # single quotes
    ('{"summarization": "cut off mid-sent', TRUNCATED),  # cut off by the token limit: never "repaired"
    ('The user likes {"summarization": "a", "reasoning": "b"} and more', REPAIRED),  # chatter around it
])
def test_replies_that_parse(reply, status):
    p = validate("item_profile", reply)
    assert p.status == status and p.value["summarization"]


@pytest.mark.parametrize("reply, reason", [
    ("", "empty reply"),
    ("I cannot help with that.", "no JSON object"),
    ('{"reasoning": "only reasoning"}', "summarization: Field required"),
    ('{"summarization": "   ", "reasoning": "x"}', "empty summarization"),
    ("[1, 2, 3]", "expected a JSON object"),
    ('{"summarization": "a" "reasoning"', "unparseable JSON"),
])
def test_replies_that_fail_keep_a_reason(reply, reason):
    p = validate("item_profile", reply)
    assert p.status == FAILED and p.value is None and reason in p.error


def test_hard_negative_word_limit_and_none():
    long = " ".join(f"w{k}" for k in range(30))
    p = validate("hard_negative", f'{{"hard_negative_item": "{long}", "reasoning": "r"}}')
    assert p.status == REPAIRED and len(p.value["hard_negative_item"].split()) == 20
    p = validate("hard_negative", '{"hard_negative_item": "None", "reasoning": "nothing fits"}')
    assert p.status == FAILED and "no hard negative named" in p.error


def test_extract_reports_repairs():
    assert extract_json('{"a": 1}') == ({"a": 1}, False, None)
    obj, repaired, _ = extract_json('{"a": [1, 2')
    assert obj == {"a": [1, 2]} and repaired


def test_decoding_schema_lists_fields_in_order():
    s = json_schema("hard_negative")
    assert list(s["properties"]) == ["hard_negative_item", "reasoning"] and s["additionalProperties"] is False
