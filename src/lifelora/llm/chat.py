"""The model's chat wrapper around a user message, for any task's prompt."""

from __future__ import annotations

# ReLLa's wrapper for models without a chat template (Vicuna's system line).
PLAIN_WRAPPER = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: ",
    " ASSISTANT:",
)


def chat_wrapper(tokenizer) -> tuple[str, str]:
    """The text before and after the user's message, ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        marker = "\x1fLIFELORA\x1f"
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
        )
        if rendered.count(marker) == 1:
            head, tail = rendered.split(marker)
            return head, tail
    return PLAIN_WRAPPER


def leading_bos(tokenizer, head: str) -> list[int]:
    """The BOS id when the tokenizer adds one and the wrapper does not already start with it."""
    bos = tokenizer.bos_token_id
    if bos is None or (tokenizer.bos_token and head.startswith(tokenizer.bos_token)):
        return []
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if probe and probe[0] == bos else []
