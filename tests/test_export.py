"""ONNX export of the SAM / SAM 2 prompt encoder + mask decoder, onnxruntime and TensorRT backends.

Specification:
- the exported graph takes image embeddings (+ SAM 2 high-res features) and N boxes in model-input
  pixels (N dynamic) and returns low-resolution logits [N,h,w] + IoU scores [N]; no upscaling inside;
- onnxruntime matches PyTorch: max |logit diff| <= 1e-4 and binarized full-size mask IoU 1.0
  (pixels whose PyTorch logit lies within 1e-4 of the threshold are reported, not gated);
- the onnxruntime backend of Segmenter gives the torch backend's masks;
- tensorrt is never a silent fallback; its engine cache key covers version, GPU, ONNX hash,
  precision and shape profile.
"""
import numpy as np
import pytest

from earl_ros.model.errors import BackendUnavailableError, ModelDirError
from earl_ros.model.segmenter import Segmenter
from earl_ros.model.tiny_sam import build_tiny_sam, build_tiny_sam2

KINDS = ("sam", "sam2")
ort = pytest.importorskip("onnxruntime")


def _has_tensorrt():
    from earl_ros.model.tensorrt_runner import tensorrt_available

    return tensorrt_available()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{kind: (segmenter dir, export dir, parity report)} — one export per kind for the module."""
    from earl_ros.export.parity import export_and_check

    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind, build in (("sam", build_tiny_sam), ("sam2", build_tiny_sam2)):
        d = build(root / kind, seed=0)
        report = export_and_check(d, root / f"{kind}-onnx", box_counts=(1, 5))
        out[kind] = (d, root / f"{kind}-onnx", report)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_exported_graph_has_dynamic_box_count_and_low_res_outputs(exported, kind):
    d, out, _ = exported[kind]
    sess = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    expected = {"image_embeddings", "boxes"} | ({"high_res_feats_0", "high_res_feats_1"} if kind == "sam2" else set())
    assert set(inputs) == expected
    assert isinstance(inputs["boxes"][0], str) and inputs["boxes"][1] == 4  # N is symbolic
    assert [o.name for o in sess.get_outputs()] == ["low_res_masks", "iou_scores"]
    h = inputs["image_embeddings"][2]
    from earl_ros.export.onnx_export import random_inputs
    from transformers import AutoModel

    model = AutoModel.from_pretrained(d)
    for n in (1, 5):
        masks, iou = sess.run(None, random_inputs(model, kind, n, seed=n))
        assert masks.shape == (n, 4 * h, 4 * h)  # low resolution: upscaling is not in the graph
        assert iou.shape == (n,)


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_parity_with_torch(exported, kind):
    _, out, report = exported[kind]
    res = report["backends"]["onnxruntime"]
    assert report["pass"] and res["pass"]
    assert res["max_abs_logit_diff"] <= 1e-4
    assert res["mask_iou_min_decided"] == 1.0
    # every pixel that binarizes differently sits within the logit tolerance of the threshold
    assert res["flipped_max_abs_ref_logit"] <= 1e-4
    assert res["mask_iou_min"] > 0.9999
    assert [p["num_boxes"] for p in res["per_box_count"]] == [1, 5]
    assert res["providers"] == ["CPUExecutionProvider"]
    assert (out / "parity.json").is_file()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 5])
def test_dynamic_box_count_logits_match_torch(exported, kind, n):
    from earl_ros.model.ort_runner import OrtDecoderBackend
    from earl_ros.export.parity import random_boxes, make_test_image

    d, out, _ = exported[kind]
    seg = Segmenter.from_pretrained(d)
    img = make_test_image(240, 320, seed=n)
    seg.set_image(img)
    be = OrtDecoderBackend(out / "decoder.onnx", kind)
    bm = seg.boxes_to_model(random_boxes(n, img.shape[:2], seed=n), img.shape[:2])
    ref_l, ref_s = seg.backend.run(seg.embeddings(), bm)
    got_l, got_s = be.run(be.prepare(seg.embeddings()), bm)
    assert got_l.shape == ref_l.shape == (n, 64, 64)
    assert float((got_l - ref_l).abs().max()) <= 1e-4
    assert float((got_s - ref_s).abs().max()) <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_backend_gives_the_torch_masks(exported, kind):
    from earl_ros.export.parity import random_boxes, make_test_image

    d, out, _ = exported[kind]
    torch_seg = Segmenter.from_pretrained(d, backend="torch")
    ort_seg = Segmenter.from_pretrained(d, backend="onnxruntime", decoder_path=out / "decoder.onnx",
                                        providers=["cpu"])
    assert ort_seg.backend_name == "onnxruntime" and ort_seg.backend.providers == ["CPUExecutionProvider"]
    img = make_test_image(200, 260, seed=3)
    boxes = random_boxes(4, img.shape[:2], seed=3)
    tm, ts = torch_seg.segment(img, boxes, key=1)
    om, os_ = ort_seg.segment(img, boxes, key=1)
    assert om.shape == tm.shape == (4, 200, 260)
    logits = torch_seg.upscale_logits(torch_seg.predict_logits(boxes)[0], img.shape[:2]).numpy()
    differ = om != tm
    assert np.all(np.abs(logits[differ]) <= 1e-4)  # only threshold-ambiguous pixels may differ
    assert differ.mean() < 1e-5
    assert np.allclose(os_, ts, atol=1e-4)
    assert np.array_equal(ort_seg.segment(img, [], key=1)[0], np.zeros((0, 200, 260), bool))
    # the decoder may also be given as the directory earl-export wrote
    assert Segmenter.from_pretrained(d, backend="onnxruntime", decoder_path=out).backend_name == "onnxruntime"


def test_onnxruntime_backend_without_an_exported_decoder_names_the_file(exported):
    d, _, _ = exported["sam"]
    with pytest.raises(ModelDirError, match="decoder.onnx"):
        Segmenter.from_pretrained(d, backend="onnxruntime")


def test_decoder_of_the_other_kind_is_refused(exported):
    d_sam2, _, _ = exported["sam2"]
    _, out_sam, _ = exported["sam"]
    with pytest.raises(ModelDirError, match="re-export"):
        Segmenter.from_pretrained(d_sam2, backend="onnxruntime", decoder_path=out_sam / "decoder.onnx")


def test_unavailable_onnxruntime_provider_is_an_error_not_a_fallback(exported):
    from earl_ros.model.ort_runner import OrtDecoderRunner

    _, out, _ = exported["sam"]
    missing = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p not in ort.get_available_providers()]
    if not missing:
        pytest.skip("this onnxruntime offers CUDA and TensorRT providers")
    with pytest.raises(BackendUnavailableError, match=missing[0]):
        OrtDecoderRunner(out / "decoder.onnx", providers=[missing[0]])


def test_provider_aliases():
    from earl_ros.model.ort_runner import normalize_providers

    assert normalize_providers("cuda, cpu") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert normalize_providers(["trt", "CPUExecutionProvider"]) == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert normalize_providers(None) == []


@pytest.mark.skipif(_has_tensorrt(), reason="tensorrt is installed here; the missing-tensorrt path cannot be exercised")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(exported):
    d, out, _ = exported["sam"]
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        Segmenter.from_pretrained(d, backend="tensorrt", decoder_path=out / "decoder.onnx")
    with pytest.raises(BackendUnavailableError):  # checked before the decoder file is even looked for
        Segmenter.from_pretrained(d, backend="tensorrt")


def test_engine_cache_key_covers_every_input():
    from earl_ros.model.tensorrt_runner import box_profile, engine_cache_key

    base = dict(onnx_sha256="a" * 64, precision="fp32", profile=box_profile(1, 4, 16), trt_version="10.3.0",
                gpu_name="NVIDIA H100 sm_90")
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)  # stable
    variants = [
        dict(precision="fp16"),
        dict(onnx_sha256="b" * 64),
        dict(profile=box_profile(1, 4, 32)),
        dict(trt_version="10.4.0"),
        dict(gpu_name="NVIDIA L4 sm_89"),
    ]
    keys = {engine_cache_key(**{**base, **v}) for v in variants}
    assert key not in keys and len(keys) == len(variants)


def test_engine_cache_key_follows_the_onnx_file_hash(exported):
    from earl_ros.model.decoder_io import file_sha256
    from earl_ros.model.tensorrt_runner import box_profile, engine_cache_key

    keys = {engine_cache_key(file_sha256(exported[k][1] / "decoder.onnx"), "fp32", box_profile(), "10", "gpu")
            for k in KINDS}
    assert len(keys) == 2


@pytest.mark.skipif(not _has_tensorrt(), reason="tensorrt is not importable on this machine (CI never installs it)")
def test_tensorrt_engine_builds_caches_and_matches_torch(exported, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("tensorrt is importable but there is no CUDA device")
    from earl_ros.export.parity import compare_backends, make_test_image
    from earl_ros.model.tensorrt_runner import TrtDecoderBackend

    d, out, _ = exported["sam2"]
    seg = Segmenter.from_pretrained(d)
    be = TrtDecoderBackend(out / "decoder.onnx", "sam2", cache_dir=tmp_path, max_boxes=8)
    engine = be.runner.engine_path
    assert engine.is_file() and engine.with_suffix(".json").is_file()
    mtime = engine.stat().st_mtime_ns
    again = TrtDecoderBackend(out / "decoder.onnx", "sam2", cache_dir=tmp_path, max_boxes=8)
    assert again.runner.engine_path == engine and engine.stat().st_mtime_ns == mtime  # cache hit
    res = compare_backends(seg, be, make_test_image(), box_counts=(1, 5, 11), decision_margin=1e-3)  # 11 > max: split
    assert res["max_abs_logit_diff"] <= 1e-3
    assert res["mask_iou_min_decided"] == 1.0
    fp16 = TrtDecoderBackend(out / "decoder.onnx", "sam2", fp16=True, cache_dir=tmp_path, max_boxes=8)
    assert fp16.runner.key != be.runner.key
