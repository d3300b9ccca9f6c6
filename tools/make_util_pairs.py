"""Generate ``sage_core/data/util_pairs.json``: minimal groups of compositional prompts per TIFA category.

Run ``python tools/make_util_pairs.py [--out PATH] [--groups 50] [--seed 0]`` from a source checkout; the
output is the same bytes for the same arguments (a test checks the shipped file).

Each group is 4 prompts built from one template of its category with every slot fixed except
the category's own element (the object, the colour, the count, the spatial relation, ...),
which takes 4 different values. So any two prompts of a group differ in exactly one element
of that category: each prompt has 3 minimal-pair siblings. The context slots are drawn with
``random.Random(seed)``, so the file is the same on every machine and Python version.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from sage_core.defs.metrics import TIFA_CATEGORIES

#: The packaged pair file (read by ``sage_core.evaluation.pairs``).
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "sage_core" / "data" / "util_pairs.json"


_OBJECTS = ["chair", "table", "lamp", "clock", "vase", "bicycle", "car", "umbrella", "book", "cup",
            "bottle", "guitar", "backpack", "kite", "laptop", "television", "bench", "boat", "suitcase",
            "teapot", "hat", "shoe", "bowl", "mirror", "bucket", "ladder", "candle", "basket",
            "telephone", "piano"]
_SURFACES = ["wooden table", "kitchen counter", "stone floor", "sandy beach", "grassy lawn", "shelf",
             "desk", "windowsill"]
_ANIMALS = ["dog", "cat", "horse", "cow", "sheep", "elephant", "giraffe", "zebra", "bear", "bird",
            "rabbit", "fox", "duck", "pig", "goat", "monkey", "lion", "tiger", "owl", "deer"]
_PEOPLE = ["man", "woman", "boy", "girl", "chef", "old man", "young woman", "farmer", "police officer",
           "student", "doctor", "baker", "surfer", "skier", "musician"]
_LOCATIONS = ["kitchen", "forest", "beach", "desert", "city street", "park", "living room", "library",
              "mountain", "snowy field", "garden", "train station", "river bank", "classroom", "market",
              "parking lot", "farm", "bedroom"]
_COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown",
           "gray"]
_FOODS = ["pizza", "sushi", "pancakes", "salad", "spaghetti", "a hamburger", "fried rice", "donuts",
          "a sandwich", "apples", "bananas", "broccoli", "soup", "tacos", "cake", "hot dogs", "oranges",
          "carrots"]
_MATERIALS = ["wooden", "metal", "glass", "plastic", "stone", "leather", "ceramic", "paper", "wicker",
              "golden", "marble", "rubber"]
_ATTRIBUTES = ["large", "small", "old", "new", "broken", "shiny", "dirty", "wet", "tall", "tiny",
               "ancient", "modern", "rusty", "empty"]
_COUNTS = ["two", "three", "four", "five", "six", "seven", "eight"]
_PLURAL = {"dog": "dogs", "cat": "cats", "horse": "horses", "cow": "cows", "sheep": "sheep",
           "bird": "birds", "rabbit": "rabbits", "duck": "ducks", "apple": "apples", "cup": "cups",
           "book": "books", "chair": "chairs", "bottle": "bottles", "candle": "candles", "vase": "vases",
           "boat": "boats", "kite": "kites", "bicycle": "bicycles", "umbrella": "umbrellas",
           "bowl": "bowls"}
_SHAPES = ["round", "square", "triangular", "rectangular", "oval", "hexagonal", "heart-shaped",
           "star-shaped", "cylindrical", "diamond-shaped"]
_SHAPED = ["table", "mirror", "clock", "cake", "window", "plate", "pillow", "rug", "box", "sign",
           "cookie", "pool", "tray", "lamp"]
_ACTIVITIES = ["running", "reading a book", "eating lunch", "sleeping", "dancing", "swimming",
               "cooking", "painting", "riding a bicycle", "playing the guitar", "jumping", "sitting",
               "talking on the phone", "walking a dog", "taking a photo", "climbing"]
_RELATIONS = ["on top of", "under", "next to", "behind", "in front of", "to the left of",
              "to the right of", "inside"]


def _pick(rng: random.Random, items: list[str], k: int) -> list[str]:
    return rng.sample(items, k)


def _articles(prompt: str) -> str:
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", prompt)


def _group(category: str, rng: random.Random) -> tuple[str, list[str]]:
    """(element slot name, 4 prompts that differ only in that slot), articles fixed ("an owl")."""
    element, prompts = _raw_group(category, rng)
    return element, [_articles(p) for p in prompts]


def _raw_group(category: str, rng: random.Random) -> tuple[str, list[str]]:
    if category == "object":
        color, where = rng.choice(_COLORS), rng.choice(_SURFACES)
        return "object", [f"a {color} {o} on a {where}" for o in _pick(rng, _OBJECTS, 4)]
    if category == "animal_human":
        where = rng.choice(_LOCATIONS)
        pool = _ANIMALS + _PEOPLE
        return "animal/human", [f"a {a} standing in a {where}" for a in _pick(rng, pool, 4)]
    if category == "location":
        who = rng.choice(_ANIMALS + _PEOPLE)
        return "location", [f"a {who} in a {loc}" for loc in _pick(rng, _LOCATIONS, 4)]
    if category == "color":
        obj, where = rng.choice(_OBJECTS), rng.choice(_SURFACES)
        return "color", [f"a {c} {obj} on a {where}" for c in _pick(rng, _COLORS, 4)]
    if category == "food":
        where = rng.choice(["white plate", "wooden table", "picnic blanket", "kitchen counter",
                            "restaurant table", "tray"])
        return "food", [f"{f} on a {where}" for f in _pick(rng, _FOODS, 4)]
    if category == "material":
        obj, where = rng.choice(_OBJECTS), rng.choice(_LOCATIONS)
        return "material", [f"a {m} {obj} in a {where}" for m in _pick(rng, _MATERIALS, 4)]
    if category == "attribute":
        obj, where = rng.choice(_OBJECTS), rng.choice(_LOCATIONS)
        return "attribute", [f"a {a} {obj} in a {where}" for a in _pick(rng, _ATTRIBUTES, 4)]
    if category == "counting":
        noun, where = rng.choice(sorted(_PLURAL)), rng.choice(_SURFACES + _LOCATIONS)
        return "counting", [f"{n} {_PLURAL[noun]} on a {where}" for n in _pick(rng, _COUNTS, 4)]
    if category == "shape":
        obj, color = rng.choice(_SHAPED), rng.choice(_COLORS)
        return "shape", [f"a {color} {s} {obj}" for s in _pick(rng, _SHAPES, 4)]
    if category == "activity":
        who, where = rng.choice(_PEOPLE), rng.choice(_LOCATIONS)
        return "activity", [f"a {who} {act} in a {where}" for act in _pick(rng, _ACTIVITIES, 4)]
    if category == "spatial":
        a, b = _pick(rng, _OBJECTS + _ANIMALS, 2)
        return "spatial", [f"a {a} {rel} a {b}" for rel in _pick(rng, _RELATIONS, 4)]
    raise ValueError(f"unknown category {category!r}")


def make_groups(*, groups_per_category: int = 50, seed: int = 0) -> dict:
    """The pair file as a dict: ``{"version", "seed", "categories": {cat: [{"element", "prompts"}]}}``.

    Groups are distinct within a category (a duplicate draw is redrawn).
    """
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {}
    for cat in TIFA_CATEGORIES:
        seen: set[tuple[str, ...]] = set()
        groups: list[dict] = []
        tries = 0
        while len(groups) < groups_per_category:
            tries += 1
            if tries > 100 * groups_per_category:
                raise RuntimeError(f"category {cat}: cannot draw {groups_per_category} distinct groups")
            element, prompts = _group(cat, rng)
            key = tuple(sorted(prompts))
            if key in seen or len(set(prompts)) != len(prompts):
                continue
            seen.add(key)
            groups.append({"element_type": element, "prompts": prompts})
        out[cat] = groups
    return {"version": 1, "seed": seed, "groups_per_category": groups_per_category,
            "siblings_per_prompt": 3,
            "how": "python tools/make_util_pairs.py (templates with one varied slot)",
            "categories": out}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="where to write the JSON")
    parser.add_argument("--groups", type=int, default=50, help="groups of 4 prompts per category")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = make_groups(groups_per_category=args.groups, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    n = sum(len(g) for g in data["categories"].values())
    print(f"wrote {args.out}: {len(TIFA_CATEGORIES)} categories x {args.groups} groups x 4 prompts ({n} groups)")
    return args.out


if __name__ == "__main__":
    main()
