"""Trie-constrained decoding of item codes: the trie against brute force, beam search against exact
full-catalogue scoring and HF `generate`, exact scoring against every code scored from scratch."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from tiny_llm import tiny_model, tiny_tokenizer
from transformers import LogitsProcessorList

from lifelora.errors import LifeloraError
from lifelora.llm.batching import left_pad
from lifelora.tasks.next_item.code_scores import CodeDecoding, TrieLogitsProcessor
from lifelora.tasks.next_item.decoding import beam_search, exact_scores
from lifelora.tasks.next_item.trie import CodeTrie

FP32 = "fp32"  # HF `generate` and the references run without autocast; `auto` is bf16 on some CPUs


@pytest.fixture(scope="module")
def base_tokenizer():
    return tiny_tokenizer(chat=False)


def random_codes(rng: np.random.Generator, sizes: tuple[int, ...], n: int) -> np.ndarray:
    """`n` distinct codes drawn from all of them: ragged (not every prefix has every child)."""
    flat = rng.choice(int(np.prod(sizes)), size=n, replace=False)
    return np.stack(np.unravel_index(flat, sizes), 1).astype(np.int64)


def coded_model(tokenizer, sizes: tuple[int, ...], kind: str = "llama", seed: int = 0):
    """A tiny model whose vocabulary has one token per (level, code), and the [L, max size] token table.

    The new rows get std-1 weights so the codes' log-probs differ clearly (no near-ties to reorder)."""
    tokenizer = copy.deepcopy(tokenizer)
    names = [[f"<c{level}_{code}>" for code in range(size)] for level, size in enumerate(sizes)]
    tokenizer.add_tokens([name for level in names for name in level])
    model = tiny_model(kind, 400, seed)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
            weight[400:] = torch.randn(weight[400:].shape, generator=generator)
    table = torch.full((len(sizes), max(sizes)), -1, dtype=torch.long)
    for level, level_names in enumerate(names):
        table[level, : len(level_names)] = torch.tensor(tokenizer.convert_tokens_to_ids(level_names))
    return model, tokenizer, table


def random_prompts(rng: np.random.Generator, n: int) -> list[list[int]]:
    """Prompts of different lengths (so batches are left-padded) from the tokenizer's own tokens."""
    return [rng.integers(3, 400, size=int(rng.integers(4, 20))).tolist() for _ in range(n)]


def score_codes_independently(model, prompts, codes, table, temperature) -> torch.Tensor:
    """Reference: every item's code teacher-forced after each prompt from scratch, no cache, no trie."""
    tokens = table[torch.arange(codes.shape[1]), torch.as_tensor(codes)]  # [items, L]
    out = torch.empty(len(prompts), len(codes))
    for user, prompt in enumerate(prompts):
        ids = torch.cat([torch.tensor(prompt).expand(len(codes), -1), tokens], 1)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[:, len(prompt) - 1 : -1].float()
        log_probs = torch.log_softmax(logits / temperature, -1)
        out[user] = log_probs.gather(2, tokens[..., None]).squeeze(-1).sum(1)
    return out


TRIES = [(5, (7,)), (6, (3, 4)), (11, (4, 2, 3)), (9, (2, 5, 3)), (14, (3, 3, 2, 2)), (20, (6, 6))]


@pytest.mark.parametrize(("n_items", "sizes"), TRIES, ids=[str(s) for _, s in TRIES])
def test_beam_never_invalid_and_matches_exact_with_enough_beams(base_tokenizer, n_items, sizes):
    rng = np.random.default_rng(n_items)
    codes = random_codes(rng, sizes, n_items)
    trie = CodeTrie(codes, sizes)
    model, tokenizer, table = coded_model(base_tokenizer, sizes, seed=n_items)
    prompts = random_prompts(rng, 3)
    decoding = CodeDecoding(
        trie, table, tokenizer.pad_token_id, temperature=0.8, batch_size=2, precision=FP32
    )
    exact = exact_scores(model, prompts, decoding, chunk_size=5)

    for beams in (1, 3):
        items, scores = beam_search(model, prompts, decoding, beams=beams)
        assert items.shape == scores.shape == (3, beams)
        assert ((items >= 0) & (items < n_items)).all()
        assert all(len(set(row.tolist())) == beams for row in items)
        assert torch.allclose(scores, exact.gather(1, items), atol=1e-4)

    beams = n_items + 2  # more beams than items: the last two ranks are padding
    items, scores = beam_search(model, prompts, decoding, beams=beams)
    assert (items[:, n_items:] == -1).all() and scores[:, n_items:].isneginf().all()
    top, top_scores = items[:, :n_items], scores[:, :n_items]
    assert torch.equal(top, torch.argsort(exact, dim=1, descending=True, stable=True))
    assert torch.allclose(top_scores, exact.gather(1, top), atol=1e-4)
    assert torch.allclose(torch.logsumexp(exact, 1), torch.logsumexp(top_scores, 1), atol=1e-4)


@pytest.mark.parametrize("normalise", ["codes", "trie"])
def test_code_normalised_beams_match_exact_and_trie_scores_are_one_distribution(base_tokenizer, normalise):
    n_items, sizes = 11, (4, 2, 3)
    rng = np.random.default_rng(5)
    codes = random_codes(rng, sizes, n_items)
    model, tokenizer, table = coded_model(base_tokenizer, sizes, seed=5)
    prompts = random_prompts(rng, 3)
    decoding = CodeDecoding(
        CodeTrie(codes, sizes), table, tokenizer.pad_token_id, normalise=normalise, precision=FP32
    )
    exact = exact_scores(model, prompts, decoding, chunk_size=4)
    items, scores = beam_search(model, prompts, decoding, beams=n_items)
    assert torch.equal(items, torch.argsort(exact, dim=1, descending=True, stable=True))
    assert torch.allclose(scores, exact.gather(1, items), atol=1e-4)
    total = torch.logsumexp(exact, 1)  # log of the probability mass on the catalogue's items
    if normalise == "trie":
        assert torch.allclose(total, torch.zeros(3), atol=1e-5)
    else:  # a level's softmax also gives mass to codes no item has
        assert (total < -1e-3).all()


def test_allowed_columns_follow_the_trie_and_refuse_tokens_that_are_not_whole_items(base_tokenizer):
    sizes = (3, 2)
    codes = np.array([[0, 0], [0, 1], [2, 1]])
    _, tokenizer, table = coded_model(base_tokenizer, sizes)
    trie = CodeTrie(codes, sizes)
    level = CodeDecoding(trie, table, tokenizer.pad_token_id, normalise="codes")
    by_trie = CodeDecoding(trie, table, tokenizer.pad_token_id, normalise="trie")
    assert by_trie.level_offsets == [0, 3]
    columns = torch.tensor([0, 3, 2, 4])  # item 0 = (0, 0), then item 2 = (2, 1)
    assert level.allowed_columns(columns).tolist() == [[True] * 3 + [False] * 2, [False] * 3 + [True] * 2] * 2
    assert by_trie.allowed_columns(columns).tolist() == [
        [True, False, True, False, False],  # first level: codes 0 and 2 begin items
        [False, False, False, True, True],  # after 0: both second codes
        [True, False, True, False, False],
        [False, False, False, False, True],  # after 2: only 1
    ]
    for partial in (torch.tensor([0, 3, 2]), torch.tensor([3, 0])):
        with pytest.raises(LifeloraError, match="2 at a time"):
            by_trie.allowed_columns(partial)


@pytest.mark.parametrize(("n_items", "sizes"), TRIES[1:4], ids=[str(s) for _, s in TRIES[1:4]])
def test_excluded_items_never_come_back_and_the_rest_rank_as_exact_scoring_ranks_them(
    base_tokenizer, n_items, sizes
):
    rng = np.random.default_rng(n_items)
    codes = random_codes(rng, sizes, n_items)
    trie = CodeTrie(codes, sizes)
    model, tokenizer, table = coded_model(base_tokenizer, sizes, seed=n_items)
    prompts = random_prompts(rng, 3)
    decoding = CodeDecoding(trie, table, tokenizer.pad_token_id, batch_size=2, precision=FP32)
    siblings = np.flatnonzero((codes[:, :-1] == codes[0, :-1]).all(1))  # a whole last-level subtree
    exclude = [rng.choice(n_items, n_items // 2, replace=False), siblings, np.zeros(0, dtype=np.int64)]
    exact = exact_scores(model, prompts, decoding, chunk_size=5)
    for row, items in enumerate(exclude):
        exact[row, items] = -torch.inf
    for beams in (2, n_items):
        items, scores = beam_search(model, prompts, decoding, beams=beams, exclude=exclude)
        for row, excluded in enumerate(exclude):
            kept = n_items - len(excluded)
            found = items[row][items[row] >= 0]
            assert len(found) == min(beams, kept) and not set(found.tolist()) & set(excluded.tolist())
            assert torch.allclose(scores[row, : len(found)], exact[row, found], atol=1e-4)
            if beams == n_items:  # a search wide enough to be exact: the others, best first
                assert torch.equal(found, torch.argsort(exact[row], descending=True, stable=True)[:kept])


def test_exclusions_for_another_number_of_prompts_are_a_clear_error(base_tokenizer):
    codes = random_codes(np.random.default_rng(0), (3, 4), 6)
    model, tokenizer, table = coded_model(base_tokenizer, (3, 4))
    decoding = CodeDecoding(CodeTrie(codes, (3, 4)), table, tokenizer.pad_token_id, precision=FP32)
    prompts = random_prompts(np.random.default_rng(1), 2)
    with pytest.raises(LifeloraError, match="exclude has 1 rows for 2 prompts"):
        beam_search(model, prompts, decoding, beams=2, exclude=[np.array([0])])


def test_exhausted_nodes_are_those_whose_every_item_is_excluded():
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 1]])  # items 3 and 4 share a code
    trie = CodeTrie(codes, (2, 2), shared=True)
    depth1, depth2 = trie.exhausted([np.array([0, 1, 3]), np.array([3, 4]), np.array([2])])
    n1, n2 = trie.node_counts[1], trie.node_counts[2]
    assert depth1.tolist() == [0 * n1 + 0]  # row 0 excluded both items under code 0
    leaf = trie.node_of(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])).tolist()
    assert sorted(depth2.tolist()) == sorted([leaf[0], leaf[1], n2 + leaf[3], 2 * n2 + leaf[2]])


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_exact_ranking_equals_scoring_every_code_from_scratch(base_tokenizer, kind):
    sizes = (4, 3, 3)
    rng = np.random.default_rng(1)
    codes = random_codes(rng, sizes, 25)
    model, tokenizer, table = coded_model(base_tokenizer, sizes, kind)
    prompts = random_prompts(rng, 4)
    trie, pad = CodeTrie(codes, sizes), tokenizer.pad_token_id
    decoding = CodeDecoding(trie, table, pad, batch_size=3, precision=FP32)
    exact = exact_scores(model, prompts, decoding, chunk_size=7)
    reference = score_codes_independently(model, prompts, codes, table, temperature=0.8)
    assert torch.allclose(exact, reference, atol=1e-4)
    assert torch.equal(exact.argsort(1, descending=True), reference.argsort(1, descending=True))


def hf_beams(model, prompts, pad_id, beams, length, processor=None, prefix_fn=None):
    """HF beam search on left-padded prompts: generated code tokens [n, beams, L] and summed log-probs."""
    ids, mask = left_pad(prompts, pad_id)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        num_beams=beams,
        num_return_sequences=beams,
        max_new_tokens=length,
        do_sample=False,
        length_penalty=0.0,  # raw sums of log-probs (all codes have L tokens anyway)
        logits_processor=LogitsProcessorList([processor]) if processor else None,
        prefix_allowed_tokens_fn=prefix_fn,
        pad_token_id=pad_id,
        return_dict_in_generate=True,
        output_scores=True,
    )
    tokens = out.sequences[:, ids.shape[1] :].reshape(len(prompts), beams, length)
    return tokens, out.sequences_scores.reshape(len(prompts), beams)


def items_of_tokens(tokens, trie, table) -> torch.Tensor:
    lookup = {int(t): c for level in table for c, t in enumerate(level.tolist()) if t >= 0}
    codes = torch.tensor([[lookup[int(t)] for t in row] for row in tokens.reshape(-1, tokens.shape[-1])])
    return trie.item_of(codes).reshape(tokens.shape[:2])


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_processor_in_hf_generate_matches_beam_search(base_tokenizer, kind):
    sizes = (4, 3, 3)
    rng = np.random.default_rng(2)
    codes = random_codes(rng, sizes, 20)
    trie = CodeTrie(codes, sizes)
    model, tokenizer, table = coded_model(base_tokenizer, sizes, kind)
    prompts, pad, beams = random_prompts(rng, 3), tokenizer.pad_token_id, 5
    decoding = CodeDecoding(trie, table, pad, batch_size=3, precision=FP32)
    items, scores = beam_search(model, prompts, decoding, beams=beams)

    width = len(max(prompts, key=len))
    processor = TrieLogitsProcessor(trie, table, prompt_length=width, temperature=0.8)
    tokens, hf_scores = hf_beams(model, prompts, pad, beams, len(sizes), processor=processor)
    assert torch.equal(items_of_tokens(tokens, trie, table), items)
    assert torch.allclose(hf_scores, scores, atol=1e-4)


def test_prefix_allowed_tokens_fn_gives_the_same_items(base_tokenizer):
    """HF's own constraint (a dict trie, a Python call per row and step) at T = 1, HF's beam search."""
    sizes = (3, 4, 2)
    rng = np.random.default_rng(3)
    codes = random_codes(rng, sizes, 16)
    trie = CodeTrie(codes, sizes)
    model, tokenizer, table = coded_model(base_tokenizer, sizes)
    prompts, pad, beams = random_prompts(rng, 3), tokenizer.pad_token_id, 4
    paths = table[torch.arange(len(sizes)), torch.as_tensor(codes)].tolist()
    children: dict[tuple[int, ...], list[int]] = {}
    for path in paths:
        for depth in range(len(path)):
            allowed = children.setdefault(tuple(path[:depth]), [])
            if path[depth] not in allowed:
                allowed.append(path[depth])
    width = len(max(prompts, key=len))

    def prefix_fn(_batch_id: int, sequence: torch.Tensor) -> list[int]:
        return children[tuple(sequence[width:].tolist())]

    tokens, hf_scores = hf_beams(model, prompts, pad, beams, len(sizes), prefix_fn=prefix_fn)
    decoding = CodeDecoding(trie, table, pad, temperature=1.0, precision=FP32)
    items, scores = beam_search(model, prompts, decoding, beams=beams)
    assert torch.equal(items_of_tokens(tokens, trie, table), items)
    assert torch.allclose(hf_scores, scores, atol=1e-4)


class RoutedLM(torch.nn.Module):
    """A personalized model's interface: `routing` [rows, hidden] is added to every input embedding of
    its row, so a routing row handed to the wrong beam changes the result."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm, self.config, self.rows = lm, lm.config, []

    def get_output_embeddings(self):
        return self.lm.get_output_embeddings()

    def forward(self, input_ids, routing, **forward):
        assert routing.shape == (input_ids.shape[0], self.config.hidden_size)
        self.rows.append(routing.shape[0])
        embeds = self.lm.get_input_embeddings()(input_ids) + routing[:, None, :]
        return self.lm(inputs_embeds=embeds, **forward)


def test_routing_follows_each_prompt_to_its_beams(base_tokenizer):
    sizes = (3, 3, 2)
    rng = np.random.default_rng(4)
    codes = random_codes(rng, sizes, 12)
    trie = CodeTrie(codes, sizes)
    lm, tokenizer, table = coded_model(base_tokenizer, sizes)
    routed, prompts, beams = RoutedLM(lm), random_prompts(rng, 3), 4
    routing = torch.randn(3, lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    decoding = CodeDecoding(trie, table, tokenizer.pad_token_id, batch_size=3, precision=FP32)

    items, scores = beam_search(routed, prompts, decoding, beams=beams, routing=routing)
    assert routed.rows == [3, 3 * 3, 3 * beams]  # the prompts, then every beam (3 codes at level 0)
    for user in range(3):
        alone = beam_search(
            routed, prompts[user : user + 1], decoding, beams=beams, routing=routing[user : user + 1]
        )
        assert torch.equal(alone[0][0], items[user])
        assert torch.allclose(alone[1][0], scores[user], atol=1e-5)
    exact = exact_scores(routed, prompts, decoding, routing=routing, chunk_size=4)
    assert torch.allclose(exact.gather(1, items), scores, atol=1e-4)
    assert not torch.allclose(beam_search(lm, prompts, decoding, beams=beams)[1], scores)


def test_trie_queries_match_brute_force():
    sizes = (4, 3, 5)
    codes = random_codes(np.random.default_rng(5), sizes, 30)
    trie = CodeTrie(codes, sizes)
    catalogue = {tuple(c) for c in codes.tolist()}
    assert trie.node_counts == (1, *(len({c[:d] for c in catalogue}) for d in (1, 2, 3)))
    for depth in range(3):
        prefixes = [p for p in itertools.product(*(range(s + 1) for s in sizes[:depth]))]
        prefixes = torch.tensor(prefixes, dtype=torch.long).reshape(len(prefixes), depth)
        expected = [
            [(*p, c) in {k[: depth + 1] for k in catalogue} for c in range(sizes[depth])]
            for p in prefixes.tolist()
        ]
        assert trie.allowed(prefixes).tolist() == expected
        assert {tuple(n) for n in trie.nodes(depth).tolist()} == {k[:depth] for k in catalogue}
        assert torch.equal(trie.nodes(depth)[trie.item_nodes(depth)], trie.codes[:, :depth])
    assert torch.equal(trie.item_of(torch.as_tensor(codes)), torch.arange(30))
    absent = next(c for c in itertools.product(*map(range, sizes)) if c not in catalogue)
    assert trie.item_of(torch.tensor([absent, [0, 0, 9], [-1, 0, 0]])).tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    ("codes", "sizes", "message"),
    [
        ([[0, 1], [2, 1], [0, 1]], (3, 2), "not unique"),
        ([[0, 1], [3, 0]], (3, 2), "out of range at level 0"),
        ([[0, -1]], (3, 2), "out of range at level 1"),
        (np.zeros((0, 2), dtype=int), (3, 2), "empty"),
        ([[0, 1]], (3, 2, 2), "levels"),
        ([[0.5, 1]], (3, 2), "integers"),
    ],
)
def test_trie_rejects_bad_codes(codes, sizes, message):
    with pytest.raises(LifeloraError, match=message):
        CodeTrie(np.asarray(codes), sizes)


def test_bad_token_table_is_a_clear_error(base_tokenizer):
    trie = CodeTrie(np.array([[0, 1], [1, 0]]), (2, 2))
    with pytest.raises(LifeloraError, match="token_table must be"):
        CodeDecoding(trie, torch.zeros(1, 2, dtype=torch.long), pad_id=0)
    with pytest.raises(LifeloraError, match="same token id"):
        CodeDecoding(trie, torch.tensor([[5, 6], [6, 7]]), pad_id=0)
