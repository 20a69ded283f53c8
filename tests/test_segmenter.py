"""Segmenter (boxes -> masks) with tiny random SAM and SAM 2 checkpoints, torch backend.

Specification:
- a mask per box, each the size of the original image; N = 0 boxes is valid;
- the image encoder runs once per frame key, never per box or per query;
- box coordinates are mapped original px -> model-input px exactly like transformers' processors,
  and back; preprocessing and mask upscaling match transformers' SAM processor;
- box refinement re-prompts with each mask's own bounding box, stops when the boxes stop changing,
  and leaves the masks of refine=0 untouched;
- bad inputs fail with typed errors.
"""
import threading

import numpy as np
import pytest

from earl_ros.model.errors import BackendUnavailableError, InvalidImageError, ModelDirError, NoFrameError
from earl_ros.model.segmenter import Segmenter, detect_kind, mask_boxes
from earl_ros.model.tiny_sam import build_tiny_sam, build_tiny_sam2

KINDS = ("sam", "sam2")


@pytest.fixture(scope="module")
def sam_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-sam")
    return {"sam": build_tiny_sam(root / "sam", seed=0), "sam2": build_tiny_sam2(root / "sam2", seed=0)}


@pytest.fixture(scope="module")
def segmenters(sam_dirs):
    return {k: Segmenter.from_pretrained(p) for k, p in sam_dirs.items()}


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


BOXES = np.array([[10, 20, 150, 170], [100, 30, 290, 100], [0, 0, 299, 179]], dtype=np.float32)


# ---- tiny checkpoints ------------------------------------------------------------------------
def test_tiny_builders_are_deterministic_for_a_seed(tmp_path):
    for build in (build_tiny_sam, build_tiny_sam2):
        a = build(tmp_path / f"{build.__name__}-a", seed=3)
        b = build(tmp_path / f"{build.__name__}-b", seed=3)
        c = build(tmp_path / f"{build.__name__}-c", seed=4)
        wa, wb, wc = ((d / "model.safetensors").read_bytes() for d in (a, b, c))
        assert wa == wb
        assert wa != wc


def test_tiny_dirs_load_with_transformers_offline(sam_dirs):
    from transformers import Sam2Model, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    sam = SamModel.from_pretrained(sam_dirs["sam"])
    assert sam.config.vision_config.image_size == 256
    assert sam.config.vision_config.output_channels == sam.config.mask_decoder_config.hidden_size
    assert isinstance(SamProcessor.from_pretrained(sam_dirs["sam"]).image_processor, SamImageProcessorPil)
    sam2 = Sam2Model.from_pretrained(sam_dirs["sam2"])
    assert sam2.config.vision_config.backbone_feature_sizes == [[64, 64], [32, 32], [16, 16]]
    assert len(sam2.config.vision_config.backbone_config.blocks_per_stage) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_kind_is_detected_from_the_config(sam_dirs, segmenters, kind):
    assert detect_kind(sam_dirs[kind]) == kind
    assert segmenters[kind].kind == kind


# ---- masks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hw", [(180, 300), (97, 131), (256, 256), (400, 90)])
def test_one_mask_per_box_with_the_image_size(segmenters, kind, hw):
    seg = segmenters[kind]
    img = _image(*hw)
    boxes = np.array([[5, 5, hw[1] * 0.6, hw[0] * 0.7], [hw[1] * 0.2, hw[0] * 0.3, hw[1] - 1, hw[0] - 1]], np.float32)
    masks, scores = seg.segment(img, boxes)
    assert masks.shape == (2,) + hw and masks.dtype == bool
    assert scores.shape == (2,) and scores.dtype == np.float32


@pytest.mark.parametrize("kind", KINDS)
def test_zero_boxes_give_zero_masks(segmenters, kind):
    img = _image(180, 300)
    for empty in (np.zeros((0, 4), np.float32), []):
        masks, scores = segmenters[kind].segment(img, empty)
        assert masks.shape == (0, 180, 300) and masks.dtype == bool
        assert scores.shape == (0,)


@pytest.mark.parametrize("kind", KINDS)
def test_each_box_is_decoded_independently(segmenters, kind):
    """Masks for a batch of boxes equal the masks for each box alone (batching is not a prompt)."""
    seg = segmenters[kind]
    img = _image(180, 300, seed=1)
    batch, s_batch = seg.segment(img, BOXES, key="k")
    for i, box in enumerate(BOXES):
        one, s_one = seg.segment(img, box[None], key="k")
        assert (one[0] != batch[i]).mean() < 1e-4
        assert abs(float(s_one[0]) - float(s_batch[i])) < 1e-4


# ---- box refinement --------------------------------------------------------------------------
def test_mask_boxes_are_tight_and_empty_masks_keep_their_box():
    masks = np.zeros((2, 50, 60), bool)
    masks[0, 10:21, 5:31] = True  # rows 10..20, cols 5..30
    fallback = np.array([[1, 2, 3, 4], [7, 8, 9, 10]], np.float32)
    np.testing.assert_array_equal(mask_boxes(masks, fallback), [[5, 10, 31, 21], [7, 8, 9, 10]])


class _RecordingBackend:
    """Wraps a backend and keeps the model-frame boxes of every decoder call."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def prepare(self, emb):
        return self.inner.prepare(emb)

    def run(self, prepared, boxes_model):
        self.calls.append(np.array(boxes_model))
        return self.inner.run(prepared, boxes_model)


@pytest.mark.parametrize("kind", KINDS)
def test_refinement_prompts_again_with_the_masks_boxes(sam_dirs, kind):
    seg = Segmenter.from_pretrained(sam_dirs[kind])
    seg.backend = rec = _RecordingBackend(seg.backend)
    img = _image(180, 300, seed=2)
    plain, plain_scores = seg.segment(img, BOXES, key="r")
    assert len(rec.calls) == 1
    rec.calls.clear()
    refined, _ = seg.segment(img, BOXES, key="r", refine=1)
    assert len(rec.calls) == 2
    np.testing.assert_allclose(rec.calls[0], seg.boxes_to_model(BOXES, (180, 300)), atol=1e-4)
    expected = seg.boxes_to_model(mask_boxes(plain, fallback=BOXES), (180, 300))
    np.testing.assert_allclose(rec.calls[1], expected, atol=1e-4)
    again, again_scores = seg.segment(img, BOXES, key="r", refine=0)  # refine=0 is the plain path
    np.testing.assert_array_equal(again, plain)
    np.testing.assert_array_equal(again_scores, plain_scores)
    assert refined.shape == plain.shape


@pytest.mark.parametrize("kind", KINDS)
def test_refinement_stops_when_the_boxes_stop_changing(sam_dirs, kind):
    seg = Segmenter.from_pretrained(sam_dirs[kind])
    seg.backend = rec = _RecordingBackend(seg.backend)
    img = _image(180, 300, seed=3)
    masks, _ = seg.segment(img, BOXES, key="s", refine=5)
    calls = len(rec.calls)
    assert 1 < calls <= 6
    if calls < 6:  # converged early: one more round would prompt with the same boxes again
        final_prompt = seg.boxes_from_model(rec.calls[-1], (180, 300))
        np.testing.assert_allclose(mask_boxes(masks, fallback=BOXES), final_prompt, atol=1e-3)


@pytest.mark.parametrize("refine", [-1, 6, 1.5, True, "2"])
def test_refinement_count_is_validated(segmenters, refine):
    with pytest.raises(ValueError, match="refine"):
        segmenters["sam"].segment(_image(60, 80), BOXES[:1] / 4, refine=refine)


# ---- one embedding per frame -------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_image_embedding_is_computed_once_per_key(sam_dirs, kind):
    seg = Segmenter.from_pretrained(sam_dirs[kind], cache_size=2)
    a, b, c = _image(120, 160, 1), _image(120, 160, 2), _image(120, 160, 3)
    seg.segment(a, BOXES[:1], key=1.0)
    seg.segment(a, BOXES, key=1.0)  # more boxes, same frame
    seg.set_image(a, key=1.0)
    seg.predict(BOXES[:2])
    assert seg.encoder_calls == 1
    seg.segment(b, BOXES, key=2.0)  # new stamp -> one more
    assert seg.encoder_calls == 2
    seg.segment(a, BOXES, key=1.0)  # still cached (LRU of 2)
    assert seg.encoder_calls == 2
    seg.segment(c, BOXES, key=3.0)  # evicts 2.0
    seg.segment(b, BOXES, key=2.0)
    assert seg.encoder_calls == 4
    # without a key the pixels are the key: identical frames share one embedding
    seg.segment(c.copy(), BOXES)
    seg.segment(c.copy(), BOXES)
    assert seg.encoder_calls == 5
    seg.segment(a, BOXES)
    assert seg.encoder_calls == 6


@pytest.mark.parametrize("kind", KINDS)
def test_cached_embedding_gives_the_same_masks(segmenters, kind):
    seg = segmenters[kind]
    img = _image(150, 200, 5)
    m1, s1 = seg.segment(img, BOXES, key="a")
    seg.segment(_image(150, 200, 6), BOXES, key="b")
    m2, s2 = seg.segment(img, BOXES, key="a")
    assert np.array_equal(m1, m2) and np.array_equal(s1, s2)


# ---- coordinates, preprocessing, upscaling ---------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hw", [(180, 300), (720, 1280), (333, 101)])
def test_box_transform_round_trip(segmenters, kind, hw):
    seg = segmenters[kind]
    boxes = np.array([[0, 0, hw[1], hw[0]], [12.5, 7.25, 40, 90], [hw[1] / 3, hw[0] / 4, hw[1] / 2, hw[0] / 2]])
    model = seg.boxes_to_model(boxes, hw)
    assert np.allclose(seg.boxes_from_model(model, hw), boxes, atol=1e-3)
    mh, mw = seg.model_input_hw(hw)
    # the full image maps to the full model input (unpadded part for SAM)
    assert np.allclose(model[0], [0, 0, mw, mh], atol=1e-3)
    if kind == "sam":
        assert max(mh, mw) == 256
    else:
        assert (mh, mw) == (256, 256)


def test_sam_preprocessing_and_boxes_match_the_transformers_processor(sam_dirs, segmenters):
    import torch
    from transformers import SamProcessor

    seg = segmenters["sam"]
    proc = SamProcessor.from_pretrained(sam_dirs["sam"])
    img = _image(180, 300, 7)
    ref = proc(images=img, input_boxes=[BOXES.tolist()], return_tensors="pt")
    px, resized = seg.preprocess_image(img)
    assert tuple(ref["reshaped_input_sizes"][0].tolist()) == resized
    assert torch.allclose(ref["pixel_values"], px, atol=1e-5)
    assert np.allclose(ref["input_boxes"][0].numpy(), seg.boxes_to_model(BOXES, (180, 300)), atol=1e-4)


def test_sam_masks_match_model_forward_plus_processor_post_processing(sam_dirs, segmenters):
    import torch
    from transformers import SamProcessor

    seg = segmenters["sam"]
    proc = SamProcessor.from_pretrained(sam_dirs["sam"])
    img = _image(180, 300, 8)
    masks, scores = seg.segment(img, BOXES)
    inp = proc(images=img, input_boxes=[BOXES.tolist()], return_tensors="pt")
    with torch.no_grad():
        out = seg.model(pixel_values=inp["pixel_values"], input_boxes=inp["input_boxes"], multimask_output=False)
    ref = proc.post_process_masks(out.pred_masks, inp["original_sizes"], inp["reshaped_input_sizes"])[0][:, 0]
    assert np.array_equal(ref.numpy(), masks)
    assert np.allclose(out.iou_scores[0, :, 0].numpy(), scores, atol=1e-5)


def test_sam2_logits_match_model_forward(segmenters):
    import torch

    seg = segmenters["sam2"]
    img = _image(180, 300, 9)
    seg.set_image(img, key="f")
    logits, iou = seg.predict_logits(BOXES)
    e = seg.embeddings()
    with torch.no_grad():
        out = seg.model(
            image_embeddings=[e["high_res_feats_0"], e["high_res_feats_1"], e["image_embeddings"]],
            input_boxes=torch.from_numpy(seg.boxes_to_model(BOXES, (180, 300)))[None],
            multimask_output=False,
        )
    assert torch.allclose(out.pred_masks[0, :, 0], logits, atol=1e-5)
    assert torch.allclose(out.iou_scores[0, :, 0], iou, atol=1e-5)
    full = seg.upscale_logits(logits, (180, 300))
    ref = torch.nn.functional.interpolate(out.pred_masks[0], (180, 300), mode="bilinear", align_corners=False)
    assert torch.allclose(full, ref[:, 0], atol=1e-5)


# ---- errors and threads ----------------------------------------------------------------------
def test_missing_or_broken_directories_raise_model_dir_error(tmp_path, sam_dirs):
    with pytest.raises(ModelDirError):
        Segmenter.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="config.json"):
        Segmenter.from_pretrained(tmp_path / "empty")
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "config.json").write_text((sam_dirs["sam"] / "config.json").read_text())
    with pytest.raises(ModelDirError, match="weights"):
        Segmenter.from_pretrained(noweights)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelDirError, match="not a SAM"):
        Segmenter.from_pretrained(other)


def test_unknown_backend_is_refused(sam_dirs):
    with pytest.raises(BackendUnavailableError):
        Segmenter.from_pretrained(sam_dirs["sam"], backend="openvino")


def test_bad_inputs_raise_typed_errors(sam_dirs):
    seg = Segmenter.from_pretrained(sam_dirs["sam"])
    with pytest.raises(NoFrameError):
        seg.predict(BOXES)
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                "not an image"):
        with pytest.raises(InvalidImageError):
            seg.set_image(bad)
    seg.set_image(_image(50, 60))
    with pytest.raises(ValueError):
        seg.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        seg.predict(np.array([[0, 0, np.nan, 4]]))


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_segment_calls_equal_sequential_ones(segmenters, kind):
    seg = segmenters[kind]
    frames = [(_image(100 + 10 * i, 140, 20 + i), f"t{i}") for i in range(4)]
    expected = [seg.segment(img, BOXES[:2] * 0.4, key=key) for img, key in frames]
    results = [None] * len(frames)

    def work(i):
        for _ in range(3):
            results[i] = seg.segment(frames[i][0], BOXES[:2] * 0.4, key=frames[i][1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (m, s), (em, es) in zip(results, expected):
        assert np.array_equal(m, em) and np.array_equal(s, es)
