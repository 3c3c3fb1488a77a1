"""Pretraining recipe: data + model + trainer composed; search, early bird, shrink, continued training (masked LM
for encoders, causal LM for decoders)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch

from earlybert.config import Choice, PathKind, Range, check_config, config_from_cli, to_dict
from earlybert.data.corpus import DataConfig, cached_wordpiece, load_tokenizer, sample_documents
from earlybert.data.prepare import check_cache_dir, corpus_key, prepare
from earlybert.errors import EarlyBertError
from earlybert.models.adapters import adapter_for_type, get_adapter, supported_families
from earlybert.train.trainer_config import (
    CheckpointConfig,
    DistillConfig,
    LogConfig,
    SearchConfig,
    TrainConfig,
    check_distill,
)

# New models are encoders trained from scratch with masked LM; decoders continue from `model.init_from`.
FAMILIES = tuple(f for f in supported_families() if not adapter_for_type(f).decoder)


@dataclass
class ModelConfig:
    """The model to pretrain."""

    init_from: Annotated[str, PathKind("folder")] = ""
    """Model folder to start from (plain HF or slim; a decoder continues with the causal-LM objective); empty: a new
    encoder with the sizes below."""
    gguf_file: str = ""
    """A GGUF file inside model.init_from to load instead of its safetensors (dequantized to fp32), e.g.
    SmolLM2-135M-Instruct.Q4_1.gguf; the tokenizer comes from it too."""
    family: Annotated[str, Choice(FAMILIES)] = "bert"
    """Family of a new model: bert, roberta, xlm-roberta, electra, distilbert, deberta-v2 or modernbert."""
    hidden_size: Annotated[int, Range(1)] = 768
    """Hidden width."""
    num_layers: Annotated[int, Range(1)] = 12
    """Encoder layers."""
    num_heads: Annotated[int, Range(1)] = 12
    """Attention heads per layer."""
    intermediate_size: Annotated[int, Range(1)] = 3072
    """FFN width."""
    vocab_size: Annotated[int, Range(1)] = 30522
    """Vocabulary size (a trained tokenizer gets this many entries)."""
    max_position_embeddings: Annotated[int, Range(1)] = 512
    """Longest sequence the position embeddings cover."""
    hidden_dropout: Annotated[float, Range(0, 1, open_high=True)] = 0.1
    """Dropout on hidden states."""
    attention_dropout: Annotated[float, Range(0, 1, open_high=True)] = 0.1
    """Dropout on attention probabilities."""

    def __post_init__(self):
        if not self.init_from and self.hidden_size % self.num_heads:
            raise EarlyBertError(f"model.hidden_size={self.hidden_size} is not a multiple of model.num_heads="
                                 f"{self.num_heads}: choose sizes where heads divide the width (e.g. 768 and 12)")
        folder = Path(self.init_from)
        if self.gguf_file:  # alone it is the shipped SmolLM2 config's file name; init_from comes on the command line
            if self.init_from and folder.is_dir() and not (folder / self.gguf_file).is_file():
                found = sorted(p.name for p in Path(self.init_from).glob("*.gguf"))
                raise EarlyBertError(f"model.gguf_file={self.gguf_file} is not in {self.init_from}: use one of "
                                     f"{', '.join(found) or '(no .gguf files there)'}")
        elif self.init_from and Path(self.init_from).is_dir() and not (Path(self.init_from) / "config.json").is_file():
            raise EarlyBertError(f"model.init_from={self.init_from} is not a model folder (no config.json): point "
                                 "it at a save_pretrained folder (or set model.gguf_file) or leave it empty")

    def model_type(self) -> str:
        """The model type to train: the init_from folder's (its config.json or GGUF header), else model.family."""
        if self.gguf_file and not self.init_from:
            raise EarlyBertError(f"model.gguf_file={self.gguf_file} needs model.init_from, its folder")
        if not self.init_from:
            return self.family
        from transformers import AutoConfig

        try:
            if self.gguf_file:
                return AutoConfig.from_pretrained(self.init_from, gguf_file=self.gguf_file).model_type
            return json.loads((Path(self.init_from) / "config.json").read_text()).get("model_type", "")
        except (OSError, ValueError, KeyError) as e:
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise EarlyBertError(f"the model in {self.init_from} cannot be read ({reason}): give a save_pretrained "
                                 "folder or a GGUF file of a supported family") from None


@dataclass
class PhaseConfig:
    """One training phase (BERT: 90% of steps at seq 128, then 10% at seq 512)."""

    steps: Annotated[int, Range(1)] = 0
    """Optimizer steps in this phase."""
    seq_len: Annotated[int, Range(8)] = 128
    """Block length in this phase."""
    micro_batch_size: Annotated[int, Range(1)] = 8
    """Sequences per rank per forward pass in this phase."""


@dataclass
class PretrainConfig:
    """A pretraining run."""

    output_dir: str = "runs/pretrain"
    """Run folder: checkpoints, ticket.json, summary.json, the final model in model/."""
    overwrite: bool = False
    """Start over in an output_dir that holds a run."""
    resume: Annotated[str, PathKind("folder", special=("auto",))] = ""
    """auto (the run's latest checkpoint), a run or checkpoint folder, or empty for a fresh start."""
    seed: int = 42
    """Seed for initialisation, data order, masking and dropout."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    phases: list[PhaseConfig] = field(default_factory=list)
    """Phases in order, their steps adding up to train.max_steps (grad_accum is shared); empty: one phase at
    data.seq_len and train.micro_batch_size."""

    def resolved_phases(self) -> list[PhaseConfig]:
        """The phases to run, checked against the step budget."""
        phases = self.phases or [PhaseConfig(self.train.max_steps, self.data.seq_len, self.train.micro_batch_size)]
        if sum(p.steps for p in phases) != self.train.max_steps:
            raise EarlyBertError(f"phases add up to {sum(p.steps for p in phases)} steps but train.max_steps is "
                                 f"{self.train.max_steps}: make them agree")
        return phases


def objective_task(cfg: PretrainConfig, family: str) -> str:
    """The pretraining task of a model of `family`: causal_lm (decoders), pretraining (BERT with NSP) or masked_lm;
    one line naming the supported families for any other."""
    adapter = adapter_for_type(family)
    if adapter.decoder:
        if cfg.data.nsp:
            raise EarlyBertError("data.nsp=true is for BERT encoders: a decoder continues with the causal-LM "
                                 "objective, set data.nsp=false")
        return "causal_lm"
    return "pretraining" if cfg.data.nsp else "masked_lm"


def build_model(cfg: PretrainConfig, tokenizer, task: str, family: str):
    """A new MLM model from the config sizes, or the one in `model.init_from` (a folder or a GGUF file), with the
    head of `task` (`objective_task`) for a model of `family`."""
    from earlybert.models.checkpoint import load_gguf_model, load_model

    if task not in adapter_for_type(family).hf_classes:
        raise EarlyBertError(f"data.nsp=true needs a BERT model (next-sentence prediction), not {family!r}: "
                             "set data.nsp=false or model.family=bert")
    if cfg.model.gguf_file:
        model = load_gguf_model(cfg.model.init_from, cfg.model.gguf_file)
    elif cfg.model.init_from:
        model = load_model(cfg.model.init_from, task=task)
    else:
        m = cfg.model
        adapter = adapter_for_type(m.family)
        config = adapter.new_config(m.vocab_size, m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size,
                                    m.max_position_embeddings, m.hidden_dropout, m.attention_dropout,
                                    **special_token_ids(tokenizer))
        torch.manual_seed(cfg.seed)
        model = adapter.hf_classes[task](config)
    if len(tokenizer) > model.config.vocab_size:
        raise EarlyBertError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                             f"{model.config.vocab_size}: use a matching tokenizer or raise model.vocab_size")
    limit = model.config.max_position_embeddings - adapter_for_type(model.config.model_type).position_offset
    longest = max(p.seq_len for p in cfg.resolved_phases())
    if longest > limit:
        raise EarlyBertError(f"sequence length {longest} exceeds the model's {limit} position embeddings: "
                             "lower data.seq_len (or the phases' seq_len) or raise model.max_position_embeddings")
    return model


def special_token_ids(tokenizer) -> dict[str, int]:
    """The tokenizer's special-token ids under the config names every family reads."""
    ids = {"pad_token_id": tokenizer.pad_token_id}
    for name in ("cls", "sep", "bos", "eos"):
        value = getattr(tokenizer, f"{name}_token_id", None)
        ids[f"{name}_token_id"] = value if value is not None else tokenizer.pad_token_id
    return ids


def get_tokenizer(cfg: PretrainConfig, run_dir: Path):
    """The configured tokenizer folder, else a WordPiece trained on the corpus's first
    `data.tokenizer_sample_mb` megabytes (cached, and saved in the run folder)."""
    if cfg.data.tokenizer:
        return load_tokenizer(cfg.data.tokenizer)
    if cfg.model.init_from:
        return load_tokenizer(cfg.model.init_from, cfg.model.gguf_file)
    saved = run_dir / "tokenizer"
    if (saved / "tokenizer.json").is_file():  # resuming: the same vocabulary as before
        return load_tokenizer(str(saved))
    check_cache_dir(cfg.data.cache_dir)
    mb = cfg.data.tokenizer_sample_mb
    return cached_wordpiece(lambda: sample_documents(cfg.data, mb), cfg.model.vocab_size, cfg.data.cache_dir,
                            f"{corpus_key(cfg.data)}:{mb}")


def check_same_corpus(cfg: PretrainConfig, run_dir: Path) -> None:
    """A resumed run must read the corpus it started on (its key is in the run folder's data.json)."""
    recorded = run_dir / "data.json"
    if cfg.data.streaming or not recorded.is_file():
        return
    if json.loads(recorded.read_text())["corpus_key"] != corpus_key(cfg.data):
        raise EarlyBertError(f"the corpus changed since {run_dir} started (a file's size, time or content differs): "
                             "resume with the same data.train_files, or start a new run (another output_dir)")


def load_inputs(cfg: PretrainConfig, run_dir: Path, resuming: bool):
    """(prepared corpus or None when streaming, tokenizer, model, search steps): everything that can reject
    the input, before any folder; the corpus is prepared last (once: later runs find it in the cache)."""
    if cfg.data.streaming and not cfg.data.dataset:
        raise EarlyBertError("data.streaming=true reads a `datasets` source: set data.dataset=NAME")
    family = cfg.model.model_type().removeprefix("slim_")  # from its config alone: bad input stops here
    task = objective_task(cfg, family)
    tokenizer = get_tokenizer(cfg, run_dir)
    model = build_model(cfg, tokenizer, task, family)
    if cfg.search.enabled and cfg.search.fraction_of == "epoch":
        raise EarlyBertError("search.fraction_of=epoch is for fine-tuning: pretraining lengths are steps or "
                             "fractions of the run (fraction_of=run)")
    # Pretraining continues from the searched weights (the search steps count toward the run) unless told otherwise.
    steps = cfg.search.resolve(cfg.train.max_steps, None, "continue") if cfg.search.enabled else None
    check_distill(cfg.distill, steps is not None and not cfg.search.ticket, "this run (no search or a given ticket)")
    cfg.search.check_given_ticket()
    if steps is not None:
        from earlybert.ticket.masks import with_kv_heads

        with_kv_heads(cfg.search.spec(), model)  # a head ratio the KV groups cannot share stops here
    if steps is not None and steps.weights == "rewind" and steps.slim_steps > cfg.train.max_steps:
        raise EarlyBertError(f"search.rewind_length={cfg.search.rewind_length:g} makes the rewound slim stage longer "
                             f"than the {cfg.train.max_steps} steps of data the run's phases hold: use "
                             "search.rewind_length <= 1")
    if resuming:
        check_same_corpus(cfg, run_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    corpus = None if cfg.data.streaming else prepare(cfg.data, tokenizer, log=print if main else lambda _: None,
                                                     progress=main and cfg.log.progress_bar)
    return corpus, tokenizer, model, steps


def run(cfg: PretrainConfig) -> dict:
    """Run (or resume) a pretraining job; returns the summary."""
    from earlybert.data.batches import PretrainBatches
    from earlybert.train.distributed import SharedFailures, barrier, setup_distributed
    from earlybert.train.engine import deepspeed_config
    from earlybert.train.objectives import CausalLMObjective, MaskedLMObjective, PretrainingObjective
    from earlybert.train.run_checkpoint import check_run_dir, resolve_resume, start_run_dir, write_summary
    from earlybert.train.trainer import Trainer

    check_config(cfg)
    run_dir = Path(cfg.output_dir)
    resume_from = resolve_resume(cfg.resume, run_dir)
    check_run_dir(run_dir, cfg.resume, cfg.overwrite)
    deepspeed_config(cfg.train, int(os.environ.get("WORLD_SIZE", "1")))
    corpus, tokenizer, model, steps = load_inputs(cfg, run_dir, resume_from is not None)
    dist = setup_distributed()
    with SharedFailures("earlybert pretrain"):
        start_run_dir(run_dir, cfg, cfg.overwrite, resume_from, dist.is_main)
        if dist.is_main and not (run_dir / "tokenizer" / "tokenizer.json").is_file():
            tokenizer.save_pretrained(str(run_dir / "tokenizer"))
        if dist.is_main and corpus is not None:
            (run_dir / "data.json").write_text(json.dumps({k: corpus.meta[k] for k in ("corpus_key", "tokenizer_key",
                                                                                     "documents", "tokens")}))
        barrier()
        phases, task = cfg.resolved_phases(), get_adapter(model).task_of(model)
        batches = PretrainBatches(cfg.data, phases, cfg.train.grad_accum, tokenizer, corpus, dist.rank,
                                  dist.world_size, cfg.seed, dist.is_main, causal=task == "causal_lm")
        objectives = {"causal_lm": CausalLMObjective, "pretraining": PretrainingObjective,
                      "masked_lm": MaskedLMObjective}
        torch.manual_seed(cfg.seed + dist.rank)
        trainer = Trainer(model=model, objective_cls=objectives[task],
                          batches=batches, train=cfg.train, search=cfg.search, search_steps=steps,
                          checkpoint=cfg.checkpoint, log=cfg.log, run_dir=run_dir, dist=dist, seq_len=phases[0].seq_len,
                          mlm_fraction=1.0 if task == "causal_lm" else cfg.data.mlm_probability,
                          save_extras=lambda folder: tokenizer.save_pretrained(str(folder)),
                          config_dict=to_dict(cfg), resume_from=resume_from, distill=cfg.distill)
        summary = trainer.fit()
        if dist.is_main:
            write_summary(run_dir, summary)
            print(f"done: {summary['steps']} steps; ticket drawn at step {summary['ticket_step']} "
                  f"(fired: {summary['fired']}); model in {run_dir / 'model'}", flush=True)
        return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point shared by `earlybert pretrain` and pretrain/run_pretrain.py."""
    try:
        run(config_from_cli(PretrainConfig, sys.argv[1:] if argv is None else argv, "earlybert pretrain"))
    except EarlyBertError as e:
        print(f"earlybert pretrain: error: {e}", file=sys.stderr)
        from earlybert.train.distributed import failed_exit_code

        return failed_exit_code()
    return 0


def prepare_main(argv: list[str] | None = None) -> int:
    """`earlybert prepare --config FILE`: train the tokenizer (if the run would) and tokenize the corpus into
    the cache, alone (on a CPU node, before the GPU job); the run then finds it and never tokenizes."""
    try:
        cfg = config_from_cli(PretrainConfig, sys.argv[1:] if argv is None else argv, "earlybert prepare")
        check_config(cfg)
        if cfg.data.streaming:
            raise EarlyBertError("data.streaming=true reads the dataset as it trains: there is nothing to prepare")
        tokenizer = get_tokenizer(cfg, Path(cfg.output_dir))
        prepare(cfg.data, tokenizer, progress=cfg.log.progress_bar)  # prints its one-line summary
    except EarlyBertError as e:
        print(f"earlybert prepare: error: {e}", file=sys.stderr)
        return 2
    return 0
