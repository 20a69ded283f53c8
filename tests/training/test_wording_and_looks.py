"""Issue 27 items 1-2: questions in many wordings with one family kept out of training, and images in
many looks with two looks kept out of the random style. Held-out splits only measure something if
nothing of them leaks into what the model is trained on: these tests are that guarantee."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.data.irgbench import IRGBench
from training.data.synth import _GLOVE_COLOURS, SKIN_TONES, SynthConfig, entries_for, generate, render_scene, scene_rng
from training.data.synth_looks import DARK_GAIN_MAX, FRAME_SIZES, draw_look, is_heldout_look, is_skin
from training.data.wording import HELDOUT_MARKERS, TEMPLATES, Wording

KINDS = tuple(TEMPLATES)


def _has_marker(question: str) -> bool:
    q = question.lower()
    return any(m in q for m in HELDOUT_MARKERS)


def _questions(root, split):
    for f in sorted((root / "dataset_split" / split).glob("*.json")):
        for entry in json.loads(f.read_text()):
            for q in entry["questions"]:
                yield q["query"]


@pytest.fixture(scope="module")
def worded(tmp_path_factory):
    """A training split in the grammar and a held-out-wording split, both in random looks."""
    root = tmp_path_factory.mktemp("worded")
    generate(root, {"train": 60}, seed=3, cfg=SynthConfig(style="random", wording="grammar"), progress=False)
    generate(root, {"test_wording": 30}, seed=4, cfg=SynthConfig(style="random", wording="heldout"), progress=False)
    return root


def test_no_held_out_wording_can_appear_in_training_data(worded):
    train = list(_questions(worded, "train"))
    assert len(train) > 200
    assert not [q for q in train if _has_marker(q)]
    # the grammar itself, far more draws than a split: not one held-out frame or verb
    rng = np.random.default_rng(0)
    grammar = Wording("grammar")
    drawn = [grammar.question(kind, rng, side="left", cat="mug") for kind in KINDS for _ in range(1500)]
    assert not [q for q in drawn if _has_marker(q)]


def test_every_held_out_question_is_worded_in_the_held_out_family(worded):
    held = list(_questions(worded, "test_wording"))
    assert held and all(_has_marker(q) for q in held)


def test_wording_does_not_change_what_is_asked_for(tmp_path):
    """Same scenes, other words: the targets of every entry are the same."""
    for wording in ("templates", "grammar", "heldout"):
        generate(tmp_path / wording, {"s": 12}, seed=5, cfg=SynthConfig(wording=wording), progress=False)
    targets = {w: [(s.entities, s.mask_ids) for s in IRGBench(tmp_path / w, "s").samples]
               for w in ("templates", "grammar", "heldout")}
    strip = {w: sorted(map(repr, t)) for w, t in targets.items()}
    assert strip["templates"] == strip["grammar"] == strip["heldout"]


def test_the_grammar_varies_words_person_form_and_casing():
    rng = np.random.default_rng(1)
    held = [Wording("grammar").question("held", rng, side="right") for _ in range(2000)]
    assert len(set(held)) > 300
    low = [q.lower() for q in held]
    for person in ("my right hand", "your right hand", "the wearer's right hand", "the person's right hand"):
        assert any(person in q for q in low), person
    for verb in ("holding", "gripping", "using", "manipulating"):
        assert any(verb in q for q in low), verb
    assert any(q.isupper() for q in held) and any(q == q.lower() for q in held)
    assert any(not q.rstrip().endswith(("?", ".")) for q in held)  # bare phrases and dropped marks


def test_template_wording_redraws_the_shipped_models_data_exactly():
    """The shipped model was trained on the template lists; its data must still redraw bit for bit."""
    rng = scene_rng(0, "default", "train", 0)
    _, _, _, scene = render_scene(rng, SynthConfig())
    asked = [q["query"] for e in entries_for(scene, "x", rng) for q in e["questions"]]
    assert asked == ["Segment my left hand.", "Show me the left hand of the camera wearer.", "right hand",
                     "Where is my right hand?", "Which object is my right hand touching?",
                     "the object touched by the right hand", "hands and interacting objects",
                     "What are my hands doing? Show the hands and the objects.",
                     "Which object is my left hand touching?", "Where is the bucket I am holding?"]


def test_the_random_style_never_draws_a_held_out_look():
    rng = np.random.default_rng(2)
    looks = [draw_look(rng, SKIN_TONES) for _ in range(3000)]
    assert not [lk for lk in looks if is_heldout_look(lk)]
    assert min(lk.gain for lk in looks) > DARK_GAIN_MAX
    assert all(is_skin(lk.skin) for lk in looks)
    assert not any(is_skin(c) for c in _GLOVE_COLOURS.values())  # the check can tell gloves from skin
    sizes = {lk.size for lk in looks}
    assert {(640, 480), (1280, 720)} <= sizes and len(sizes) == len(FRAME_SIZES)
    assert len({lk.texture for lk in looks}) >= 5 and any(lk.roll for lk in looks) and any(lk.occluder for lk in looks)


def test_random_scenes_keep_every_asked_instance_visible_and_no_glove_colour():
    for i in range(25):
        rng = scene_rng(7, "random", "train", i)
        rgb, lab, depth, scene = render_scene(rng, SynthConfig(style="random"))
        assert rgb.shape[:2] == lab.shape == depth.shape == scene["look"].size[::-1]
        assert not is_heldout_look(scene["look"])
        assert not {o.colour for o in scene["objects"]} & set(_GLOVE_COLOURS)
        for entry in entries_for(scene, "x", rng, wording="grammar"):
            for iid in entry["masks_idx"]:
                if iid:
                    assert (lab == iid).sum() >= 20, (i, iid)


def test_held_out_looks_are_what_they_claim():
    """The held-out splits are drawn in the looks the random style avoids."""
    for style in ("dark", "gloves"):
        for i in range(5):
            rgb, lab, _, scene = render_scene(scene_rng(9, style, "t", i), SynthConfig(style=style))
            assert scene["look"] is None
    dark = render_scene(scene_rng(9, "dark", "t", 0), SynthConfig(style="dark"))[0].mean()
    default = np.mean([render_scene(scene_rng(9, "default", "t", i), SynthConfig())[0].mean() for i in range(5)])
    assert dark < 0.7 * default


def test_the_recipe_trains_on_grammar_wording_and_random_looks_only():
    """What the recipe renders for training never includes a held-out wording or look."""
    from training.data.synth import HELDOUT_LOOKS
    from training.recipe import recipe_config

    for scale in ("full", "quick"):
        cfg = recipe_config(scale)
        assert cfg["synth"]["style"] == "random" and cfg["synth"]["wording"] == "grammar"
        assert cfg["vision_pretrain"]["style"] == "random"
        assert cfg["video_memory"]["style"] not in HELDOUT_LOOKS
        assert cfg["segmenter_synth"]["style"] not in HELDOUT_LOOKS
        assert cfg["segmenter_synth"]["wording"] != "heldout"


def test_a_pixel_cap_draws_the_same_random_scene_smaller():
    """vision-pretrain renders no more pixels than the processor keeps: same scene and look, same
    aspect ratio, every instance still there; frames already small enough are untouched."""
    big = next(i for i in range(200) if draw_look(scene_rng(0, "random", "train", i), SKIN_TONES).size == (1280, 720))
    for i, cap in ((big, 256 * 192), (big, 640 * 480), (0, 10 ** 7)):
        rgb, lab, _, scene = render_scene(scene_rng(0, "random", "train", i), SynthConfig(style="random"))
        rgb_c, lab_c, _, scene_c = render_scene(scene_rng(0, "random", "train", i),
                                                SynthConfig(style="random", max_pixels=cap))
        h, w = lab.shape
        assert lab_c.size <= min(cap, h * w) and abs(lab_c.shape[1] / lab_c.shape[0] - w / h) < 0.02
        assert [o.category for o in scene_c["objects"]] == [o.category for o in scene["objects"]]
        assert set(np.unique(lab_c)) == set(np.unique(lab))
        assert scene_c["look"].skin == scene["look"].skin and scene_c["look"].texture == scene["look"].texture
        if h * w <= cap:
            assert np.array_equal(rgb_c, rgb)
