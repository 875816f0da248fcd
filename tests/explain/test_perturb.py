"""Perturbations of `ftune stress`: deterministic under a seed, NER tags aligned after entity swaps and
punctuation removal, inputs never modified, the suite's plan refuses unknown names (issue 31)."""

import copy
import random

import pytest

from ftune.errors import FtuneError
from ftune.explain import perturb
from ftune.explain.stress import plan, verdict
from ftune.tasks import tag_schemes as ts

TEXTS = [{"text": "The film is great , truly moving .", "label": "1"},
         {"text": "A dull, lifeless film about nothing.", "label": "0"}] * 5
SENTENCES = [
    {"tokens": ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
     "tags": ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]},
    {"tokens": ["Peter", "Blackburn", "visited", "New", "York", "City", "."],
     "tags": ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]},
    {"tokens": ["U.N.", "official", "Ekeus", "heads", "for", "Baghdad", "."],
     "tags": ["B-ORG", "O", "B-PER", "O", "O", "B-LOC", "O"]},
    {"tokens": ["Anna", "flew", "to", "Rome", "."], "tags": ["B-PER", "O", "O", "B-LOC", "O"]},
]


def _all(name, examples, shape, seed, **kwargs):
    rng = random.Random(f"{name}/{seed}")
    return [getattr(perturb, name)(ex, shape, rng, **kwargs) for ex in examples]


@pytest.mark.parametrize("name,kwargs", [("typos", {"rate": 0.3}), ("whitespace", {})])
def test_seeded_perturbations_repeat_under_a_seed_and_differ_across_seeds(name, kwargs):
    first, again = _all(name, TEXTS, "text", 1, **kwargs), _all(name, TEXTS, "text", 1, **kwargs)
    assert first == again
    assert first != _all(name, TEXTS, "text", 2, **kwargs)
    assert first != TEXTS


def test_case_punctuation_and_substitutions_on_text():
    ex = TEXTS[0]
    assert perturb.lowercase(ex, "text", None)["text"] == "the film is great , truly moving ."
    assert perturb.uppercase(ex, "text", None)["text"] == "THE FILM IS GREAT , TRULY MOVING ."
    assert perturb.punctuation(ex, "text", None)["text"] == "The film is great truly moving"
    swapped = perturb.substitutions(ex, "text", None, {"great": "fine", "FILM": "movie"})
    assert swapped == {"text": "The movie is fine , truly moving .", "label": "1"}
    assert perturb.typo("film", random.Random(0)) != "film"


def test_entity_swaps_keep_tags_aligned_and_types_in_place():
    pool = perturb.entity_pool(SENTENCES)
    assert pool["LOC"] == [["Baghdad"], ["New", "York", "City"], ["Rome"]]
    before = copy.deepcopy(SENTENCES)
    for seed in (1, 2, 3):
        swapped = _all("entity_swap", SENTENCES, "tagged_tokens", seed, pool=pool, scheme="IOB2")
        assert swapped == _all("entity_swap", SENTENCES, "tagged_tokens", seed, pool=pool, scheme="IOB2")
        for new, old in zip(swapped, SENTENCES, strict=True):
            assert len(new["tokens"]) == len(new["tags"])
            assert [k for k, _, _ in ts.entities(new["tags"])] == [k for k, _, _ in ts.entities(old["tags"])]
            for kind, first, last in ts.entities(new["tags"]):
                assert new["tokens"][first:last + 1] in pool[kind]
    lengths = {len(ex["tokens"]) for seed in range(6)
               for ex in _all("entity_swap", SENTENCES[3:], "tagged_tokens", seed, pool=pool, scheme="IOB2")}
    assert len(lengths) > 1  # word counts change with the swapped entity's length
    assert SENTENCES == before  # inputs are never modified
    assert ts.span_tags("LOC", 3, "BIOES", "B-LOC") == ["B-LOC", "I-LOC", "E-LOC"]
    assert ts.span_tags("LOC", 1, "IOB1", "I-LOC") == ["I-LOC"]


def test_punctuation_on_tagged_tokens_drops_o_tokens_with_their_tags():
    out = perturb.punctuation(SENTENCES[2], "tagged_tokens", None)
    assert out["tokens"] == ["UN", "official", "Ekeus", "heads", "for", "Baghdad"]
    assert out["tags"] == ["B-ORG", "O", "B-PER", "O", "O", "B-LOC"]


def test_plan_and_verdicts():
    from omegaconf import OmegaConf

    settings = OmegaConf.create({"perturbations": ["typos", "lowercase", "entity_swap", "whitespace"],
                                 "typo_rates": [0.05, 0.1], "substitutions": {}})
    assert [r[0] for r in plan(settings, "text")] == ["typos 5%", "typos 10%", "lowercase", "whitespace"]
    assert [r[0] for r in plan(settings, "tagged_tokens")] == ["typos 5%", "typos 10%", "lowercase", "entity_swap"]
    settings.perturbations = ["lowercas"]
    with pytest.raises(FtuneError, match="unknown perturbation `lowercas`.*did you mean `lowercase`"):
        plan(settings, "text")
    assert verdict({"text": "x", "label": "pos", "score": 0.9}) == "pos"
    assert verdict({"tokens": ["a"], "entities": [{"type": "PER", "text": "a"}]}) == ("PER",)
