"""Fine-tuning recipe (GLUE, custom classification, SQuAD): modes full, earlybert, random and slim."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import torch

from earlybert.config import Choice, PathKind, Range, check_config, config_from_cli, to_dict
from earlybert.dsee.config import DseeConfig
from earlybert.errors import EarlyBertError
from earlybert.tasks.glue import TASKS
from earlybert.train.trainer_config import (
    CheckpointConfig,
    DistillConfig,
    LogConfig,
    SearchConfig,
    TrainConfig,
    check_distill,
)

MODES = ("full", "earlybert", "random", "slim", "dsee")
TASK_NAMES = (*TASKS, "custom", "squad", "squad_v2")


@dataclass
class FinetuneConfig:
    """A fine-tuning run."""

    task: Annotated[str, Choice(TASK_NAMES)] = "sst2"
    """GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), custom, squad or squad_v2."""
    model: Annotated[str, PathKind("folder")] = ""
    """Model folder (plain HF, slim, or a pretraining run's model/); its tokenizer must be there too."""
    data_dir: Annotated[str, PathKind("folder")] = ""
    """Local folder in the official layout (GLUE TSVs, SQuAD JSON); empty: the Hugging Face Hub."""
    mode: Annotated[str, Choice(MODES)] = "full"
    """full (baseline), earlybert (search, draw, shrink, train slim), random (random ticket), slim (as is), dsee
    (sparse plus low-rank updates, then a pruning step: see `dsee`)."""
    output_dir: str = "runs/finetune"
    """Run folder: eval_results.json, predictions, summary.json, the fine-tuned model in model/."""
    overwrite: bool = False
    """Start over in an output_dir that holds a run."""
    resume: Annotated[str, PathKind("folder", special=("auto",))] = ""
    """auto, a run or checkpoint folder, or empty."""
    seed: int = 42
    """Seed for the task head, data order, dropout and the random ticket."""
    epochs: Annotated[float, Range(0)] = 3.0
    """Training epochs (sets train.max_steps when > 0)."""
    max_seq_len: Annotated[int, Range(8)] = 128
    """Tokens per example (SQuAD: per window)."""
    doc_stride: Annotated[int, Range(1)] = 128
    """SQuAD: overlap between windows of a long context."""
    max_answer_len: Annotated[int, Range(1)] = 30
    """SQuAD: longest answer in tokens."""
    n_best: Annotated[int, Range(1)] = 20
    """SQuAD: start and end candidates considered."""
    eval_batch_size: Annotated[int, Range(1)] = 64
    """Examples per evaluation forward pass."""
    dynamic_padding: bool = True
    """Pad each batch (training and evaluation) to its longest example instead of max_seq_len: the same
    results, far less work on short texts."""
    group_by_length: bool = False
    """Order each window of 50 training batches longest first, so a batch holds examples of similar length
    (less padding with dynamic_padding; as the Hugging Face Trainer's group_by_length)."""
    text_columns: list[str] = field(default_factory=list)
    """custom task: the text column(s) of the files."""
    label_column: str = "label"
    """custom task: the label column."""
    num_labels: Annotated[int, Range(0)] = 0
    """custom task: classes (0: from labels.txt in data_dir)."""
    regression: bool = False
    """custom task: a real-valued label."""
    random_like: Annotated[str, PathKind("file")] = ""
    """mode=random: a learned ticket.json of the same model whose heads per layer and total FFN width the random
    ticket keeps (`earlybert compare` passes the earlybert run's of the same seed); empty: the search ratios."""
    eval_only: bool = False
    """mode=slim: score `model` on dev as it is, without training (a merged or already fine-tuned model; its task
    head must fit the task)."""
    baseline_dir: Annotated[str, PathKind("folder")] = ""
    """A full-mode run folder of the same task: summary.json reports the training time saved against it."""
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    dsee: DseeConfig = field(default_factory=DseeConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)


def load_task_data(cfg: FinetuneConfig, tokenizer):
    """(kind, data, train features) for the configured task."""
    from earlybert.tasks import glue, squad

    if cfg.task in ("squad", "squad_v2"):
        v2 = cfg.task == "squad_v2"
        if cfg.data_dir:
            version = "v2.0" if v2 else "v1.1"
            train = squad.read_squad(Path(cfg.data_dir) / f"train-{version}.json")
            dev = squad.read_squad(Path(cfg.data_dir) / f"dev-{version}.json")
        else:
            name = "rajpurkar/squad_v2" if v2 else "rajpurkar/squad"
            train, dev = squad.load_hub_squad(name, "train"), squad.load_hub_squad(name, "validation")
        return "squad", (train, dev), squad.train_features(tokenizer, train, cfg.max_seq_len, cfg.doc_stride)
    if cfg.task == "custom":
        task = glue.custom_task(cfg.text_columns, cfg.label_column, cfg.data_dir, cfg.num_labels, cfg.regression)
    else:
        task = glue.get_task(cfg.task)
    data = glue.load_local(task, cfg.data_dir) if cfg.data_dir else glue.load_hub(task)
    return "glue", data, glue.glue_features(tokenizer, data.train, cfg.max_seq_len, task.is_regression)


def baseline_train_time(folder: str) -> float:
    """The training time of a finished fine-tuning run (the baseline a run's time saved is measured against)."""
    path = Path(folder) / "summary.json"
    try:
        return float(json.loads(path.read_text())["train_time_s"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EarlyBertError(f"baseline_dir={folder} is not a finished fine-tuning run ({path} has no "
                             "train_time_s): give the output_dir of a mode=full fine-tuning run") from None


def load_inputs(cfg: FinetuneConfig):
    """(tokenizer, task kind, data, features, model, objective, search steps): every check before any folder.

    Sets `train.max_steps` from `epochs` (the full run's length, which fractional search settings refer to).
    """
    from earlybert.data.corpus import load_tokenizer
    from earlybert.models.checkpoint import load_model
    from earlybert.train.objectives import ClassificationObjective, QuestionAnsweringObjective

    if not cfg.model:
        raise EarlyBertError("no model given: set model=FOLDER (a pretrained encoder of a supported family, "
                             "with its tokenizer)")
    if cfg.baseline_dir:
        baseline_train_time(cfg.baseline_dir)
    tokenizer = load_tokenizer(cfg.model)
    kind, data, features = load_task_data(cfg, tokenizer)
    t = cfg.train
    global_batch = t.micro_batch_size * t.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    examples = len(next(iter(features.values())))
    epoch_steps = math.ceil(examples / global_batch)
    if cfg.epochs > 0:
        t.max_steps = max(1, math.ceil(cfg.epochs * examples / global_batch))
    torch.manual_seed(cfg.seed)  # the task head's initialisation
    if kind == "squad":
        model, objective = load_model(cfg.model, task="question_answering"), QuestionAnsweringObjective
    else:
        model = load_model(cfg.model, task="sequence_classification", num_labels=data.task.num_labels)
        objective = ClassificationObjective
    cfg.search.enabled = cfg.mode == "earlybert"
    # Fine-tuning tickets rewind to the pretrained weights (the authors' protocol) unless told otherwise.
    steps = cfg.search.resolve(t.max_steps, epoch_steps, "rewind") if cfg.search.enabled else None
    check_distill(cfg.distill, steps is not None and not cfg.search.ticket, f"mode={cfg.mode}")
    cfg.search.check_given_ticket()
    if cfg.mode in ("earlybert", "random"):
        from earlybert.ticket.masks import with_kv_heads

        with_kv_heads(cfg.search.spec(), model)  # a head ratio the KV groups cannot share stops here
    return tokenizer, kind, data, features, model, objective, steps


def check_task_head(folder: str, kind: str, num_labels: int) -> None:
    """Refuse to evaluate a model folder without a trained head for the task (or with one of another size)."""
    raw = json.loads((Path(folder) / "config.json").read_text())
    arch = (raw.get("architectures") or [""])[0]
    suffix = "ForQuestionAnswering" if kind == "squad" else "ForSequenceClassification"
    if not arch.endswith(suffix):
        raise EarlyBertError(f"eval_only=true needs a fine-tuned model with its task head; {folder} holds a "
                             f"{arch or 'model without architectures'}: fine-tune it first")
    found = len(raw.get("id2label") or {}) or raw.get("num_labels", 2)
    if kind == "glue" and found != num_labels:
        raise EarlyBertError(f"{folder} has a {found}-label head, the task {num_labels} labels: evaluate it on the "
                             "task it was fine-tuned for")


def evaluate_only(cfg: FinetuneConfig) -> dict:
    """Score `model` on dev as it is: eval_results.json, predictions and summary.json in output_dir."""
    from earlybert.data.corpus import load_tokenizer
    from earlybert.tasks.evaluation import evaluate_run
    from earlybert.train.run_checkpoint import check_run_dir, start_run_dir, write_summary

    check_config(cfg)
    if cfg.mode != "slim":
        raise EarlyBertError(f"eval_only=true evaluates the model as it is: use mode=slim, not mode={cfg.mode}")
    if not cfg.model:
        raise EarlyBertError("no model given: set model=FOLDER (a fine-tuned model with its tokenizer)")
    run_dir = Path(cfg.output_dir)
    check_run_dir(run_dir, "", cfg.overwrite)
    tokenizer = load_tokenizer(cfg.model)
    kind, data, _ = load_task_data(cfg, tokenizer)
    check_task_head(cfg.model, kind, 0 if kind == "squad" else data.task.num_labels)
    start_run_dir(run_dir, cfg, cfg.overwrite, None, True)
    summary = evaluate_run(cfg, kind, data, tokenizer, run_dir, {"time_s": {}}, model_dir=Path(cfg.model))
    write_summary(run_dir, summary)
    return summary


def fit(cfg: FinetuneConfig, model, objective, features, steps, run_dir: Path, resume_from: Path | None, dist,
        tokenizer, max_steps: int | None = None) -> dict:
    """Train `model` on `features` in `run_dir` (its checkpoints, metrics and model/); returns the trainer's summary."""
    from earlybert.data.batches import ExampleBatches
    from earlybert.train.trainer import Trainer

    t = cfg.train if max_steps is None else replace(cfg.train, max_steps=max_steps)
    batches = ExampleBatches(features, t.micro_batch_size, t.grad_accum, dist.rank, dist.world_size, cfg.seed,
                             cfg.dynamic_padding, cfg.group_by_length)
    trainer = Trainer(model=model, objective_cls=objective, batches=batches, train=t, search=cfg.search,
                      search_steps=steps, checkpoint=cfg.checkpoint, log=cfg.log, run_dir=run_dir, dist=dist,
                      seq_len=cfg.max_seq_len, save_extras=lambda folder: tokenizer.save_pretrained(str(folder)),
                      config_dict=to_dict(cfg), resume_from=resume_from, distill=cfg.distill)
    return trainer.fit()


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune, evaluate on dev, write predictions and summary; returns the summary."""
    from earlybert.tasks.evaluation import evaluate_run
    from earlybert.ticket.masks import random_ticket
    from earlybert.ticket.ticket import Ticket
    from earlybert.train.distributed import SharedFailures, barrier, setup_distributed
    from earlybert.train.engine import deepspeed_config
    from earlybert.train.run_checkpoint import check_run_dir, resolve_resume, start_run_dir, write_summary

    if cfg.eval_only:
        return evaluate_only(cfg)
    if cfg.mode == "dsee":
        from earlybert.recipes.dsee import run_dsee

        return run_dsee(cfg)
    check_config(cfg)
    run_dir = Path(cfg.output_dir)
    resume_from = resolve_resume(cfg.resume, run_dir)
    check_run_dir(run_dir, cfg.resume, cfg.overwrite)
    tokenizer, kind, data, features, model, objective, steps = load_inputs(cfg)
    deepspeed_config(cfg.train, int(os.environ.get("WORLD_SIZE", "1")))
    dist = setup_distributed()
    with SharedFailures("earlybert finetune"):
        start_run_dir(run_dir, cfg, cfg.overwrite, resume_from, dist.is_main)
        if cfg.mode == "random" and resume_from is None:
            if dist.is_main:
                like = Ticket.load(cfg.random_like) if cfg.random_like else None
                random_ticket(model, cfg.search.spec(), seed=cfg.seed, like=like).save(run_dir / "ticket.json")
            cfg.search.ticket = str(run_dir / "ticket.json")
        barrier()
        summary = fit(cfg, model, objective, features, steps, run_dir, resume_from, dist, tokenizer)
        if dist.is_main:
            summary = evaluate_run(cfg, kind, data, tokenizer, run_dir, summary)
            write_summary(run_dir, summary)
        barrier()
        return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of `earlybert finetune glue|squad` and finetune/run_*.py."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kind = argv.pop(0) if argv and argv[0] in ("glue", "squad") else "glue"
    try:
        cfg = config_from_cli(FinetuneConfig, argv, f"earlybert finetune {kind}")
        if kind == "squad" and cfg.task not in ("squad", "squad_v2"):
            raise EarlyBertError(f"task={cfg.task!r} is not a SQuAD task: use task=squad or task=squad_v2")
        if kind == "glue" and cfg.task in ("squad", "squad_v2"):
            raise EarlyBertError(f"task={cfg.task} belongs to `earlybert finetune squad`: run that command instead")
        if not (cfg.log.progress_bar and sys.stderr.isatty()):  # as the trainer's own bar: none in logs
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        summary = run(cfg)
    except EarlyBertError as e:
        print(f"earlybert finetune: error: {e}", file=sys.stderr)
        from earlybert.train.distributed import failed_exit_code

        return failed_exit_code()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary.get("eval", {}), indent=1))
    return 0
