"""Item-code tokens in the vocabulary and their trainable rows: fixed single-token ids added once, rows
initialised the same way every time; for both adapter kinds on a tied tiny Llama and an untied tiny Qwen2,
only the new rows of the input embedding and LM head train beside the LoRA, and saving (as plain PEFT too),
loading to train on and fp32 last logits keep those rows."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from tiny_llm import tiny_tokenizer

from lifelora.adapters import PersonalizedConfig, SharedLoraConfig, attach, load
from lifelora.errors import LifeloraError
from lifelora.llm.logits import last_logits
from lifelora.llm.vocabulary import CodeVocabulary, add_code_tokens, code_token

LEVELS = [4, 3]  # 7 code tokens, a ragged table
ROUTING_DIM = 6
MODELS = [("llama", True), ("qwen2", False)]  # SmolLM2 (a Llama) ties its head; Qwen2-7B does not
KINDS = ["lora", "personalized"]


_TOKENIZER = tiny_tokenizer(chat=False)  # trained once; each test adds tokens to its own copy


def tokenizer():
    return copy.deepcopy(_TOKENIZER)


def backbone(kind: str = "llama", tie: bool = True, vocab: int = 400, seed: int = 0):
    """A tiny random causal LM with its head tied or not, whatever the architecture's default."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    shape = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**shape)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**shape)).eval()


def coded(kind: str = "llama", tie: bool = True):
    tok, model = tokenizer(), backbone(kind, tie)
    return tok, model, add_code_tokens(tok, model, LEVELS)


def rows_of(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the input embedding and the LM head compute with, whatever wraps them."""
    with torch.no_grad():
        embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
        rows = embedding(torch.arange(model.config.vocab_size))
        return rows.clone(), head(torch.eye(model.config.hidden_size)).t().clone()


def code_batch(vocabulary: CodeVocabulary) -> tuple[torch.Tensor, torch.Tensor]:
    """Old tokens, an item's code (every code token appears, each followed by a target) and an end token;
    and routing vectors."""
    g = torch.Generator().manual_seed(3)
    codes = np.array([[0, 0], [1, 1], [2, 2], [3, 0], [2, 1], [1, 2]])
    prompts = torch.randint(3, 400, (len(codes), 5), generator=g)
    items = torch.as_tensor(vocabulary.tokens_of(codes))
    ends = torch.full((len(codes), 1), 2)
    return torch.cat([prompts, items, ends], 1), torch.randn(len(codes), ROUTING_DIM, generator=g)


def forward_args(kind: str, vocabulary: CodeVocabulary) -> dict:
    ids, routing = code_batch(vocabulary)
    return {"input_ids": ids, **({"routing": routing} if kind == "personalized" else {})}


def adapter_config(kind: str, **changes):
    if kind == "lora":
        return SharedLoraConfig(r=2, **changes)
    return PersonalizedConfig(r=2, n_loras=2, temperature=1.0, gate_dropout=0.0, **changes)


def train(adapter, vocabulary: CodeVocabulary, steps: int = 3) -> None:
    args = forward_args(adapter.kind, vocabulary)
    ids = args["input_ids"]
    optimizer = torch.optim.Adam([p for p in adapter.model.parameters() if p.requires_grad], lr=1e-2)
    adapter.model.train()
    for _ in range(steps):
        logits = adapter.model(**args).logits[:, :-1]
        torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        ).backward()
        optimizer.step()
        optimizer.zero_grad()
    adapter.model.eval()


def trained(kind: str, model_kind: str, tie: bool, **changes):
    _, model, vocabulary = coded(model_kind, tie)
    before = rows_of(model)
    torch.manual_seed(1)
    config = adapter_config(kind, **({"trainable_token_indices": vocabulary.new_token_ids} | changes))
    adapter = attach(model, config, routing_dim=ROUTING_DIM)
    train(adapter, vocabulary)
    return adapter, model, vocabulary, before


@torch.no_grad()
def logits_of(adapter, vocabulary: CodeVocabulary) -> torch.Tensor:
    return adapter.model(**forward_args(adapter.kind, vocabulary)).logits


# --- the vocabulary ------------------------------------------------------------------------------------


def test_code_tokens_are_added_once_with_fixed_single_ids():
    tok, model = tokenizer(), backbone()
    vocabulary = add_code_tokens(tok, model, LEVELS)
    assert vocabulary.token_table.dtype == torch.long
    assert vocabulary.token_table.tolist() == [[400, 401, 402, 403], [404, 405, 406, -1]]
    assert vocabulary.new_token_ids == list(range(400, 407))
    assert tok.convert_tokens_to_ids(code_token(1, 2)) == 406 and code_token(1, 2) == "<b_2>"
    assert len(tok) == 407 and model.get_input_embeddings().weight.shape[0] == 407
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied stays tied
    rows = rows_of(model)

    again = add_code_tokens(tok, model, LEVELS)
    assert torch.equal(again.token_table, vocabulary.token_table) and len(tok) == 407
    assert all(torch.equal(a, b) for a, b in zip(rows_of(model), rows, strict=True))  # rows left alone

    other_tok, other_model = tokenizer(), backbone()
    assert torch.equal(add_code_tokens(other_tok, other_model, LEVELS).token_table, vocabulary.token_table)
    assert all(torch.equal(a, b) for a, b in zip(rows_of(other_model), rows, strict=True))  # same rows


def test_new_rows_start_apart_near_the_mean_and_old_rows_stay():
    tok, model = tokenizer(), backbone("qwen2", tie=False)
    old = [
        w.detach().clone()
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    ]
    add_code_tokens(tok, model, LEVELS)
    for before, after in zip(
        old, (model.get_input_embeddings().weight, model.get_output_embeddings().weight), strict=True
    ):
        assert torch.equal(after[:400], before)
        new = after[400:]
        assert torch.allclose(new, before.mean(0).expand_as(new), atol=0.05 * before.std(0).max().item())
        assert len(torch.unique(new, dim=0)) == len(new)
    assert not torch.equal(
        model.get_input_embeddings().weight[400:], model.get_output_embeddings().weight[400:]
    )


def test_rows_can_start_at_the_codes_vectors_and_rebuild_only_with_them():
    tok, model = tokenizer(), backbone("qwen2", tie=False)
    old = [
        w.detach().clone()
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    ]
    first = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    first[1] = first[0] + 0.01  # codes a_0 and a_1 stand for nearly the same vector
    vocabulary = add_code_tokens(tok, model, LEVELS, centroids=[first, None])
    weights = (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    plain_tok, plain = tokenizer(), backbone("qwen2", tie=False)
    add_code_tokens(plain_tok, plain, LEVELS)
    plain_weights = (plain.get_input_embeddings().weight, plain.get_output_embeddings().weight)
    for weight, before, plain_weight in zip(weights, old, plain_weights, strict=True):
        assert torch.equal(weight[:400], before)
        rows = weight[vocabulary.token_table[0, :4]]
        distance = torch.cdist(rows, rows)
        assert distance[0, 1] < 0.05 * distance[0, 2:].min()  # close codes start close
        torch.testing.assert_close(rows.mean(0), before.mean(0))  # standardised to the old rows
        torch.testing.assert_close(rows.std(0), before.std(0))
        second = vocabulary.token_table[1, :3]
        assert torch.equal(weight[second], plain_weight[second])  # a level without vectors: the mean
        assert not torch.allclose(rows, plain_weight[vocabulary.token_table[0, :4]])

    data = json.loads(json.dumps(vocabulary.to_dict()))
    other = backbone("qwen2", tie=False)
    CodeVocabulary.from_dict(data, tokenizer(), other, centroids=[first, None])
    assert torch.equal(other.get_input_embeddings().weight, weights[0])
    assert torch.equal(other.get_output_embeddings().weight, weights[1])
    with pytest.raises(LifeloraError, match="pass the same centroids"):
        CodeVocabulary.from_dict(data, tokenizer(), backbone("qwen2", tie=False))
    with pytest.raises(LifeloraError, match="level 0's centroids must be 4 finite vectors"):
        add_code_tokens(tokenizer(), backbone(), LEVELS, centroids=[first[:3], None])
    with pytest.raises(LifeloraError, match="centroids for 1 levels, but the codes have 2"):
        add_code_tokens(tokenizer(), backbone(), LEVELS, centroids=[first])


def test_codes_tokens_and_text_round_trip():
    tok, _, vocabulary = coded()
    codes = np.array([[3, 2], [0, 0]])
    ids = vocabulary.tokens_of(codes)
    assert ids.tolist() == [[403, 406], [400, 404]]
    assert [tok.convert_ids_to_tokens(row) for row in ids.tolist()] == [  # and back to the codes
        [code_token(level, int(code)) for level, code in enumerate(row)] for row in codes
    ]
    assert vocabulary.text_of(codes[0]) == "<a_3><b_2>"
    assert tok(vocabulary.text_of(codes[0]), add_special_tokens=False)["input_ids"] == [403, 406]
    with pytest.raises(LifeloraError, match="out of range"):
        vocabulary.tokens_of(np.array([[0, 3]]))  # level b has 3 codes
    with pytest.raises(LifeloraError, match="must have 2 levels in the last axis"):
        vocabulary.tokens_of(np.array([[0, 0, 0]]))
    with pytest.raises(LifeloraError, match="text_of takes one code row"):
        vocabulary.text_of(codes)


def test_a_saved_vocabulary_rebuilds_on_a_fresh_base():
    _, model, vocabulary = coded()
    data = json.loads(json.dumps(vocabulary.to_dict()))
    other = backbone()
    rebuilt = CodeVocabulary.from_dict(data, tokenizer(), other)
    assert torch.equal(rebuilt.token_table, vocabulary.token_table)
    assert torch.equal(other.get_input_embeddings().weight, model.get_input_embeddings().weight)
    shifted = tokenizer()
    shifted.add_tokens(["<zz>"])
    with pytest.raises(LifeloraError, match="other ids than the saved run"):
        CodeVocabulary.from_dict(data, shifted, backbone())


def test_a_tokenizer_that_keeps_no_new_token_is_refused():
    from transformers import PreTrainedTokenizerFast

    class NoNewTokens(PreTrainedTokenizerFast):
        """Ignores added regular tokens, as some remote-code tokenizers do."""

        def add_tokens(self, new_tokens, special_tokens=False) -> int:
            return 0

    tok = NoNewTokens(tokenizer_object=copy.deepcopy(_TOKENIZER.backend_tokenizer))
    with pytest.raises(LifeloraError, match=r"^tokenizer splits new token '<a_0>'"):
        add_code_tokens(tok, backbone(), LEVELS)


def test_tokens_added_normalised_elsewhere_are_made_whole():
    """A normalizer that prepends "▁" (Llama-2, T5) splits normalised added tokens written together."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast

    core = copy.deepcopy(_TOKENIZER.backend_tokenizer)
    core.normalizer = normalizers.Prepend("▁")
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    tok.add_tokens(["<a_0>", "<a_1>"])  # as another tool would (normalised)
    assert len(tok("<a_0><a_1>", add_special_tokens=False)["input_ids"]) > 2
    vocabulary = add_code_tokens(tok, backbone(), LEVELS)
    assert vocabulary.token_table[0, :2].tolist() == [400, 401]
    assert tok(vocabulary.text_of([1, 0]), add_special_tokens=False)["input_ids"] == [401, 404]


# --- trainable rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("model_kind", "tie"), MODELS)
def test_only_the_new_rows_train_beside_the_lora(kind, model_kind, tie):
    adapter, model, vocabulary, before = trained(kind, model_kind, tie)
    new = vocabulary.new_token_ids
    old = [i for i in range(407) if i not in new]
    after = rows_of(model)
    for rows_before, rows_after in zip(before, after, strict=True):
        assert torch.equal(rows_after[old], rows_before[old])
        assert (rows_after[new] != rows_before[new]).any(1).all()
    assert torch.equal(after[0], after[1]) == tie  # a tied head keeps using the embedding's rows
    token_names = {name for name in adapter.branch_parameters() if "token" in name}
    assert len(token_names) == (1 if tie else 2)
    assert all(p.abs().sum() > 0 for name, p in adapter.branch_parameters().items() if "lora_B" in name)
    assert all(adapter.branch_parameters()[name].requires_grad for name in token_names)
    assert token_names <= adapter.snapshot().keys()
    with adapter.disabled():
        assert all(torch.equal(a, b) for a, b in zip(rows_of(model), before, strict=True))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("model_kind", "tie"), MODELS)
def test_token_rows_save_load_and_give_fp32_last_logits(kind, model_kind, tie, tmp_path):
    adapter, _, vocabulary, _ = trained(kind, model_kind, tie)
    expected = logits_of(adapter, vocabulary)
    adapter.save(tmp_path / "adapter")
    loaded = load(coded(model_kind, tie)[1], tmp_path / "adapter")
    assert loaded.config() == adapter.config()
    assert torch.equal(logits_of(loaded, vocabulary), expected)
    if kind == "lora":  # a plain PEFT directory: PEFT alone loads it onto the base with the tokens added
        from peft import PeftModel

        plain = PeftModel.from_pretrained(coded(model_kind, tie)[1], str(tmp_path / "adapter")).eval()
        with torch.no_grad():
            assert torch.equal(plain(**forward_args(kind, vocabulary)).logits, expected)
    args = forward_args(kind, vocabulary)
    with torch.no_grad():
        assert torch.allclose(last_logits(adapter.model, **args), expected[:, -1], atol=1e-5)
        rows = last_logits(adapter.model, rows=vocabulary.new_token_ids, **args)
    assert torch.allclose(rows, expected[:, -1, vocabulary.new_token_ids], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_adapter_restores_the_token_rows_to_train_on(kind, tmp_path):
    """As a continual run resumes: the rows saved at a period's end, trainable again after loading."""
    adapter, model, vocabulary, _ = trained(kind, "qwen2", False)
    adapter.save(tmp_path / "adapter")
    rows = rows_of(model)
    train(adapter, vocabulary)
    assert not torch.equal(rows_of(model)[0], rows[0])
    base = coded("qwen2", False)[1]
    restored = load(base, tmp_path / "adapter", trainable=True)
    assert all(torch.equal(a, b) for a, b in zip(rows_of(base), rows, strict=True))
    token_rows = [p for name, p in restored.branch_parameters().items() if "token" in name]
    assert len(token_rows) == 2 and all(p.requires_grad for p in token_rows)  # untied: embedding and head
    train(restored, vocabulary)
    assert not torch.equal(rows_of(base)[0], rows[0])
    restored.freeze()
    assert not any(p.requires_grad for p in restored.model.parameters())


@pytest.mark.parametrize(("model_kind", "tie"), MODELS)
def test_a_lora_trains_token_rows_in_one_branch_only(model_kind, tie):
    adapter, model, vocabulary, _ = trained("lora", model_kind, tie)
    single = logits_of(adapter, vocabulary)
    with pytest.raises(LifeloraError, match="only one LoRA branch"):
        adapter.add_branch("second")
    adapter.add_branch("second", adapter_config("lora"))
    assert torch.equal(logits_of(adapter, vocabulary), single)  # a fresh branch adds zero
    adapter.remove_branch("second")
    embedding = adapter.model.get_input_embeddings().token_adapter.base_layer
    assert adapter.unload() is model and model.get_input_embeddings() is embedding
    assert type(embedding) is torch.nn.Embedding and type(model.get_output_embeddings()) is torch.nn.Linear


@pytest.mark.parametrize(("model_kind", "tie"), MODELS)
def test_personalized_token_rows_sum_over_branches_and_unload(model_kind, tie):
    adapter, model, vocabulary, before = trained("personalized", model_kind, tie)
    embedding = model.get_input_embeddings().base_layer
    single = logits_of(adapter, vocabulary)
    adapter.add_branch("second")
    assert torch.equal(logits_of(adapter, vocabulary), single)  # its zero rows add nothing
    assert any("token_delta" in name for name in adapter.branch_parameters("second"))
    adapter.remove_branch("second")
    assert torch.equal(logits_of(adapter, vocabulary), single)
    assert adapter.unload() is model and model.get_input_embeddings() is embedding
    assert type(model.get_output_embeddings()) is torch.nn.Linear
    assert (model.get_output_embeddings().weight is embedding.weight) == tie
    assert all(torch.equal(a, b) for a, b in zip(rows_of(model), before, strict=True))


def test_an_old_personalized_adapter_without_token_rows_loads(tmp_path):
    torch.manual_seed(1)
    adapter = attach(backbone(), adapter_config("personalized"), routing_dim=ROUTING_DIM)
    adapter.save(tmp_path / "old")
    saved = json.loads((tmp_path / "old" / "personalized_config.json").read_text())
    del saved["config"]["trainable_token_indices"]  # written before token rows existed
    (tmp_path / "old" / "personalized_config.json").write_text(json.dumps(saved))
    loaded = load(backbone(), tmp_path / "old")
    assert loaded.config().trainable_token_indices is None
    assert loaded.branch_parameters().keys() == adapter.branch_parameters().keys()


@pytest.mark.parametrize(("model_kind", "tie"), MODELS)
def test_a_personalized_instance_exports_its_token_rows_to_plain_peft(model_kind, tie, tmp_path):
    from peft import PeftModel

    adapter, _, vocabulary, _ = trained("personalized", model_kind, tie)
    ids, routing = code_batch(vocabulary)
    adapter.model.export_instance(routing[0], tmp_path / "user")
    plain = PeftModel.from_pretrained(coded(model_kind, tie)[1], str(tmp_path / "user")).eval()
    with torch.no_grad():
        ours = adapter.model(input_ids=ids[:1], routing=routing[:1]).logits
        assert torch.allclose(plain(input_ids=ids[:1]).logits, ours, atol=1e-5)


@pytest.mark.parametrize(("model_kind", "tie"), MODELS)
def test_modules_to_save_trains_every_row(model_kind, tie, tmp_path):
    from peft import PeftModel

    adapter, model, vocabulary, before = trained(
        "lora", model_kind, tie, trainable_token_indices=None, modules_to_save=["embed_tokens", "lm_head"]
    )
    new = vocabulary.new_token_ids
    old = [i for i in range(407) if i not in new]
    after = rows_of(model)
    for rows_before, rows_after in zip(before, after, strict=True):
        assert not torch.equal(rows_after[old], rows_before[old])
    assert torch.equal(after[0], after[1]) == tie  # PEFT trains one copy for a tied pair
    assert adapter.config().modules_to_save == ["embed_tokens", "lm_head"]  # PEFT edits its own copy
    adapter.save(tmp_path / "full")
    plain = PeftModel.from_pretrained(coded(model_kind, tie)[1], str(tmp_path / "full")).eval()
    with torch.no_grad():
        assert torch.equal(plain(**forward_args("lora", vocabulary)).logits, logits_of(adapter, vocabulary))
    with pytest.raises(LifeloraError, match="set one of them"):
        attach(
            coded(model_kind, tie)[1],
            adapter_config("lora", modules_to_save=["lm_head"], trainable_token_indices=new),
        )
