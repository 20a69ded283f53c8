"""`sft-response --split-digits`: numbers become one token per digit in the response tokenizer.

Specification:
- every integer is written one digit per token, the text round-trips through encode/decode, and the
  vocabulary does not change (only the pre-tokenizer does); applying it twice changes nothing;
- the trained model dir carries the split tokenizer, so inference reads numbers the way training did,
  and its max_new_tokens covers the longest training answer (per-digit boxes make answers longer).
"""
import re

import pytest

pytestmark = pytest.mark.timeout(900)

BOX_TEXT = '<bbox>"the left hand": [31, 89, 182, 196]\n"the active mug": [0, 7, 250, 118]</bbox>'


def _digit_runs(tokens):
    return [t.lstrip("Ġ") for t in tokens if re.fullmatch(r"Ġ?\d+", t)]


def test_numbers_become_single_digit_tokens_and_round_trip():
    from earl_ros.model.tiny import build_tokenizer
    from training.sft import split_digit_tokens

    tok = build_tokenizer(extra_texts=[BOX_TEXT] * 50, vocab_size=600)
    before = tok.tokenize(BOX_TEXT)
    assert any(len(t) > 1 for t in _digit_runs(before))  # the BPE learnt multi-digit number tokens
    vocab = dict(tok.get_vocab())
    assert split_digit_tokens(tok) is True
    after = tok.tokenize(BOX_TEXT)
    assert all(len(t) == 1 for t in _digit_runs(after))
    assert "".join(_digit_runs(after)) == "".join(re.findall(r"\d", BOX_TEXT))
    assert tok.decode(tok(BOX_TEXT)["input_ids"]) == BOX_TEXT
    assert tok.get_vocab() == vocab
    assert split_digit_tokens(tok) is False and tok.tokenize(BOX_TEXT) == after


def test_sft_response_saves_the_split_tokenizer_with_the_model(chain, tmp_path, cli):
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.pipeline import EarlPipeline
    from training.common import derive_model_dir

    start = derive_model_dir(chain["m1"], tmp_path / "short", limits={"max_new_tokens": 16})
    out = tmp_path / "digits"
    cli("sft-response", "--model", start, "--data", chain["data"], "--out", out, "--descriptors", chain["desc"],
        "--epochs", 1, "--batch-size", 8, "--lr", "3e-3", "--split-digits", "--quiet")
    m = Manifest.load(out)
    longest = m.raw["training"]["sft_response"]["longest_target_tokens"]
    assert longest > 16  # per-digit boxes made the answers longer than the input model's limit ...
    assert m.limits["max_new_tokens"] >= longest and m.limits["max_new_tokens"] % 16 == 0  # ... so it grew
    pipe = EarlPipeline.from_dir(out)
    assert all(len(t) == 1 for t in _digit_runs(pipe.response.tokenizer.tokenize(BOX_TEXT)))
    coarse_runs = _digit_runs(pipe.coarse.tokenizer.tokenize(BOX_TEXT))
    assert any(len(t) > 1 for t in coarse_runs)  # the coarse model keeps its own tokenizer
