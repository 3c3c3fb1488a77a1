import pytest

from earlybert.config import help_text, load_config, parse_override, to_dict
from earlybert.errors import EarlyBertError
from earlybert.recipes.pretrain import PretrainConfig


def test_yaml_plus_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("output_dir: runs/a\ntrain:\n  lr: 1.0e-3\n  max_steps: 5\n")
    cfg = load_config(PretrainConfig, tmp_path / "c.yaml",
                      ["train.max_steps=7", "data.train_files=[a.txt, b.txt]", "search.enabled=false", "train.lr=2"])
    assert cfg.output_dir == "runs/a" and cfg.train.max_steps == 7
    assert cfg.train.lr == 2.0 and isinstance(cfg.train.lr, float)
    assert cfg.data.train_files == ["a.txt", "b.txt"] and cfg.search.enabled is False
    assert to_dict(cfg)["train"]["max_steps"] == 7
    assert load_config(PretrainConfig, None, ["data.train_files=one.txt"]).data.files() == ["one.txt"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_stepz=3", "unknown config key train.max_stepz"),
        ("nosuch=1", "unknown config key nosuch"),
        ("train.max_steps=abc", "train.max_steps expects int, got 'abc'"),
        ("search.enabled=3", "search.enabled expects bool"),
        ("train.schedule=cosine", "train.schedule='cosine' is unknown"),
        ("train", "is not key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(EarlyBertError, match=message) as err:
        load_config(PretrainConfig, None, [override])
    assert "\n" not in str(err.value)


def test_bad_yaml_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(EarlyBertError, match="not valid YAML at line"):
        load_config(PretrainConfig, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(EarlyBertError, match="must hold a mapping"):
        load_config(PretrainConfig, tmp_path / "list.yaml")
    with pytest.raises(EarlyBertError, match="does not exist"):
        load_config(PretrainConfig, tmp_path / "missing.yaml")


def test_help_lists_every_key_with_its_docstring():
    lines = help_text(PretrainConfig)
    assert any(line.startswith("  train.max_steps (int, default 1000): Optimizer steps of the run")
               for line in lines)
    assert any(line.startswith("  search.max_search_steps (float, default 0.2): Draw here if nothing fired")
               for line in lines)
    assert any("data.train_files" in line and "documents separated by blank lines" in line for line in lines)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


@pytest.mark.parametrize("name", ["tiny", "bert-base", "bert-large"])
def test_shipped_pretrain_configs_load(name):
    from tests.conftest import REPO

    cfg = load_config(PretrainConfig, REPO / f"configs/pretrain/{name}.yaml")
    phases = cfg.resolved_phases()
    assert sum(p.steps for p in phases) == cfg.train.max_steps
    assert cfg.train.deepspeed_config == "auto" if name == "tiny" else (REPO / cfg.train.deepspeed_config).is_file()
    if name != "tiny":
        assert cfg.model.vocab_size == 30522 and [p.seq_len for p in phases] == [128, 512]


def test_deepspeed_jsons_are_valid_and_auto_filled(tmp_path):
    import json

    from earlybert.train.engine import deepspeed_config
    from earlybert.train.trainer_config import TrainConfig
    from tests.conftest import REPO

    for path in sorted((REPO / "configs/deepspeed").glob("*.json")):
        config = deepspeed_config(TrainConfig(micro_batch_size=4, grad_accum=2, deepspeed_config=str(path)), 2)
        assert config["train_batch_size"] == 16 and config["gradient_accumulation_steps"] == 2
    data = json.loads((REPO / "configs/deepspeed/cpu.json").read_text())
    data["train_micro_batch_size_per_gpu"] = 3
    (tmp_path / "ds.json").write_text(json.dumps(data))
    with pytest.raises(EarlyBertError, match="sets train_micro_batch_size_per_gpu=3 but the run config implies 4"):
        deepspeed_config(TrainConfig(micro_batch_size=4, deepspeed_config=str(tmp_path / "ds.json")), 1)


@pytest.mark.parametrize(("device", "bf16", "ranks", "precision"), [
    ("cuda", True, 1, "bf16 ZeRO-0"), ("cuda", True, 2, "bf16 ZeRO-1"), ("cuda", False, 1, "fp16 ZeRO-0"),
    ("cuda", False, 4, "fp16 ZeRO-1"), ("cpu", False, 1, "fp32 ZeRO-0"), ("cpu", True, 2, "fp32 ZeRO-0"),
])
def test_auto_resolves_precision_and_zero_stage_for_the_device(monkeypatch, device, bf16, ranks, precision):
    from earlybert.train import engine
    from earlybert.train.trainer_config import TrainConfig

    monkeypatch.setattr(engine, "accelerator", lambda: (device, device == "cuda" and bf16))
    config = engine.deepspeed_config(TrainConfig(micro_batch_size=4, grad_accum=2, max_grad_norm=0.5), ranks)
    assert engine.precision(config) == precision
    assert config["train_batch_size"] == 8 * ranks and config["gradient_clipping"] == 0.5
    if precision.startswith("fp16"):  # dynamic loss scaling: a loss scale of 0
        assert config["fp16"]["enabled"] and config["fp16"]["loss_scale"] == 0
    assert not (config.get("bf16", {}).get("enabled") and config.get("fp16", {}).get("enabled"))


def test_auto_on_this_machine_is_fp32_on_cpu():
    from earlybert.train.engine import deepspeed_config, precision
    from earlybert.train.trainer_config import TrainConfig

    assert TrainConfig().deepspeed_config == "auto"
    assert precision(deepspeed_config(TrainConfig(), 1)) == "fp32 ZeRO-0"


def test_the_shipped_smollm2_config_asks_for_uniform_gqa_tickets():
    from tests.conftest import REPO

    cfg = load_config(PretrainConfig, REPO / "configs/pretrain/smollm2-135m.yaml")
    assert cfg.model.gguf_file.endswith(".gguf") and not cfg.model.init_from
    assert (cfg.search.uniform, cfg.search.ffn_scope, cfg.search.kv_groups) == (True, "layer", "keep")
    assert round(9 * cfg.search.heads_ratio) == 3 and cfg.search.ffn_ratio == 0.5  # 6 of 9 heads, MLP 768 of 1536
