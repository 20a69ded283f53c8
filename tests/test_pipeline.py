"""EarlPipeline: frame + query -> Grounding in original pixels, for SAM and SAM 2 model dirs."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from earl_ros.model.errors import EmptyQueryError, InvalidImageError
from earl_ros.model.pipeline import EarlPipeline
from earl_ros.model.prompts import NO_TARGET_ANSWER, format_response
from earl_ros.model.types import Grounding, Interaction
from earl_ros.model.vlm import RawResponse
from earl_ros.model.vlm_processing import model_frame

STAGES = {"coarse", "response", "parse", "segment", "total"}


def _image(seed=0, h=240, w=320):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return EarlPipeline.from_dir(tiny_model_dir)


class ScriptedResponse:
    """Make the response model 'say' a fixed completion while keeping the real frame mapping."""

    def __init__(self, pipe, text):
        self.pipe, self.text, self.seen = pipe, text, []

    def __enter__(self):
        self.orig = self.pipe.response.respond

        def respond(img, query, descriptor=None, **kw):
            self.seen.append((img.shape, query, None if descriptor is None else np.asarray(descriptor)))
            (ih, iw), scale = model_frame(self.pipe.response.processor, img.shape[:2])
            q, trunc = self.pipe.response.truncate_query(query)
            return RawResponse([self.text], scale, (ih, iw), img.shape[:2], q, trunc)

        self.pipe.response.respond = respond
        return self

    def __exit__(self, *exc):
        self.pipe.response.respond = self.orig


def test_from_dir_exposes_what_the_node_reports(pipe, tiny_model_dir):
    assert pipe.model_id == "earl-tiny"
    assert pipe.descriptor_dim == pipe.coarse.descriptor_dim == pipe.response.descriptor_dim
    assert pipe.mask_backend == "torch" and pipe.segmenter.kind == "sam"
    assert pipe.empty_interaction().descriptor.shape == (pipe.descriptor_dim,)


def test_describe_returns_an_interaction(pipe):
    inter = pipe.describe(_image(), stamp=3.0)
    assert isinstance(inter, Interaction) and inter.stamp == 3.0
    assert inter.descriptor.shape == (pipe.descriptor_dim,) and inter.descriptor.dtype == np.float32


def test_answer_on_a_random_model_still_returns_a_complete_grounding(pipe):
    img = _image(1)
    g = pipe.answer(img, "which hand is holding something?")
    assert isinstance(g, Grounding)
    assert g.image_size == (240, 320) and set(g.timings_ms) == STAGES
    assert g.masks.shape[1:] == (240, 320) and len(g.entities) == len(g.boxes) == len(g.masks) == len(g.scores)
    assert isinstance(g.raw_text, str) and g.parse_status
    assert g.label_map().shape == (240, 320)
    js = g.to_json()
    assert set(js) >= {"answer", "entities", "boxes", "scores", "no_target", "description", "timings_ms"}


def test_grounded_answer_has_boxes_in_original_pixels_and_full_size_masks(pipe):
    img = _image(2, 360, 500)
    (ih, iw), (sx, sy) = model_frame(pipe.response.processor, (360, 500))
    text = format_response(["the right hand", "the active kettle"], [(0, 0, iw // 2, ih // 2), (iw // 4, ih // 4, iw, ih)])
    encoder_calls = pipe.segmenter.encoder_calls
    with ScriptedResponse(pipe, text):
        g = pipe.answer(img, "what is the right hand holding?", pipe.empty_interaction())
    assert g.parse_status == "ok" and not g.no_target
    assert g.entities == ["the right hand", "the active kettle"]
    expected = np.rint(np.array([[0, 0, iw // 2, ih // 2], [iw // 4, ih // 4, iw, ih]]) * [sx, sy, sx, sy]).astype(int)
    assert np.array_equal(g.boxes, expected) and g.boxes[1].tolist()[2:] == [500, 360]
    assert g.masks.shape == (2, 360, 500) and g.masks.dtype == bool
    assert len(g.scores) == 2
    assert g.answer == "The mask of the right hand is <MSK_0>, and the mask of the active kettle is <MSK_1>."
    assert pipe.segmenter.encoder_calls == encoder_calls + 1  # one image embedding for both boxes
    assert set(np.unique(g.label_map())) <= {0, 1, 2}


def test_oversized_frames_are_downscaled_for_the_models_and_mapped_back(pipe):
    img = _image(3, 600, 900)
    old = pipe.max_image_side
    pipe.max_image_side = 300
    try:
        with ScriptedResponse(pipe, "") as s:
            (ih, iw), _ = model_frame(pipe.response.processor, (200, 300))
            s.text = format_response(["the left hand"], [(0, 0, iw, ih)])
            g = pipe.answer(img, "where is the left hand?")
    finally:
        pipe.max_image_side = old
    assert s.seen[0][0][:2] == (200, 300)  # the VLM got the downscaled frame
    assert g.boxes.tolist() == [[0, 0, 900, 600]]  # ... and the box is in original pixels
    assert g.masks.shape == (1, 600, 900) and g.image_size == (600, 900)


def test_no_target_answer(pipe):
    with ScriptedResponse(pipe, format_response([], None)):
        g = pipe.answer(_image(), "is anyone holding a knife?")
    assert g.no_target and g.entities == [] and g.answer == NO_TARGET_ANSWER
    assert g.masks.shape == (0, 240, 320) and g.parse_status == "no_target"


def test_given_interaction_is_used_and_coarse_stage_skipped(pipe):
    inter = Interaction(text="The camera wearer holds a mug.", descriptor=np.ones(pipe.descriptor_dim, np.float32))
    with ScriptedResponse(pipe, format_response([], None)) as s:
        g = pipe.answer(_image(), "what?", inter)
    assert g.description == "The camera wearer holds a mug."
    assert np.array_equal(s.seen[0][2], inter.descriptor)


def test_query_truncation_is_reported(pipe):
    g = pipe.answer(_image(), "which hand is holding the red mug " * 40, pipe.empty_interaction())
    assert g.query_truncated


@pytest.mark.parametrize("q", ["", "   ", None])
def test_empty_query_is_rejected(pipe, q):
    with pytest.raises(EmptyQueryError):
        pipe.answer(_image(), q)


@pytest.mark.parametrize("frame", [b"garbage", np.zeros((0, 4, 3), np.uint8), "/no/such/image.png"])
def test_bad_image_is_rejected(pipe, frame):
    with pytest.raises(InvalidImageError):
        pipe.answer(frame, "which hand?")
    with pytest.raises(InvalidImageError):
        pipe.describe(frame)


def test_describe_and_answer_from_two_threads(pipe):
    """The ROS node runs describe (coarse worker) and answer (query thread) concurrently."""
    errors, results = [], []

    def describer():
        try:
            for i in range(3):
                results.append(pipe.describe(_image(i)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def answerer():
        try:
            for i in range(3):
                results.append(pipe.answer(_image(i), "which hand?", pipe.empty_interaction()))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=describer), threading.Thread(target=answerer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 6


def test_sam2_model_dir(tiny_model_dir_sam2):
    p = EarlPipeline.from_dir(tiny_model_dir_sam2)
    assert p.segmenter.kind == "sam2"
    img = _image(4, 200, 280)
    (ih, iw), _ = model_frame(p.response.processor, (200, 280))
    with ScriptedResponse(p, format_response(["the right hand"], [(2, 2, iw // 2, ih - 2)])):
        g = p.answer(img, "which hand?", p.empty_interaction())
    assert g.masks.shape == (1, 200, 280) and g.entities == ["the right hand"]


def test_manifest_box_refine_reaches_the_segmenter_and_boxes_stay_the_answers(tiny_model_dir, tmp_path):
    import shutil

    import yaml

    d = shutil.copytree(tiny_model_dir, tmp_path / "m")
    mf = d / "earl.yaml"
    data = yaml.safe_load(mf.read_text())
    data["segmenter"]["box_refine"] = 2
    mf.write_text(yaml.safe_dump(data))
    p = EarlPipeline.from_dir(d)
    assert p.box_refine == 2
    seen = []
    orig = p.segmenter.segment

    def segment(img, boxes, key=None, refine=0):
        seen.append(refine)
        return orig(img, boxes, key=key, refine=refine)

    p.segmenter.segment = segment
    img = _image(5, 240, 320)
    (ih, iw), (sx, sy) = model_frame(p.response.processor, (240, 320))
    with ScriptedResponse(p, format_response(["the left hand"], [(4, 6, iw // 2, ih // 2)])):
        g = p.answer(img, "which hand?", p.empty_interaction())
    assert seen == [2]
    expected = np.rint(np.array([[4, 6, iw // 2, ih // 2]]) * [sx, sy, sx, sy]).astype(int)
    assert np.array_equal(g.boxes, expected)  # the answer's box, not the refined prompt
    assert g.masks.shape == (1, 240, 320)
