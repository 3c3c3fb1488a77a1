"""The Hugging Face Trainer integration: search, draw, shrink and slim training inside `transformers.Trainer`."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    TrainerCallback,
    TrainingArguments,
)

import earlybert  # noqa: F401
from earlybert.integrations.hf import EarlyBertTrainer
from earlybert.ticket.coefficients import ffn_coefficients, head_coefficients
from earlybert.ticket.search import SearchConfig
from tests.conftest import REPO, SHARED, clean_env

BBC = SHARED / "data" / "bbc-topic"


class Examples(torch.utils.data.Dataset):
    def __init__(self, features: dict):
        self.features = features

    def __len__(self):
        return len(self.features["labels"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.features.items()}


@pytest.fixture(scope="module")
def bbc(minilm_path):
    """128 training and 48 dev articles of the real bbc-topic task, tokenized with MiniLM's vocabulary."""
    if not BBC.is_dir():
        pytest.skip(f"{BBC} is missing: the real labelled task lives in ../shared/data")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)

    def read(split, n):
        with open(BBC / f"{split}.tsv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]
        enc = tokenizer([r["sentence"] for r in rows], truncation=True, max_length=32, padding="max_length",
                        return_tensors="pt")
        return Examples({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                         "labels": torch.tensor([int(r["label"]) for r in rows])})

    return read("train", 128), read("dev", 48), tokenizer


def two_layer_bert(seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


def arguments(out, **extra):
    settings = {"per_device_train_batch_size": 8, "num_train_epochs": 2, "learning_rate": 1e-3,
                "report_to": [], "save_strategy": "no", "logging_steps": 100, "use_cpu": True,
                "disable_tqdm": True, "seed": 7, **extra}
    return TrainingArguments(output_dir=str(out), **settings)


def rate_recorder(rates: list, event: str) -> TrainerCallback:
    """A callback that appends every parameter group's (is coefficients, learning rate) at `event`."""

    def record(self, args, state, control, optimizer=None, **kwargs):
        rates.append([(bool(g.get("coefficients")), g["lr"]) for g in optimizer.param_groups])

    return type("RateRecorder", (TrainerCallback,), {event: record})()


def test_trainer_searches_draws_shrinks_and_saves_a_loadable_slim_model(bbc, tmp_path):
    train, dev, tokenizer = bbc
    search = SearchConfig(check_every=1, window=2, threshold=1.0, max_search_steps=0.25, heads_ratio=0.5,
                          ffn_ratio=0.5)
    trainer = EarlyBertTrainer(model=two_layer_bert(), args=arguments(tmp_path), train_dataset=train,
                               eval_dataset=dev, processing_class=tokenizer, search=search)
    result = trainer.train()
    ticket = json.loads((tmp_path / "ticket.json").read_text())
    # Any two untied checks in a row fire (threshold 1.0), well before the limit (step 8 of the 32-step run);
    # Adam's first steps move coefficients by +-lr alike, so the first checks are ties and cannot fire.
    assert ticket["drawn_by"] == "fired" and ticket["fired"] and 2 <= ticket["step"] < 8
    assert ticket["distance_history"][0]["tied"] and not ticket["distance_history"][-1]["tied"]
    assert [sum(layer) for layer in ticket["heads"]] == [2, 2]
    assert result.global_step == 32  # rewind: the slim model trains as long as the full run
    assert type(trainer.model).__name__ == "SlimBertForSequenceClassification"
    assert "eval_loss" in trainer.evaluate()
    assert trainer.predict(dev).predictions.shape == (48, 5)
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    batch = {k: dev.features[k][:8] for k in ("input_ids", "attention_mask")}
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trainer.model(**batch).logits, atol=1e-6)


def test_the_coefficients_keep_their_learning_rate_while_the_models_decays(bbc, tmp_path):
    train, _, _ = bbc
    rates = []
    search = SearchConfig(check_every=1, window=2, threshold=0.0, max_search_steps=0.5, coefficient_lr=0.05)
    trainer = EarlyBertTrainer(model=two_layer_bert(), args=arguments(tmp_path, warmup_steps=4), train_dataset=train,
                               search=search, callbacks=[rate_recorder(rates, "on_step_end")])
    trainer.train()
    searching = [r for r in rates if any(coefficients for coefficients, _ in r)]
    assert len(searching) == 16  # no early bird at threshold 0.0: the search runs to step 16 of 32
    assert {lr for r in searching for coefficients, lr in r if coefficients} == {0.05}
    model = [next(lr for coefficients, lr in r if not coefficients) for r in searching]
    assert model[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # warm-up, then linear decay over 32 steps
    assert model[-1] == pytest.approx(1e-3 * (32 - 16) / (32 - 4))


def test_rewarmup_ramps_the_continued_schedule_back_from_zero(bbc, tmp_path):
    train, _, _ = bbc
    rates = []
    search = SearchConfig(draw_at=8, weights="continue", rewarmup=4)
    trainer = EarlyBertTrainer(model=two_layer_bert(), args=arguments(tmp_path, lr_scheduler_type="constant"),
                               train_dataset=train, search=search, callbacks=[rate_recorder(rates, "on_step_begin")])
    trainer.train()
    slim = [r[0][1] for r in rates if not any(coefficients for coefficients, _ in r)]
    assert len(rates) - len(slim) == 8 and len(slim) == 24  # the slim stage continues the 32-step run
    assert slim[:6] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_rewarmup_with_a_schedule_it_cannot_ramp_is_refused_before_the_search(bbc, tmp_path):
    train, dev, _ = bbc
    args = arguments(tmp_path, lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="epoch")
    trainer = EarlyBertTrainer(model=two_layer_bert(), args=args, train_dataset=train, eval_dataset=dev,
                               search=SearchConfig(draw_at=8, weights="continue", rewarmup=4))
    with pytest.raises(ValueError, match="search.rewarmup ramps a step schedule; reduce_lr_on_plateau has none"):
        trainer.train()
    assert not (tmp_path / "ticket.json").exists() and trainer.state.global_step == 0


@pytest.mark.parametrize("family", ["xlm-roberta", "electra", "distilbert", "deberta-v2", "modernbert"])
def test_trainer_slims_every_family(family, bbc, tmp_path):
    from earlybert.models.adapters import adapter_for_type
    from tests.conftest import tiny_model

    train, dev, tokenizer = bbc
    model = tiny_model(family, "sequence_classification", vocab_size=30522, num_labels=5,
                       max_positions=128 + adapter_for_type(family).position_offset)
    search = SearchConfig(check_every=1, window=2, threshold=1.0, max_search_steps=0.25, heads_ratio=0.5,
                          ffn_ratio=0.5)
    trainer = EarlyBertTrainer(model=model.train(), args=arguments(tmp_path, num_train_epochs=1),
                               train_dataset=train, eval_dataset=dev, processing_class=tokenizer, search=search)
    trainer.train()
    assert [sum(layer) for layer in json.loads((tmp_path / "ticket.json").read_text())["heads"]] == [2, 2]
    assert type(trainer.model).__name__ == "Slim" + type(model).__name__
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    batch = {k: dev.features[k][:8] for k in ("input_ids", "attention_mask")}
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trainer.model(**batch).logits, atol=1e-6)


class FirstGradients(TrainerCallback):
    """The coefficient gradients just before the first optimizer step."""

    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = [c.grad.clone() for c in head_coefficients(model) + ffn_coefficients(model)]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_l1_term_counts_once_per_optimizer_step(bbc, tmp_path, accumulation):
    train, _, _ = bbc
    grads = {}
    for lam in (0.0, 0.5):
        probe = FirstGradients()
        search = SearchConfig(lambda_heads=lam, lambda_ffn=lam, max_search_steps=0.5)
        trainer = EarlyBertTrainer(model=two_layer_bert(), args=arguments(tmp_path / str(lam), max_steps=4,
                                   gradient_accumulation_steps=accumulation, per_device_train_batch_size=4,
                                   max_grad_norm=0.0),  # clipping would rescale what is measured
                                   train_dataset=train, callbacks=[probe], search=search)
        trainer.train()
        grads[lam] = probe.grads
    # All coefficients start at +1: the L1 term adds exactly lambda * sign(c) = 0.5 to every gradient.
    for with_l1, without in zip(grads[0.5], grads[0.0]):
        assert torch.allclose(with_l1 - without, torch.full_like(without, 0.5), atol=1e-5)


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("interrupted on purpose")


def interrupt_and_resume(bbc, tmp_path, search: SearchConfig):
    """An uninterrupted run, and a run stopped at step 6 of its stage and resumed from its last checkpoint."""
    train, _, _ = bbc
    settings = {"save_strategy": "steps", "save_steps": 4, "max_steps": 16}
    reference = EarlyBertTrainer(model=two_layer_bert(), args=arguments(tmp_path / "ref", **settings),
                                 train_dataset=train, search=search)
    reference.train()
    interrupted = EarlyBertTrainer(model=two_layer_bert(), args=arguments(tmp_path / "run", **settings),
                                   train_dataset=train, search=search, callbacks=[StopAt(6)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    stopped_in_search = not (tmp_path / "run" / "ticket.json").exists()
    # A differently initialised model: everything must come from the checkpoint and the run folder.
    resumed = EarlyBertTrainer(model=two_layer_bert(seed=1), args=arguments(tmp_path / "run", **settings),
                               train_dataset=train, search=search)
    result = resumed.train(resume_from_checkpoint=True)
    return reference, resumed, result, stopped_in_search


def same_logits(bbc, a, b) -> bool:
    batch = {k: bbc[1].features[k][:8] for k in ("input_ids", "attention_mask")}
    a.model.eval()
    b.model.eval()
    with torch.no_grad():
        return torch.allclose(a.model(**batch).logits, b.model(**batch).logits, atol=1e-4)


def test_a_checkpoint_taken_during_the_search_resumes(bbc, tmp_path):
    search = SearchConfig(check_every=1, window=3, threshold=0.0, max_search_steps=8)
    reference, resumed, _, stopped_in_search = interrupt_and_resume(bbc, tmp_path, search)
    assert stopped_in_search and (tmp_path / "run" / "checkpoint-4").is_dir()
    expected = json.loads((tmp_path / "ref" / "ticket.json").read_text())
    got = json.loads((tmp_path / "run" / "ticket.json").read_text())
    assert (got["step"], got["heads"], got["ffn"]) == (expected["step"], expected["heads"], expected["ffn"])
    assert len(got["distance_history"]) == len(expected["distance_history"])
    assert same_logits(bbc, reference, resumed)


def test_a_checkpoint_taken_in_the_slim_stage_resumes(bbc, tmp_path):
    search = SearchConfig(check_every=1, threshold=0.0, max_search_steps=4)
    reference, resumed, result, stopped_in_search = interrupt_and_resume(bbc, tmp_path, search)
    # Stopped at step 6 of the slim stage (the search ends at step 4), resumed from slim/checkpoint-4.
    assert not stopped_in_search and (tmp_path / "run" / "slim" / "checkpoint-4").is_dir()
    assert result.global_step == 16
    assert same_logits(bbc, reference, resumed)


@pytest.mark.slow
def test_the_example_script_runs_end_to_end(minilm_path, tmp_path):
    if not BBC.is_dir():
        pytest.skip(f"{BBC} is missing: the real labelled task lives in ../shared/data")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "finetune/hf_trainer_glue.py", "--model_name_or_path", minilm_path,
                           "--data_dir", str(BBC), "--output_dir", str(out), "--max_steps", "6",
                           "--per_device_train_batch_size", "8", "--max_seq_length", "32", "--use_cpu",
                           "--report_to", "none", "--save_strategy", "no", "--max_search_steps", "2",
                           "--heads_ratio", "0.5", "--ffn_ratio", "0.5"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "ticket.json").read_text())["step"] == 2
    assert "eval_accuracy" in json.loads((out / "eval_results.json").read_text())
    slim = AutoModelForSequenceClassification.from_pretrained(out)
    assert slim.config.layer_num_heads == [6] * 6


DEEPSPEED_RUN = """
import json, sys, torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments
from earlybert.integrations.hf import EarlyBertTrainer
from earlybert.ticket.search import SearchConfig

class Rows(torch.utils.data.Dataset):
    def __len__(self): return 64
    def __getitem__(self, i):
        return {"input_ids": torch.randint(5, 100, (16,), generator=torch.Generator().manual_seed(i)),
                "labels": torch.tensor(i % 3)}

torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64, num_labels=3))
ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
      "gradient_clipping": "auto", "zero_optimization": {"stage": int(sys.argv[2])},
      "zero_force_ds_cpu_optimizer": False}
args = TrainingArguments(output_dir=sys.argv[1], per_device_train_batch_size=8, max_steps=16, report_to=[],
                         save_strategy="no", deepspeed=ds, use_cpu=True, disable_tqdm=True)
trainer = EarlyBertTrainer(model=model, args=args, train_dataset=Rows(), search=SearchConfig(check_every=1,
                                                                                               max_search_steps=4))
result = trainer.train()
print("RESULT", result.global_step, type(trainer.model).__name__, json.load(open(sys.argv[1] + "/ticket.json"))["step"])
"""


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "expected"), [(2, "RESULT 16 SlimBertForSequenceClassification 4"),
                                                 (3, "ZeRO stage 3 partitions the coefficients")])
def test_training_arguments_with_deepspeed(tmp_path, stage, expected):
    """Under `TrainingArguments(deepspeed=...)` (one CPU rank, as the deepspeed launcher would start it)."""
    script = tmp_path / "run.py"
    script.write_text(DEEPSPEED_RUN)
    env = clean_env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29600 + stage),
                    DS_ACCELERATOR="cpu")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), str(stage)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert expected in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
