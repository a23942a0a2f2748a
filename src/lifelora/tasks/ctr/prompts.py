"""CTR prompts in ReLLa's wording, wrapped in the model's chat template (`lifelora.llm.chat`).

A prompt is a prefix (wrapper head, user profile, history, question), the target item, and a suffix
(ending where the answer starts). Its token ids are always the tokenizer's ids for the whole text (plus
BOS when the tokenizer adds one): tokenizing the pieces apart would give ids the tokenizer never makes
where it merges across a seam (`)` `**` for `)**`), which a model fed the decoded text would not see.
Candidate ranking shares the tokens all of a user's candidate prompts begin with, cut from those same
whole-text ids, so training, scoring and ranking see exactly the same ids for a sample.

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
    """CTR prompts as token ids for one tokenizer and one prepared dataset."""

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
        after = AFTER_TARGET if layout == "target-last" else f"{AFTER_TARGET}\n{self.template.instructions}"
        self.suffix = after + self.tail

    def prefix_text(self, user: int, hist_items: np.ndarray, hist_ratings: np.ndarray) -> str:
        """Everything before the target title."""
        profile, intro, question = self.users[user]
        history = history_text(self.titles, hist_items, hist_ratings)
        if self.layout == "target-last":
            question = self.template.instructions + "\n" + question
        return self.head + profile + intro + history + question

    def text(self, user: int, target: int, hist_items: np.ndarray, hist_ratings: np.ndarray) -> str:
        """The whole prompt, ending where the answer starts."""
        return self.prefix_text(user, hist_items, hist_ratings) + self.titles[target] + self.suffix

    def encode(
        self,
        users: np.ndarray,
        targets: np.ndarray,
        hist_items: list[np.ndarray],
        hist_ratings: list[np.ndarray],
    ) -> list[list[int]]:
        """Whole prompts as token ids, a batch at a time."""
        return self._encode(
            [
                self.text(int(u), int(t), i, r)
                for u, t, i, r in zip(users, targets, hist_items, hist_ratings, strict=True)
            ]
        )

    def encode_candidates(
        self, user: int, hist_items: np.ndarray, hist_ratings: np.ndarray, targets: np.ndarray
    ) -> tuple[list[int], list[list[int]]]:
        """One user's prompts for each target as (shared prefix, per-target continuations).

        Each prefix + continuation is exactly `encode`'s prompt for that target. The prefix is the ids
        of the text before the title, less any that some prompt does not begin with (a tokenizer may
        merge the end of the question with the start of a title), so it holds for any tokenizer."""
        prefix = self.prefix_text(user, hist_items, hist_ratings)
        alone, *prompts = self._encode(
            [prefix] + [prefix + self.titles[int(t)] + self.suffix for t in targets]
        )
        shared = common_prefix_length([alone, *prompts])
        return alone[:shared], [p[shared:] for p in prompts]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [self.bos + ids for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def common_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading ids all the sequences share. In lexicographic order each sequence lies between
    the first and the last, so it shares with every other whatever those two share."""
    first, last = min(sequences), max(sequences)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return n


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
