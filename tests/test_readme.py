"""The README's code runs as written."""

import re

import torch
from transformers import BertConfig, BertForMaskedLM

from earlybert.models.adapters import layer_sizes
from tests.conftest import REPO


def readme_block(after: str) -> str:
    """The first ```python block after the line starting with `after`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(after)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_the_plain_pytorch_loop_runs_as_written():
    code = readme_block("**3. A plain PyTorch loop**")
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=32))
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(20):
        ids = torch.randint(5, 100, (4, 16), generator=gen)
        batches.append({"input_ids": ids, "labels": ids.clone()})
    scope = {"torch": torch, "model": model, "batches": batches}
    exec(compile(code, "README.md", "exec"), scope)
    ticket, slim = scope["ticket"], scope["slim"]
    assert ticket.metadata["step"] <= 10  # max_search_steps=0.5 of the 20 steps
    heads, ffn = layer_sizes(slim)
    # 1 of 4 heads per layer; 40% of 128 neurons (51) pruned, widths rounded to multiples of 8
    assert heads == [3, 3] and all(w % 8 == 0 for w in ffn) and abs(sum(ffn) - (128 - 51)) <= 8
    with torch.no_grad():
        assert slim(**batches[0]).logits.shape == (4, 16, 100)
