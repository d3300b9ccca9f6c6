"""TIFA: question answering on generated images (Hu et al. 2023), v1.0 question/answer format.

The file is a JSON list of entries ``{"id", "caption", "question", "choices", "answer",
"element_type", ...}`` (``text`` is accepted for ``caption``). One image is generated per
distinct ``id``. A local VQA model answers each question in free form; the answer is mapped to a
choice (exact match, then containment, then the highest ``difflib`` similarity: TIFA itself uses
SBERT similarity, which would need another model). Scores:

- ``tifa`` = mean over images of the accuracy of that image's questions (the paper's TIFA);
- ``tifa_<category>`` = accuracy over the questions of that element type ("animal/human" ->
  ``tifa_animal_human``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..defs.errors import DataError, ModelError
from .config import metric_suffix

__all__ = ["TifaQuestion", "load_tifa_questions", "match_choice", "tifa_scores", "BlipVQA"]


@dataclass(frozen=True)
class TifaQuestion:
    id: str
    caption: str
    question: str
    choices: tuple[str, ...]
    answer: str
    element_type: str


def load_tifa_questions(path: str | os.PathLike, *, limit_images: int | None = None) -> list[TifaQuestion]:
    """Read a TIFA question/answer JSON; keep the questions of the first ``limit_images`` ids."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"tifa_questions={str(path)!r}: no such file (TIFA v1.0: tifa_v1.0_question_answers.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of TIFA entries "
                        "{id, caption, question, choices, answer, element_type}")
    out: list[TifaQuestion] = []
    ids: list[str] = []
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            raise DataError(f"{path}: entry {i} is {type(e).__name__}, expected an object")
        caption = e.get("caption", e.get("text"))
        missing = [k for k, v in (("id", e.get("id")), ("caption", caption), ("question", e.get("question")),
                                  ("choices", e.get("choices")), ("answer", e.get("answer")),
                                  ("element_type", e.get("element_type"))) if v is None]
        if missing:
            raise DataError(f"{path}: entry {i} lacks {', '.join(missing)} (TIFA v1.0 entries have id, caption, "
                            "question, choices, answer, element_type)")
        choices = e["choices"]
        if not isinstance(choices, list) or not choices or str(e["answer"]) not in [str(c) for c in choices]:
            raise DataError(f"{path}: entry {i}: 'choices' must be a non-empty list containing 'answer' "
                            f"({e['answer']!r} not in {choices!r})")
        qid = str(e["id"])
        if qid not in ids:
            if limit_images is not None and len(ids) >= limit_images:
                continue
            ids.append(qid)
        out.append(TifaQuestion(id=qid, caption=str(caption), question=str(e["question"]),
                                choices=tuple(str(c) for c in choices), answer=str(e["answer"]),
                                element_type=str(e["element_type"])))
    return out


def _norm(s: str) -> str:
    return " ".join(s.lower().strip().strip(".").split())


def match_choice(free_form: str, choices: Sequence[str]) -> str:
    """The choice a free-form answer means: exact (case/space-insensitive), then containment, then
    the most similar by ``difflib.SequenceMatcher`` ratio (first one on ties)."""
    ans = _norm(free_form)
    normed = [_norm(c) for c in choices]
    if ans in normed:
        return choices[normed.index(ans)]
    for c, n in zip(choices, normed, strict=True):
        if n and (n in ans.split() or (len(n) > 2 and n in ans)):
            return c
    ratios = [difflib.SequenceMatcher(None, ans, n).ratio() for n in normed]
    return choices[max(range(len(choices)), key=lambda i: ratios[i])]


def tifa_scores(questions: Sequence[TifaQuestion], chosen: Sequence[str]) -> dict[str, float]:
    """``tifa`` = mean_images(mean_questions_of_image(correct)); ``tifa_<type>`` = accuracy per type."""
    if len(questions) != len(chosen):
        raise ValueError("one chosen answer per question")
    per_image: dict[str, list[bool]] = {}
    per_type: dict[str, list[bool]] = {}
    for q, c in zip(questions, chosen, strict=True):
        ok = _norm(c) == _norm(q.answer)
        per_image.setdefault(q.id, []).append(ok)
        per_type.setdefault(q.element_type, []).append(ok)
    out = {"tifa": sum(sum(v) / len(v) for v in per_image.values()) / len(per_image)}
    for t in sorted(per_type):
        out[f"tifa_{metric_suffix(t)}"] = sum(per_type[t]) / len(per_type[t])
    return out


class BlipVQA:
    """Free-form VQA with a local ``BlipForQuestionAnswering`` folder (model + BlipProcessor)."""

    def __init__(self, folder: str | os.PathLike, *, device: str | None = None, max_new_tokens: int = 10):
        from transformers import (  # lazy: transformers (~1 s), only for the VQA model
            BlipForQuestionAnswering,
            BlipProcessor,
        )

        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"vqa_model={str(folder)!r}: no config.json there; give a local "
                             "BlipForQuestionAnswering folder (e.g. Salesforce/blip-vqa-base saved locally)")
        try:
            self.model = BlipForQuestionAnswering.from_pretrained(path, local_files_only=True).eval()
            self.processor = BlipProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"vqa_model={str(folder)!r}: could not load ({first})") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.max_new_tokens = max_new_tokens

    def answer(self, images: Sequence, questions: Sequence[str], *, batch_size: int = 16) -> list[str]:
        out: list[str] = []
        for i in range(0, len(questions), batch_size):
            inputs = self.processor(images=list(images[i:i + batch_size]), text=list(questions[i:i + batch_size]),
                                    return_tensors="pt", padding=True).to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            out.extend(self.processor.batch_decode(ids, skip_special_tokens=True))
        return out
