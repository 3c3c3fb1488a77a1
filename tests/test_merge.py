import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from earlybert.cli import main
from earlybert.models.checkpoint import load_model
from earlybert.ticket.shrink import shrink_model
from earlybert.ticket.ticket import Ticket
from tests.conftest import random_inputs, tiny_model
from tests.task_fixtures import make_tiny_bert, make_tiny_model


def fine_tuned(base: Path, out: Path, num_labels: int, seed: int, scale: float = 0.01) -> Path:
    """`base` with a new task head of `num_labels` classes and its body moved by seeded noise, saved with its
    tokenizer."""
    model = load_model(base, task="sequence_classification", num_labels=num_labels)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.base_model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (base / name).is_file():
            (out / name).write_bytes((base / name).read_bytes())
    return out


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A tiny BERT base with its tokenizer and two models fine-tuned from it with 3- and 2-class heads."""
    root = tmp_path_factory.mktemp("merge")
    base = make_tiny_bert(root / "base")
    return {"root": root, "base": base, "a": fine_tuned(base, root / "a", 3, seed=1),
            "b": fine_tuned(base, root / "b", 2, seed=2)}


def bodies(*folders: Path) -> list[dict[str, torch.Tensor]]:
    return [{k: v for k, v in load_model(f).state_dict().items() if k.startswith("bert.")} for f in folders]


def test_average_writes_one_complete_model_per_input_with_its_own_head(family, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", "--method", "average", "--base", str(family["base"]), str(family["a"]), str(family["b"]),
                 "--output", str(out)]) == 0
    assert "wrote 2 merged models (average)" in capsys.readouterr().out
    merged_a = AutoModelForSequenceClassification.from_pretrained(out / "1")
    merged_b = AutoModelForSequenceClassification.from_pretrained(out / "2")
    assert (merged_a.config.num_labels, merged_b.config.num_labels) == (3, 2)
    (a, b), (ma, mb) = bodies(family["a"], family["b"]), bodies(out / "1", out / "2")
    for name in a:
        torch.testing.assert_close(ma[name], (a[name] + b[name]) / 2)
        torch.testing.assert_close(mb[name], ma[name])
    for own, merged in ((family["a"], merged_a), (family["b"], merged_b)):  # task heads stay per model
        torch.testing.assert_close(merged.classifier.weight, load_model(own).classifier.weight)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in (out / "2").iterdir()}
    assert json.loads((out / "merge.json").read_text())["models"] == [str(family["a"]), str(family["b"])]


def test_rankmean_weights_each_layer_by_the_rank_of_its_change(family, tmp_path):
    # Model a changes layer 1 by far more than layer 0, model b the reverse: each layer leans to the model that
    # changed it most (ranks 1 and 2 -> weights 1/3 and 2/3).
    base = load_model(family["base"], task="sequence_classification", num_labels=3)
    root = tmp_path / "models"
    models = []
    for i, big in enumerate((1, 0)):
        m = load_model(family["base"], task="sequence_classification", num_labels=3)
        with torch.no_grad():
            for name, p in m.bert.encoder.named_parameters():
                p.add_(0.5 if name.startswith(f"layer.{big}.") else 0.01)
        m.save_pretrained(root / str(i))
        models.append(m)
    base.save_pretrained(root / "base")
    out = tmp_path / "merged"
    assert main(["merge", "--base", str(root / "base"), str(root / "0"), str(root / "1"), "--output", str(out)]) == 0
    weights = json.loads((out / "merge.json").read_text())["weights"]
    assert weights["encoder.layer.1."] == {"1": pytest.approx(2 / 3), "2": pytest.approx(1 / 3)}
    assert weights["encoder.layer.0."] == {"1": pytest.approx(1 / 3), "2": pytest.approx(2 / 3)}
    merged = load_model(out / "1").bert.encoder.layer[1].output.dense.weight
    start = base.bert.encoder.layer[1].output.dense.weight
    torch.testing.assert_close(merged, start + 2 / 3 * 0.5 + 1 / 3 * 0.01)


def test_merged_slim_models_reload_with_the_auto_classes_to_the_same_logits(family, tmp_path):
    ticket = Ticket("bert", heads=[[1, 0, 1, 1], [1, 1, 0, 0]], ffn=[[1] * 40 + [0] * 8, [1] * 24 + [0] * 24])
    slim = shrink_model(load_model(family["base"], task="sequence_classification", num_labels=3), ticket)
    slim.save_pretrained(tmp_path / "slim")
    a = fine_tuned(tmp_path / "slim", tmp_path / "a", 3, seed=3)
    b = fine_tuned(tmp_path / "slim", tmp_path / "b", 3, seed=4)
    out = tmp_path / "merged"
    assert main(["merge", "--method", "task_arithmetic", "--scale", "0.3", "--base", str(tmp_path / "slim"),
                 str(a), str(b), "--output", str(out)]) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(out / "1").eval()
    assert merged.config.model_type == "slim_bert"
    inputs = random_inputs(merged)
    again = AutoModelForSequenceClassification.from_pretrained(out / "1").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, again(**inputs).logits)
    (ba, bb), (start,), (mine,) = bodies(a, b), bodies(tmp_path / "slim"), bodies(out / "1")
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    torch.testing.assert_close(mine[name], start[name] + 0.3 * (ba[name] - start[name] + bb[name] - start[name]))


def bad_cases(family, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Case -> (arguments after `merge`, what the error line must say)."""
    roberta = str(make_tiny_model(tmp / "roberta", "roberta"))
    narrow = tmp / "narrow"
    config = load_model(family["a"]).config
    config.intermediate_size = 40  # the same model but for its FFN width
    type(load_model(family["a"]))(config).save_pretrained(narrow)
    other_base = tmp / "other-base"
    tiny_model("bert", "base", hidden_size=16, num_heads=2).save_pretrained(other_base)
    a, b, base, out = str(family["a"]), str(family["b"]), str(family["base"]), str(tmp / "merged")
    return {
        "family": (["--base", base, a, roberta, "--output", out], "is a roberta model"),
        "shape": (["--base", base, a, str(narrow), "--output", out],
                  "tensor encoder.layer.0.intermediate.dense.weight is [48, 32]"),
        "base": (["--base", str(other_base), a, b, "--output", out],
                 "is not the models' common parent: tensor encoder.layer.0."),
        "single": (["--base", base, a, "--output", out], "merging needs at least 2 models, got 1"),
        "method": (["--method", "median", "--base", base, a, b, "--output", out], "unknown merge method 'median'"),
        "missing": (["--base", base, a, str(tmp / "nothing"), "--output", out], "is not a model folder"),
        "output-is-input": (["--base", base, a, b, "--output", a], "would replace the input"),
    }


@pytest.mark.parametrize("case", ["family", "shape", "base", "single", "method", "missing", "output-is-input"])
def test_bad_merge_input_is_one_line_exit_2_and_writes_nothing(family, tmp_path, capsys, case):
    args, message = bad_cases(family, tmp_path)[case]
    assert main(["merge", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "merged").exists()
    assert load_model(family["a"]).config.num_labels == 3  # the inputs are untouched


def test_one_ticket_many_tasks_workflow_draw_shrink_finetune_merge_evaluate(tmp_path, capsys):
    from earlybert.recipes.finetune import main as finetune_main
    from tests.conftest import REPO
    from tests.task_fixtures import make_glue_task

    glue = str(REPO / "configs/finetune/glue.yaml")
    fast = ["epochs=2", "train.micro_batch_size=8", "train.lr=1e-3", "search.check_every=1",
            "search.max_search_steps=2", "search.window=2", "log.progress_bar=false"]
    tiny = make_tiny_bert(tmp_path / "tiny")
    tasks = {"sst2": make_glue_task("sst2", tmp_path / "sst2"), "rte": make_glue_task("rte", tmp_path / "rte")}

    def finetune(task, model, out, *extra):
        code = finetune_main(["glue", "--config", glue, f"task={task}", f"model={model}",
                              f"data_dir={tasks[task]}", f"output_dir={out}", *fast, *extra])
        assert code == 0, capsys.readouterr().err[-2000:]
        return json.loads((out / "summary.json").read_text())

    finetune("sst2", tiny, tmp_path / "search", "mode=earlybert")  # the ticket, drawn once
    assert main(["shrink", "--model", str(tiny), "--ticket", str(tmp_path / "search" / "ticket.json"), "--output",
                 str(tmp_path / "slim")]) == 0
    for task in tasks:
        finetune(task, tmp_path / "slim", tmp_path / "runs" / task, "mode=slim")
    models = [str(tmp_path / "runs" / task / "model") for task in tasks]
    assert main(["merge", "--base", str(tmp_path / "slim"), *models, "--output", str(tmp_path / "merged")]) == 0
    for i, task in enumerate(tasks, start=1):
        summary = finetune(task, tmp_path / "merged" / str(i), tmp_path / "eval" / task, "mode=slim", "eval_only=true")
        assert 0.0 <= summary["eval"]["accuracy"] <= 1.0
        assert (tmp_path / "eval" / task / "dev_predictions.tsv").is_file()
    (one,), (two,) = bodies(tmp_path / "merged" / "1"), bodies(tmp_path / "merged" / "2")
    assert all(torch.equal(one[k], two[k]) for k in one) and load_model(tmp_path / "merged" / "1").num_parameters() \
        < load_model(tiny).num_parameters()
