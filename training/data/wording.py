"""How the synthetic questions are worded: the fixed template lists the shipped model was trained on,
or a compositional grammar whose held-out family never reaches training data.

A question is built from parts: a frame (question, command or bare noun phrase), the person
("my", "your", "the wearer's", ...), the hand's side, a verb of holding or touching, and a casing.
The grammar multiplies these into thousands of wordings per query kind, so a model trained on it
cannot key on one sentence. The held-out family ("heldout") uses frames and verbs that no training
wording ever contains (HELDOUT_MARKERS): a split drawn with it measures wording the model never saw.

Query kinds (what the question asks for; the answer's entities do not depend on the wording):
    hand      one visible hand                         -> that hand
    held      the object a hand holds                  -> that object
    touched   the object a hand touches                -> that object
    both      every interacting hand and its object    -> hands + objects
    none_hand a hand that is not in view               -> no target
    none_free what a free hand holds or touches        -> no target
    none_obj  an object category nobody uses           -> no target
    none_all  interactions when no hand is in view     -> no target
"""
from __future__ import annotations

import numpy as np

WORDINGS = ("templates", "grammar", "heldout")

# ---- the template lists of the shipped model's training data (unchanged, so its data redraws) ----
TEMPLATES = {
    "hand": ["Where is my {side} hand?", "Segment my {side} hand.", "Show me the {side} hand of the camera wearer.",
             "{side} hand"],
    "held": ["What am I holding in my {side} hand?", "What is my {side} hand holding?",
             "Which object is in my {side} hand?", "the object held by the {side} hand"],
    "touched": ["What is my {side} hand touching?", "Which object is my {side} hand touching?",
                "the object touched by the {side} hand"],
    "both": ["Which hands and objects are interacting?", "What are my hands doing? Show the hands and the objects.",
             "Find every hand and the object it interacts with.", "hands and interacting objects"],
    "none_hand": ["Where is my {side} hand?", "What is my {side} hand holding?"],
    "none_free": ["What is my {side} hand holding?", "Which object is my {side} hand touching?"],
    "none_obj": ["Where is the {cat} I am holding?", "Which {cat} am I using?"],
    "none_all": ["Which hands and objects are interacting?", "Where are my hands?"],
}

# ---- the grammar ----
# (possessive, subject, its form of "to be"): first, second and third person
_PERSONS = [("my", "I", "am"), ("your", "you", "are"), ("the wearer's", "the wearer", "is"),
            ("the person's", "the person", "is"), ("the camera wearer's", "the camera wearer", "is"),
            ("the user's", "the user", "is"), ("his", "he", "is"), ("her", "she", "is")]
_VERBS = {
    "held": ["holding", "gripping", "carrying", "picking up", "lifting", "using", "handling", "manipulating",
             "working with", "interacting with"],
    "touched": ["touching", "in contact with", "pressing", "tapping", "resting on", "reaching for",
                "feeling", "using", "interacting with"],
    "both": ["using", "interacting with", "handling", "working with"],
}
# frames: {h} = possessive + side + "hand" ("my left hand"), {v} = verb, {s} = subject + be ("I am"),
# {n} = subject ("I"), {b} = its "to be" ("am"), {p} = possessive alone ("my"), {side}, {cat}
_HAND_FRAMES = {
    "question": ["Where is {h}?", "Which part of the image is {h}?", "Where can I see {h}?",
                 "What does {h} look like in this frame?", "Is {h} visible, and where?"],
    "command": ["Segment {h}.", "Show {h}.", "Find {h}.", "Highlight {h}.", "Mark {h}.", "Outline {h}.",
                "Give me the mask of {h}.", "Locate {h}."],
    "phrase": ["{h}", "{side} hand", "the {side} hand", "mask of {h}", "{side} hand of the wearer"],
}
_OBJ_FRAMES = {
    "question": ["What is {h} {v}?", "Which object is {h} {v}?", "What object {b} {n} {v} with {p} {side} hand?",
                 "What thing is {h} {v}?", "With {p} {side} hand, what {b} {n} {v}?", "What's {h} {v}?",
                 "Which item is {h} {v}?"],
    "command": ["Segment the object {h} is {v}.", "Show the object {h} is {v}.",
                "Find what {h} is {v}.", "Highlight the thing {h} is {v}.",
                "Mark the item {s} {v} with {p} {side} hand.", "Outline what {h} is {v}."],
    "phrase": ["the object {h} is {v}", "{h}'s object", "thing {h} is {v}", "what {h} is {v}",
               "the item in contact with {h}"],
}
_BOTH_FRAMES = {
    "question": ["Which hands and objects are interacting?", "What are {p} hands doing with which objects?",
                 "Which objects {b} {n} {v}, and with which hands?", "What is each of {p} hands {v}?",
                 "Which hands are {v} something, and what?"],
    "command": ["Segment every hand and the object it is {v}.", "Show all hands and the objects they are {v}.",
                "Find {p} hands and what they are {v}.", "Highlight each hand together with its object.",
                "Mark the hands and the objects in use."],
    "phrase": ["hands and interacting objects", "every hand and its object", "hands and what they are {v}",
               "all hand-object interactions", "{p} hands with their objects"],
}
_NONE_OBJ_FRAMES = {
    "question": ["Where is the {cat} {s} {v}?", "Which {cat} {b} {n} {v}?", "{b} {n} {v} a {cat}, and where is it?"],
    "command": ["Segment the {cat} {s} {v}.", "Show the {cat} in {p} hand.", "Find the {cat} {s} {v}."],
    "phrase": ["the {cat} {s} {v}", "{cat} in {p} hand", "the {cat} being used"],
}
_FORMS = ("question", "command", "phrase")
_FORM_P = (0.5, 0.3, 0.2)

# ---- the held-out family: frames and verbs no training wording contains ----
_HELDOUT_PREFIXES = ["Could you point out {x}?", "Can you pick out {x} for me?", "I need to see {x}.",
                     "Would you isolate {x}?", "Please pick out {x}."]
_HELDOUT_VERBS = {"held": ["clutching", "grasping", "fiddling with", "wielding"],
                  "touched": ["brushing against", "fiddling with", "prodding", "grazing"],
                  "both": ["clutching", "grasping", "fiddling with"]}
HELDOUT_MARKERS = ("could you", "can you", "i need to see", "would you", "pick out", "isolate",
                   "clutch", "grasp", "fiddl", "wield", "brushing", "prodding", "grazing")


def _case(text: str, rng: np.random.Generator) -> str:
    """Casing variety: mostly as written (first letter up), sometimes all lower or all upper."""
    u = rng.random()
    if u < 0.6:
        return text[:1].upper() + text[1:]
    if u < 0.85:
        return text.lower()
    if u < 0.95:
        return text.upper()
    return " ".join(w[:1].upper() + w[1:] for w in text.split())


def _resolve(slots: dict) -> dict:
    return {k: v() if callable(v) else v for k, v in slots.items()}


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


class Wording:
    """Draws the questions of one query kind in one wording family ("templates", "grammar", "heldout")."""

    def __init__(self, family: str = "templates"):
        if family not in WORDINGS:
            raise ValueError(f"unknown wording {family!r}; choose one of {', '.join(WORDINGS)}")
        self.family = family

    def questions(self, kind: str, rng: np.random.Generator, n: int, **slots) -> list[str]:
        """Up to `n` distinct questions of `kind` (see the module docstring) with `slots` filled in."""
        if self.family == "templates":
            templates = TEMPLATES[kind]
            idx = rng.permutation(len(templates))[:n]
            return [templates[i].format(**slots) for i in idx]
        out: list[str] = []
        for _ in range(4 * n):
            q = self._compose(kind, rng, **slots)
            if q not in out:
                out.append(q)
            if len(out) == n:
                break
        return out

    def question(self, kind: str, rng: np.random.Generator, **slots) -> str:
        """One question of `kind`. A slot given as a callable is drawn after the wording, which keeps
        the order of draws (and so every image) of data written before the grammar existed."""
        if self.family == "templates":
            template = str(rng.choice(TEMPLATES[kind]))
            return template.format(**_resolve(slots))
        return self._compose(kind, rng, **_resolve(slots))

    def _compose(self, kind: str, rng: np.random.Generator, side: str = "", cat: str = "") -> str:
        possessive, subject, be = _PERSONS[int(rng.integers(len(_PERSONS)))]
        verb_kind = {"touched": "touched", "both": "both", "none_all": "both"}.get(kind, "held")
        verbs = _HELDOUT_VERBS[verb_kind] if self.family == "heldout" else _VERBS[verb_kind]
        parts = {"h": f"{possessive} {side} hand", "v": _pick(rng, verbs), "s": f"{subject} {be}", "n": subject,
                 "b": be, "p": possessive, "side": side, "cat": cat}
        frames = {"hand": _HAND_FRAMES, "none_hand": _HAND_FRAMES, "held": _OBJ_FRAMES, "touched": _OBJ_FRAMES,
                  "none_free": _OBJ_FRAMES, "both": _BOTH_FRAMES, "none_all": _BOTH_FRAMES,
                  "none_obj": _NONE_OBJ_FRAMES}[kind]
        if self.family == "heldout":
            # a held-out frame around a noun phrase of the kind, so every held-out question has a marker
            inner = _pick(rng, frames["phrase"]).format(**parts)
            text = _pick(rng, _HELDOUT_PREFIXES).format(x=inner)
        else:
            form = _FORMS[int(rng.choice(len(_FORMS), p=_FORM_P))]
            text = _pick(rng, frames[form]).format(**parts)
            if form != "phrase" and rng.random() < 0.15:
                text = text.rstrip("?.")  # people drop the final mark
        return _case(" ".join(text.split()), rng)


def is_sentence(question: str) -> bool:
    """A question or command (ends in a mark or has a verb-led frame), not a bare noun phrase."""
    q = question.strip().lower()
    return q.endswith(("?", ".")) or q.split(" ", 1)[0] in {
        "where", "which", "what", "what's", "is", "with", "segment", "show", "find", "highlight", "mark",
        "outline", "give", "locate", "could", "can", "i", "would", "please"}
