"""Coordinate decoding (earl_ros/model/coordinates.py): greedy answers may read each box coordinate
as the value the model's distribution expects instead of its single most likely number token.

Specified on the committed model's real tokenizer (one token per whole number, with and without the
leading-space marker) and on hand-made next-token scores whose mode, mean and median differ.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "earl-tiny-synth"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL / "response")


def _scores(tokenizer, mass: dict[str, float]) -> torch.Tensor:
    """Next-token logits [1, V] whose softmax puts `mass` on the given tokens (rest ~0)."""
    s = torch.full((1, len(tokenizer)), -30.0)
    for tok, p in mass.items():
        s[0, tokenizer.convert_tokens_to_ids(tok)] = float(torch.tensor(p).log())
    return s


def _chosen(tokenizer, scores: torch.Tensor) -> str:
    return tokenizer.convert_ids_to_tokens(int(scores.argmax(-1)[0]))


def test_number_tokens_are_grouped_by_spelling_and_sorted_by_value(tokenizer):
    from earl_ros.model.coordinates import number_token_groups

    groups = number_token_groups(tokenizer)
    assert set(groups) == {"", " "}, "bare numbers ('[32') and space-led ones (' 101') are separate spellings"
    ids, values = groups[" "]
    assert torch.all(values[1:] > values[:-1])
    assert tokenizer.convert_ids_to_tokens(int(ids[values.tolist().index(167.0)])) == "Ġ167"


# a template mode at 2 (40%) against mass spread around 30..34 (60%): greedy says 2, the mean 20,
# the median 30 (" 0" is no token of the shipped vocabulary: a box's first number follows "[")
BIMODAL = {"Ġ2": 0.40, "Ġ30": 0.12, "Ġ31": 0.12, "Ġ32": 0.12, "Ġ33": 0.12, "Ġ34": 0.12}


@pytest.mark.parametrize("mode, expected", [("mean", "Ġ20"), ("median", "Ġ30")])
def test_a_number_step_decodes_the_expected_value_not_the_mode(tokenizer, mode, expected):
    from earl_ros.model.coordinates import NumberTokenDecoding

    scores = _scores(tokenizer, BIMODAL)
    assert _chosen(tokenizer, scores) == "Ġ2"
    out = NumberTokenDecoding(tokenizer, mode)(torch.zeros((1, 3), dtype=torch.long), scores.clone())
    assert _chosen(tokenizer, out) == expected
    assert torch.isinf(out).sum() == out.numel() - 1, "exactly one token stays possible"


def test_the_choice_keeps_the_argmax_spelling(tokenizer):
    """After '[' the model writes a bare number; space-led number mass must not pull it into ' 30'."""
    from earl_ros.model.coordinates import NumberTokenDecoding

    scores = _scores(tokenizer, {"10": 0.5, "20": 0.3, "Ġ90": 0.2})
    out = NumberTokenDecoding(tokenizer, "mean")(torch.zeros((1, 3), dtype=torch.long), scores)
    assert _chosen(tokenizer, out) == "14"  # (10 * 0.5 + 20 * 0.3) / 0.8 = 13.75 among bare numbers


def test_steps_whose_best_token_is_not_a_number_are_untouched(tokenizer):
    from earl_ros.model.coordinates import NumberTokenDecoding

    scores = _scores(tokenizer, {"Ġhand": 0.6, "Ġ30": 0.4})
    before = scores.clone()
    out = NumberTokenDecoding(tokenizer, "median")(torch.zeros((1, 3), dtype=torch.long), scores)
    assert torch.equal(out, before)


def test_rows_of_a_batch_are_decided_independently(tokenizer):
    from earl_ros.model.coordinates import NumberTokenDecoding

    scores = torch.cat([_scores(tokenizer, BIMODAL), _scores(tokenizer, {"Ġleft": 0.9, "Ġ5": 0.1})])
    out = NumberTokenDecoding(tokenizer, "median")(torch.zeros((2, 3), dtype=torch.long), scores)
    assert [tokenizer.convert_ids_to_tokens(int(i)) for i in out.argmax(-1)] == ["Ġ30", "Ġleft"]


def test_a_digit_by_digit_tokenizer_is_refused_with_a_clear_error(tokenizer):
    from earl_ros.model.coordinates import CoordinateDecodingError, NumberTokenDecoding
    from training.sft import split_digit_tokens

    from transformers import AutoTokenizer

    digits = AutoTokenizer.from_pretrained(MODEL / "response")
    split_digit_tokens(digits)
    with pytest.raises(CoordinateDecodingError, match="one token per whole number"):
        NumberTokenDecoding(digits, "mean")
    NumberTokenDecoding(tokenizer, "mean")  # the unsplit tokenizer is fine


def test_the_manifest_names_the_decoding_and_rejects_unknown_ones(tmp_path):
    import shutil

    import yaml

    from earl_ros.model.errors import ModelDirError
    from earl_ros.model.manifest import Manifest

    d = tmp_path / "m"
    shutil.copytree(MODEL, d)
    raw = yaml.safe_load((d / "earl.yaml").read_text())
    for mode in ("greedy", "mean", "median"):
        raw["response"]["coordinates"] = mode
        (d / "earl.yaml").write_text(yaml.safe_dump(raw))
        assert Manifest.load(d).response.coordinates == mode
    raw["response"].pop("coordinates")
    (d / "earl.yaml").write_text(yaml.safe_dump(raw))
    assert Manifest.load(d).response.coordinates == "greedy", "older model dirs keep greedy decoding"
    raw["response"]["coordinates"] = "mode"
    (d / "earl.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelDirError, match="response.coordinates"):
        Manifest.load(d)


def test_greedy_answers_use_the_decoding_and_sampling_does_not(monkeypatch):
    """The processor runs on every greedy step of a real generate call and never while sampling
    (GRPO explores the model's own distribution)."""
    from earl_ros.model.coordinates import NumberTokenDecoding
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.prompts import parse_response
    from earl_ros.model.vlm import CoarseModel, ResponseModel
    from training.data.synth import SynthConfig, scene_rng, render_scene

    calls = []
    real_call = NumberTokenDecoding.__call__

    def counting(self, input_ids, scores):
        calls.append(scores.shape[0])
        return real_call(self, input_ids, scores)

    monkeypatch.setattr(NumberTokenDecoding, "__call__", counting)
    m = Manifest.load(MODEL)
    rm = ResponseModel.from_pretrained(m.response.path, m.response.afs, afs_alpha=m.response.afs_alpha,
                                       coordinates="median")
    # a scene the model was made for, with its own stage-1 descriptor (the model leans on it)
    image = render_scene(scene_rng(4242, "default", "coordinates", 0), SynthConfig())[0]
    coarse = CoarseModel.from_pretrained(m.coarse.path, pooling=m.coarse.pooling)
    descriptor = coarse.describe(image).descriptor
    raw = rm.respond(image, "Show me the left hand of the camera wearer.", descriptor)
    assert calls, "greedy decoding went through the coordinate processor"
    assert parse_response(raw.texts[0]).ok
    calls.clear()
    rm.respond(image, "Show me the left hand of the camera wearer.", descriptor, do_sample=True, max_new_tokens=8)
    assert not calls
    with pytest.raises(ValueError, match="coordinates must be one of"):
        rm.coordinates = "mode"
