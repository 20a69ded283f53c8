"""The one output grammar: what the parser accepts, what it rejects, and that it never raises."""
from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earl_ros.model.prompts import (
    COARSE_INSTRUCTION,
    NO_TARGET_ANSWER,
    answer_sentence,
    format_response,
    name_score,
    parse_box,
    parse_response,
    response_prompt,
)

STATUSES = {"ok", "no_target", "missing_answer", "missing_bbox", "missing_both", "bad_answer", "bad_bbox"}

GOOD = (
    '<answer>["the right hand", "the active kettle"]</answer>\n'
    '<bbox>"the right hand": [10, 20, 110, 220]\n"the active kettle": [5, 6, 50, 60]</bbox>'
)


# ---- prompts ---------------------------------------------------------------------------------
def test_response_prompt_asks_for_corner_boxes_and_contains_the_query():
    p = response_prompt("  which hand is holding something?  ")
    assert p.startswith("which hand is holding something?\n")
    assert "[x1, y1, x2, y2]" in p and "width" not in p  # FIX: corners, not x,y,w,h
    assert NO_TARGET_ANSWER in p and "<bbox>none</bbox>" in p


def test_coarse_instruction_is_the_papers():
    assert COARSE_INSTRUCTION == "Please analyze the interactions of hands and objects in detail."


# ---- well-formed -----------------------------------------------------------------------------
def test_well_formed_output_parses_to_entities_and_corner_boxes():
    r = parse_response(GOOD)
    assert r.status == "ok" and r.ok
    assert r.entities == ["the right hand", "the active kettle"]
    assert [b.box for b in r.boxes] == [(10, 20, 110, 220), (5, 6, 50, 60)]
    assert r.grounded_entities() == [("the right hand", (10, 20, 110, 220)), ("the active kettle", (5, 6, 50, 60))]


def test_format_response_round_trips_through_the_parser():
    text = format_response(["the left hand", "the active mug"], [(1, 2, 3, 4), (10, 10, 20, 30)])
    r = parse_response(text)
    assert r.status == "ok"
    assert r.grounded_entities() == [("the left hand", (1, 2, 3, 4)), ("the active mug", (10, 10, 20, 30))]


def test_boxes_are_matched_to_answer_entities_by_name_not_order():
    text = ('<answer>["the right hand", "the active kettle"]</answer>\n'
            '<bbox>"active kettle": [5, 6, 50, 60]\n"right hand": [10, 20, 110, 220]</bbox>')
    pairs = dict(parse_response(text).grounded_entities())
    assert pairs == {"the right hand": (10, 20, 110, 220), "the active kettle": (5, 6, 50, 60)}


def test_tags_are_case_insensitive_and_whitespace_tolerant():
    text = '<ANSWER> ["the right hand"] </ANSWER>\n<BBox>\n  "the right hand" : [1, 2, 3, 4] ,\n</BBox>'
    r = parse_response(text)
    assert r.status == "ok" and r.grounded_entities() == [("the right hand", (1, 2, 3, 4))]


# ---- no target -------------------------------------------------------------------------------
def test_no_target_answer():
    r = parse_response(format_response([], None))
    assert r.status == "no_target" and r.ok and r.no_target and r.bbox_none
    assert r.grounded_entities() == []


def test_no_target_with_boxes_is_bad_bbox():
    r = parse_response(f"<answer>{NO_TARGET_ANSWER}</answer><bbox>\"x\": [1, 2, 3, 4]</bbox>")
    assert r.status == "bad_bbox" and r.no_target and r.grounded_entities() == []


# ---- malformed -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,status",
    [
        ("", "missing_both"),
        ("the right hand is holding a cup", "missing_both"),
        ('<answer>["the right hand"]</answer>', "missing_bbox"),
        ('<bbox>"the right hand": [1, 2, 3, 4]</bbox>', "missing_answer"),
        ('<answer>the right hand</answer><bbox>"the right hand": [1, 2, 3, 4]</bbox>', "bad_answer"),
        ('<answer>[]</answer><bbox>"a": [1, 2, 3, 4]</bbox>', "bad_answer"),
        ('<answer>[1, 2]</answer><bbox>"a": [1, 2, 3, 4]</bbox>', "bad_answer"),
        ('<answer>["a"]</answer><bbox>none</bbox>', "bad_bbox"),
        ('<answer>["a"]</answer><bbox></bbox>', "bad_bbox"),
        ('<answer>["a"]</answer><bbox>"a": [3, 2, 1, 4]</bbox>', "bad_bbox"),  # x1 > x2
        ('<answer>["a"]</answer><bbox>"a": [1, 2, 3]</bbox>', "bad_bbox"),
        ('<answer>["a"]</answer><bbox>"a": [-1, 2, 3, 4]</bbox>', "bad_bbox"),
        ('<answer>["a"]</answer><bbox>"a": [1.5, 2, 3, 4]</bbox>', "bad_bbox"),
        ('<answer>["a"]</answer><bbox>"a": [x, 2, 3, 4]</bbox>', "bad_bbox"),
        ('<answer>["a"]<bbox>"a": [1, 2, 3, 4]</bbox>', "missing_answer"),  # unclosed answer
    ],
)
def test_malformed_outputs_get_a_status_not_an_exception(text, status):
    assert parse_response(text).status == status


def test_float_boxes_only_with_allow_float():
    text = '<answer>["a"]</answer><bbox>"a": [1.4, 2.6, 3.0, 4]</bbox>'
    assert parse_response(text).status == "bad_bbox"
    r = parse_response(text, allow_float=True)
    assert r.status == "ok" and r.boxes[0].box == (1, 3, 3, 4)


def test_one_bad_line_among_good_ones_is_reported_but_good_boxes_kept():
    text = '<answer>["a", "b"]</answer><bbox>"a": [1, 2, 3, 4]\n"b": [9, 9, 1, 1]</bbox>'
    r = parse_response(text)
    assert r.status == "bad_bbox" and r.invalid_box_lines == 1
    assert r.grounded_entities() == [("a", (1, 2, 3, 4))]


def test_parse_box():
    assert parse_box("1, 2, 3, 4") == (1, 2, 3, 4)
    assert parse_box("1,2,3") is None
    assert parse_box("0, 0, 0, 5") is None  # zero width


# ---- adversarial -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        None,
        12345,
        b"<answer>bytes</answer>",
        "<answer>" * 10_000,
        "[" * 5000 + "]" * 5000,
        "<answer>" + "[" * 2000 + "]" * 2000 + "</answer><bbox>none</bbox>",
        "<answer>['a', __import__('os').system('true')]</answer><bbox>none</bbox>",
        "<answer>[\"a\"]</answer><bbox>" + '"a": [1, 2, 3, 4]\n' * 5000 + "</bbox>",
        "<answer>[\"\\ud800\"]</answer><bbox>\"\\ud800\": [1, 2, 3, 4]</bbox>",
        "<answer>[\"a\"]</answer><bbox>\"a\": [99999999999999999999999, 2, 999999999999999999999999, 4]</bbox>",
        "\x00<answer>\x00</answer>\x00<bbox>\x00</bbox>",
        "<answer>{\"a\": 1}</answer><bbox>none</bbox>",
        "<answer>[\"a\"]</answer><bbox>\"a\": [1, 2, 3, 4]</bbox>" * 1000,
    ],
)
def test_adversarial_inputs_never_raise(text):
    r = parse_response(text)
    assert r.status in STATUSES


def test_python_literals_are_never_evaluated_as_code():
    r = parse_response("<answer>[__import__('os').getcwd()]</answer><bbox>none</bbox>")
    assert r.entities is None and r.status == "bad_answer"


# ---- properties ------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_parse_response_never_raises_on_arbitrary_text(text):
    r = parse_response(text)
    assert r.status in STATUSES
    for nb in r.boxes:
        x1, y1, x2, y2 = nb.box
        assert 0 <= x1 < x2 and 0 <= y1 < y2


_ALPHABET = string.printable + "<>/[]\"':,éü漢"


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(GOOD)), st.integers(0, 8), st.text(alphabet=_ALPHABET, max_size=6)),
             max_size=6)
)
def test_parse_response_never_raises_on_mutated_valid_outputs(edits):
    text = GOOD
    for pos, n_del, ins in edits:
        pos = min(pos, len(text))
        text = text[:pos] + ins + text[pos + n_del:]
    r = parse_response(text)
    assert r.status in STATUSES
    for ent, box in r.grounded_entities():
        assert isinstance(ent, str) and len(box) == 4


_entity = st.text(alphabet=string.ascii_lowercase + " ", min_size=1, max_size=20).filter(lambda s: s.strip())


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.tuples(_entity, st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 500),
                          st.integers(1, 500)), min_size=1, max_size=4, unique_by=lambda t: t[0].strip()))
def test_format_then_parse_recovers_entities_and_boxes(items):
    names = [n.strip() for n, *_ in items]
    boxes = [(x, y, x + w, y + h) for _, x, y, w, h in items]
    r = parse_response(format_response(names, boxes))
    assert r.status == "ok"
    assert r.entities == names
    assert [b.box for b in r.boxes] == boxes


# ---- helpers ---------------------------------------------------------------------------------
def test_answer_sentence_uses_the_benchmark_template():
    assert answer_sentence(["the right hand", "the active laptop"]) == (
        "The mask of the right hand is <MSK_0>, and the mask of the active laptop is <MSK_1>."
    )
    assert answer_sentence([]) == NO_TARGET_ANSWER


def test_name_score():
    assert name_score("The Right Hand", "right hand") == 1.0
    assert name_score("", "x") == 0.0
    assert 0.0 < name_score("kettle", "kettel") < 1.0
