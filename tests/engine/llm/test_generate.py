from __future__ import annotations

import shutil
from pathlib import Path

from compress_engine.llm.generate import DEFAULT_PROMPTS, answer, side_by_side


def _hf_greedy(hf_dir: Path, prompt: str, max_new_tokens: int, chat: bool = True) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    if chat:
        messages = [{"role": "user", "content": prompt}]
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    new = [t for t in out[0, ids.shape[1] :].tolist() if t != tokenizer.eos_token_id]
    return tokenizer.decode(new, skip_special_tokens=True)


def test_it_answers_through_the_chat_template_like_pytorch(tiny_hf_dir, tiny_genai_dir):
    (text, tokens, tok_s), *_ = answer(tiny_genai_dir, DEFAULT_PROMPTS[:1], max_new_tokens=10)
    assert 1 <= tokens <= 10 and tok_s > 0
    assert text == _hf_greedy(tiny_hf_dir, DEFAULT_PROMPTS[0], 10)


def test_a_model_without_a_chat_template_gets_the_bare_prompt(
    tiny_hf_dir, tiny_genai_dir, tmp_path
):
    bare = shutil.copytree(tiny_genai_dir, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    [(text, tokens, _)] = answer(bare, ["The print function"], max_new_tokens=6, threads=1)
    assert tokens == 6
    assert text == _hf_greedy(tiny_hf_dir, "The print function", 6, chat=False)


def test_side_by_side_answers_each_prompt_with_both_models(tiny_genai_dir, noisy_genai_dir):
    generations = side_by_side(
        tiny_genai_dir, noisy_genai_dir, DEFAULT_PROMPTS, max_new_tokens=8, threads=1
    )
    assert [g.prompt for g in generations] == list(DEFAULT_PROMPTS)
    assert DEFAULT_PROMPTS[0] == "What is the capital of France?"
    for g in generations:
        assert 1 <= g.original_tokens <= 8 and 1 <= g.compressed_tokens <= 8
        assert g.original_tok_s and g.original_tok_s > 0
        assert g.compressed_tok_s and g.compressed_tok_s > 0
        assert isinstance(g.original, str) and isinstance(g.compressed, str)
    # Paired in prompt order, each model's answer its own.
    noisy = answer(noisy_genai_dir, DEFAULT_PROMPTS, max_new_tokens=8, threads=1)
    assert [g.compressed for g in generations] == [text for text, _, _ in noisy]
