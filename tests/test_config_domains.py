"""Every config field with a declared domain (a range, a set of choices, a kind of path) refuses a value outside
it: one line on stderr naming the key, exit code 2, nothing created. The cases are generated from the
declarations, so a new constrained field gets its case without a test being written."""

import dataclasses
import typing

import pytest

from earlybert.cli import main
from earlybert.config import Choice, Range, domains
from earlybert.recipes.compare import CompareConfig
from earlybert.recipes.finetune import FinetuneConfig
from earlybert.recipes.pretrain import PretrainConfig
from tests.conftest import REPO
from tests.task_fixtures import make_glue_task, make_tiny_bert

GLUE = str(REPO / "configs/finetune/glue.yaml")
TINY = str(REPO / "configs/pretrain/tiny.yaml")


def constrained_fields(cls: type, prefix: str = "") -> list[tuple[str, object, bool]]:
    """(dotted key, domain, whether the field holds a list) of every constrained field under `cls`."""
    found = []
    hints = typing.get_type_hints(cls)
    declared = domains(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(tp):
            found += constrained_fields(tp, f"{prefix}{f.name}.")
        elif item is not None and dataclasses.is_dataclass(item):
            found += [(f"{prefix}{f.name}[]{key}", d, many) for key, d, many in constrained_fields(item, ".")]
        elif f.name in declared:
            found.append((prefix + f.name, declared[f.name], typing.get_origin(tp) is list or "list" in str(tp)))
    return found


def cases() -> list[tuple[str, str, object, bool]]:
    """(command, key, domain, list-valued): fine-tuning's fields through `finetune`, pretraining's own sections
    through `pretrain`, the comparison's through `compare`."""
    tuning = constrained_fields(FinetuneConfig)
    shared = {key for key, _, _ in tuning}
    own = [c for c in constrained_fields(PretrainConfig) if c[0] not in shared]
    return ([("finetune", *c) for c in tuning] + [("pretrain", *c) for c in own]
            + [("compare", *c) for c in constrained_fields(CompareConfig, "compare.")])


@pytest.fixture(scope="module")
def env(tmp_path_factory, pydoc_corpus):
    root = tmp_path_factory.mktemp("domains")
    (root / "a-file.txt").write_text("text")
    (root / "a-folder").mkdir()
    return {"root": root, "bert": make_tiny_bert(root / "bert"), "sst2": make_glue_task("sst2", root / "sst2"),
            "corpus": pydoc_corpus}


def outside(domain, env) -> object:
    """A value outside `domain`: below or above a range, no choice, the other kind of path."""
    if isinstance(domain, (Range, Choice)):
        return domain.outside()
    return env["root"] / ("a-folder" if domain.kind == "file" else "a-file.txt")


def argv(command: str, key: str, value: str, env) -> list[str]:
    out = env["root"] / "out"
    if command == "pretrain":
        base = ["pretrain", "--config", TINY, f"output_dir={out}", f"data.train_files=[{env['corpus']}]"]
    elif command == "finetune":
        base = ["finetune", "glue", "--config", GLUE, f"model={env['bert']}", f"data_dir={env['sst2']}",
                f"output_dir={out}"]
    else:
        base = ["compare", "--config", GLUE, f"model={env['bert']}", f"data_dir={env['sst2']}",
                f"compare.output_dir={out}"]
    if "[]" in key:  # a field of a list of sections (pretraining phases)
        section, field = key.split("[].")
        return [*base, f"{section}=[{{{field}: {value}}}]"]
    return [*base, f"{key}={value}"]


def test_every_config_section_declares_domains():
    keys = {key for _, key, _, _ in cases()}
    for expected in ("train.lr", "train.deepspeed_config", "search.heads_ratio", "search.weights", "search.ticket",
                     "checkpoint.every", "log.report_to", "mode", "model", "max_seq_len", "model.hidden_dropout",
                     "data.train_files", "data.mlm_probability", "phases[].seq_len", "compare.modes"):
        assert expected in keys


@pytest.mark.parametrize(("command", "key", "domain", "many"), cases(), ids=lambda x: str(x)[:40])
def test_a_value_outside_its_domain_is_one_line_exit_2_and_creates_nothing(command, key, domain, many, env, capsys):
    value = outside(domain, env)
    text = f"[{value}]" if many else str(value)
    capsys.readouterr()
    code = main(argv(command, key, text, env))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"earlybert {command}: error: "), err
    assert key.replace("[]", "[0]") + "=" in err[0] and ("must be" in err[0] or "give" in err[0] or "use" in err[0])
    assert not (env["root"] / "out").exists()
