import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from earlybert.models.modeling import REMOTE_CODE_FILE, SlimBertConfig, SlimBertForMaskedLM
from earlybert.ticket.shrink import shrink_model
from tests.conftest import FAMILY_TASKS, outputs_of, random_inputs
from tests.test_shrink import AUTO, masked_model, uneven_ticket

REMOTE_LOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["earlybert"] = None  # earlybert must not be importable here
    try:
        import earlybert  # noqa
    except ImportError:
        importable = False
    else:
        raise SystemExit("earlybert was importable")
    import torch, transformers
    cases = json.load(open(sys.argv[1]))
    diffs = {}
    for case in cases:
        auto = getattr(transformers, case["auto"])
        model = auto.from_pretrained(case["dir"], trust_remote_code=True).eval()
        assert "earlybert" not in type(model).__module__.split(".")[0], type(model).__module__
        inputs = torch.load(case["inputs"], weights_only=True)
        with torch.no_grad():
            out = model(**inputs)
        if getattr(out, "start_logits", None) is not None:
            got = torch.stack([out.start_logits, out.end_logits])
        elif getattr(out, "prediction_logits", None) is not None:
            got = torch.cat([out.prediction_logits.flatten(), out.seq_relationship_logits.flatten()])
        else:
            got = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
        expected = torch.load(case["expected"], weights_only=True)
        diffs[case["dir"]] = (got - expected).abs().max().item()
    print(json.dumps(diffs))
    """
)


@pytest.mark.slow
def test_slim_folders_load_with_trust_remote_code_without_earlybert(tmp_path):
    cases = []
    for family, task in FAMILY_TASKS:
        ticket = uneven_ticket(family)
        model = masked_model(family, task, ticket)
        inputs = random_inputs(model)
        expected = outputs_of(model, inputs)
        folder = tmp_path / f"{family}-{task}"
        shrink_model(model, ticket, fold_coefficients=True).save_pretrained(folder)
        assert (folder / REMOTE_CODE_FILE).is_file()
        torch.save(inputs, folder / "inputs.pt")
        torch.save(expected, folder / "expected.pt")
        cases.append({"dir": str(folder), "auto": AUTO[task].__name__,
                      "inputs": str(folder / "inputs.pt"), "expected": str(folder / "expected.pt")})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "load.py").write_text(REMOTE_LOAD)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-I", str(tmp_path / "load.py"), str(tmp_path / "cases.json")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    diffs = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(diffs) == len(FAMILY_TASKS) == 30
    assert max(diffs.values()) <= 1e-5, diffs


def test_saved_config_records_per_layer_sizes_and_auto_map(tmp_path):
    config = SlimBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=32, layer_num_heads=[1, 3], layer_intermediate_sizes=[5, 0])
    SlimBertForMaskedLM(config).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "slim_bert"
    assert data["layer_num_heads"] == [1, 3] and data["layer_intermediate_sizes"] == [5, 0]
    assert data["auto_map"]["AutoModelForMaskedLM"] == "modeling_earlybert.SlimBertForMaskedLM"
    assert data["architectures"] == ["SlimBertForMaskedLM"]


def test_wrong_number_of_layer_sizes_is_refused():
    config = SlimBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                            layer_num_heads=[1, 3, 2])
    with pytest.raises(ValueError, match="3 head counts"):
        SlimBertForMaskedLM(config)
