"""CTR prompts in ReLLa's wording, wrapped in the model's chat template (`lifelora.llm.chat`).

A prompt is three token segments: a prefix (wrapper head, user profile, history, question), the target
item, and a suffix (ending where the answer starts). Everything before the target is shared by all
candidates of a user, which is what candidate ranking reuses. The segments are always tokenized apart
and concatenated, so scoring, training and ranking see exactly the same ids.

Two layouts (`prompt.layout`): `target-last` (default) puts ReLLa's two instruction sentences before
the question, so only the target title and the wrapper tail follow the shared prefix; `rella` keeps
ReLLa's exact order (question, target, instructions), whose longer per-candidate suffix makes ranking
slower (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from lifelora.errors import LifeloraError
from lifelora.llm.chat import chat_wrapper, leading_bos
from lifelora.llm.item_text import domain_of, item_titles

ANSWER_WORDS = ("No", "Yes")  # index 1 = the positive class
AFTER_TARGET = "***."
LAYOUTS = ("target-last", "rella")


@dataclass(frozen=True)
class PromptTemplate:
    """One dataset's wording. `{he}`/`{his}` and the capitalised forms follow the user's gender."""

    noun: str  # "movie"
    profile: str  # user features; empty when the dataset has none
    history: str
    question: str  # ends right before the target title
    instructions: str  # ReLLa's closing sentences
    profile_fields: tuple[str, ...] = ()


MOVIE = dict(
    noun="movie",
    history="{He} watched the following movies in order in the past, and rated them:\n",
    question="Based on the movies {he} has watched, deduce if {he} will like the movie ***",
    instructions="Note that more stars the user rated the movie, the more the user liked the movie.\n"
    "You should ONLY tell me yes or no.",
)

TEMPLATES: dict[str, PromptTemplate] = {
    "movielens": PromptTemplate(
        profile="The user is a {gender_word}. {His} job is {occupation}. {His} age is {age}.\n",
        profile_fields=("gender", "occupation", "age"),
        **MOVIE,
    ),
    "movielens-no-profile": PromptTemplate(profile="", **MOVIE),
    "books": PromptTemplate(
        noun="book",
        profile="",
        history="{He} read the following books in the past and rated them:\n",
        question="Based on the books {he} has read, deduce if {he} will like the book ***",
        instructions="Note that more stars the user rated the book, the more the user liked the book.\n"
        "You should ONLY tell me yes or no.",
    ),
    "products": PromptTemplate(
        noun="product",
        profile="",
        history="{He} bought the following products in the past and rated them:\n",
        question="Based on the products {he} has rated, deduce if {he} will like the product ***",
        instructions="Note that more stars the user rated the product, the more the user liked the product.\n"
        "You should ONLY tell me yes or no.",
    ),
}


def template_for(dataset: str, users: pl.DataFrame | None = None) -> PromptTemplate:
    """The wording for a dataset name; MovieLens without user features (ml-25m) gets no profile."""
    domain = domain_of(dataset)
    if domain == "movie":
        has_profile = users is not None and all(c in users.columns for c in ("gender", "occupation", "age"))
        return TEMPLATES["movielens" if has_profile else "movielens-no-profile"]
    if domain == "book":
        return TEMPLATES["books"]
    return TEMPLATES["products"]


PRONOUNS = {
    "F": {"he": "she", "He": "She", "his": "her", "His": "Her", "gender_word": "female"},
    "M": {"he": "he", "He": "He", "his": "his", "His": "His", "gender_word": "male"},
}
NEUTRAL = {
    "he": "the user",
    "He": "The user",
    "his": "the user's",
    "His": "The user's",
    "gender_word": "person",
}


def _words(row: dict) -> dict:
    return PRONOUNS.get(str(row.get("gender", "")).upper()[:1], NEUTRAL)


def user_texts(users: pl.DataFrame, template: PromptTemplate) -> list[tuple[str, str, str]]:
    """Per user: (profile, history intro, question) with the right pronouns."""
    out = []
    for row in users.iter_rows(named=True):
        words = _words(row)
        fields = {f: row.get(f) or "unknown" for f in template.profile_fields}
        profile = template.profile.format(**words, **fields) if template.profile else ""
        out.append((profile, template.history.format(**words), template.question.format(**words)))
    return out


def format_stars(rating: float) -> str:
    value = int(rating) if float(rating).is_integer() else rating
    return f"{value} star" if value == 1 else f"{value} stars"


def history_text(titles: list[str], item_idx: np.ndarray, ratings: np.ndarray) -> str:
    """ReLLa's list literal: ['0. Toy Story (1995) (4 stars)', '1. ...']."""
    entries = [
        f"'{i}. {titles[it]} ({format_stars(r)})'"
        for i, (it, r) in enumerate(zip(item_idx, ratings, strict=True))
    ]
    return "[" + ", ".join(entries) + "]\n"


class PromptBuilder:
    """Token segments of CTR prompts for one tokenizer and one prepared dataset."""

    def __init__(
        self, tokenizer, dataset: str, users: pl.DataFrame, items: pl.DataFrame, layout: str = "target-last"
    ):
        if layout not in LAYOUTS:
            raise LifeloraError(
                f"prompt.layout: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}"
            )
        self.tokenizer = tokenizer
        self.layout = layout
        self.template = template_for(dataset, users)
        self.titles = item_titles(items)
        self.users = user_texts(users, self.template)
        self.head, self.tail = chat_wrapper(tokenizer)
        self.answer_ids = answer_token_ids(tokenizer, self.tail)
        self.bos = leading_bos(tokenizer, self.head)

    def prefix_text(self, user: int, hist_items: np.ndarray, hist_ratings: np.ndarray) -> str:
        profile, intro, question = self.users[user]
        history = history_text(self.titles, hist_items, hist_ratings)
        if self.layout == "target-last":
            question = self.template.instructions + "\n" + question
        return self.head + profile + intro + history + question

    def encode(
        self,
        users: np.ndarray,
        targets: np.ndarray,
        hist_items: list[np.ndarray],
        hist_ratings: list[np.ndarray],
    ) -> list[list[int]]:
        """Whole prompts (prefix + target + suffix) as token ids, a batch at a time."""
        prefixes = self.encode_prefixes(users, hist_items, hist_ratings)
        targets_ids = self.encode_targets(targets)
        suffix = self.suffix_ids
        return [p + t + suffix for p, t in zip(prefixes, targets_ids, strict=True)]

    def encode_prefixes(
        self, users: np.ndarray, hist_items: list[np.ndarray], hist_ratings: list[np.ndarray]
    ) -> list[list[int]]:
        texts = [
            self.prefix_text(int(u), i, r) for u, i, r in zip(users, hist_items, hist_ratings, strict=True)
        ]
        return [self.bos + ids for ids in self._ids(texts)]

    def encode_targets(self, targets: np.ndarray) -> list[list[int]]:
        return self._ids([self.titles[int(t)] for t in targets])

    @property
    def suffix_ids(self) -> list[int]:
        if not hasattr(self, "_suffix"):
            after = (
                AFTER_TARGET
                if self.layout == "target-last"
                else f"{AFTER_TARGET}\n{self.template.instructions}"
            )
            self._suffix = self._ids([after + self.tail])[0]
        return self._suffix

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


def answer_token_ids(tokenizer, tail: str) -> tuple[int, int]:
    """("No", "Yes") token ids as they follow the prompt: with a leading space unless the prompt ends in
    whitespace. A multi-token answer is scored by its first token, which must differ between the two."""
    space = "" if tail[-1:].isspace() else " "
    first = []
    for word in ANSWER_WORDS:
        ids = tokenizer(space + word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise LifeloraError(f"the tokenizer encodes the answer {word!r} to no tokens")
        first.append(ids[0])
    if first[0] == first[1]:
        raise LifeloraError(
            "the tokenizer's first tokens of 'Yes' and 'No' are the same; answers cannot be scored by one token"
        )
    return first[0], first[1]
