"""Streamed, cancellable answers in the model layer (earl_ros/model/streaming.py): the text arrives
token by token and ends as the answer's raw text; a cancel stops generation at the next token."""
from __future__ import annotations

from pathlib import Path

import pytest

from earl_ros.model.errors import CancelledError
from earl_ros.model.streaming import AnswerProgress

MODEL = Path(__file__).resolve().parents[1] / "models" / "earl-tiny-synth"
QUESTION = "what is in my left hand?"


@pytest.fixture(scope="module")
def pipe():
    from earl_ros.model.pipeline import EarlPipeline

    return EarlPipeline.from_dir(MODEL)


@pytest.fixture(scope="module")
def frame():
    from training.data.synth import SynthConfig, render_scene, scene_rng

    return render_scene(scene_rng(5, "default", "streaming", 0), SynthConfig())[0]


def test_the_text_grows_token_by_token_into_the_raw_answer(pipe, frame):
    stages, texts = [], []
    progress = AnswerProgress(on_stage=stages.append, on_text=lambda t, n: texts.append((t, n)))
    g = pipe.answer(frame, QUESTION, progress=progress)
    assert stages == ["describing", "answering", "segmenting"]  # no rolling description given: it describes
    assert [n for _, n in texts] == sorted({n for _, n in texts}) and len(texts) >= 5
    assert texts[-1][0].strip() == g.raw_text
    plain = pipe.answer(frame, QUESTION)
    assert plain.raw_text == g.raw_text and plain.entities == g.entities, "streaming does not change the answer"


def test_a_cancel_stops_at_the_next_token_and_the_pipeline_answers_the_next_query(pipe, frame):
    progress = AnswerProgress(on_text=lambda t, n: progress.cancel() if n == 3 else None)
    with pytest.raises(CancelledError, match="answering"):
        pipe.answer(frame, QUESTION, interaction=pipe.empty_interaction(), progress=progress)
    # transformers checks stopping criteria before it hands a token to the streamer: one more step at most
    assert progress.tokens <= 4, f"generation went on to {progress.tokens} tokens after a cancel at 3"
    assert pipe.answer(frame, QUESTION, interaction=pipe.empty_interaction()).raw_text


def test_a_query_cancelled_before_it_starts_never_runs_the_model(pipe, frame):
    stages = []
    progress = AnswerProgress(on_stage=stages.append)
    progress.cancel()
    with pytest.raises(CancelledError):
        pipe.answer(frame, QUESTION, interaction=pipe.empty_interaction(), progress=progress)
    assert stages == [] and progress.tokens == 0
