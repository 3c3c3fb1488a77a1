"""Crash safety: non-finite losses, refused pickles, failed checkpoint writes, interrupted saves."""

import errno
import json
import pickle
import time

import pytest
import torch

from earlybert.config import load_config
from earlybert.errors import EarlyBertError
from earlybert.recipes.pretrain import PretrainConfig, run
from earlybert.train import run_checkpoint
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.run_checkpoint import latest_checkpoint
from tests.conftest import REPO, torchrun


def tiny_config(tmp_path, corpus, *extra):
    return load_config(PretrainConfig, REPO / "configs/pretrain/tiny.yaml",
                       [f"output_dir={tmp_path / 'run'}", f"data.train_files={corpus}",
                        f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=6", "checkpoint.every=2",
                        "search.max_search_steps=5",
                        "log.progress_bar=false",
                        f"train.deepspeed_config={REPO / 'configs/deepspeed/cpu.json'}", *extra])


def test_non_finite_loss_stops_before_the_update_and_keeps_good_checkpoints(tmp_path, pydoc_corpus, monkeypatch):
    calls = {"n": 0}
    real_forward = MaskedLMObjective.forward

    def forward(self, *args, **kwargs):
        loss, stats = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), stats) if calls["n"] == 5 else (loss, stats)

    monkeypatch.setattr(MaskedLMObjective, "forward", forward)
    with pytest.raises(EarlyBertError, match=r"non-finite loss \(nan\) at step 5: stopping before the update"):
        run(tiny_config(tmp_path, pydoc_corpus))
    last = latest_checkpoint(tmp_path / "run")
    assert last.name == "step_00000004"
    state = torch.load(last / "mp_rank_00_model_states.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["module"].values() if torch.is_tensor(v))
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("ds_config", ["cpu", "zero0_bf16", "zero1_bf16", "zero2_bf16", "zero3_bf16"])
def test_a_non_finite_gradient_stops_the_run_under_every_precision_and_zero_stage(tmp_path, pydoc_corpus, monkeypatch,
                                                                                   ds_config):
    # The loss stays finite; ZeRO and bf16 keep gradients off `p.grad`, so the engine's verdict must be used.
    calls = {"n": 0}
    real_forward = MaskedLMObjective.forward

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            weight = self.model.get_input_embeddings().weight
            handle = weight.register_hook(lambda grad: (handle.remove(), grad * float("nan"))[1])
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(MaskedLMObjective, "forward", forward)
    ds_json = REPO / "configs/deepspeed" / f"{ds_config}.json"
    config = tiny_config(tmp_path, pydoc_corpus, f"train.deepspeed_config={ds_json}")
    with pytest.raises(EarlyBertError, match=r"non-finite gradient norm \((nan|inf)\) at step 5: stopping before the "
                                             r"update; the last good checkpoint is .*step_00000004"):
        run(config)


def test_failed_checkpoint_write_reports_the_cause_and_keeps_the_previous(tmp_path, pydoc_corpus, monkeypatch):
    saves = {"n": 0}
    real_save = torch.save

    def failing_save(obj, path, *args, **kwargs):
        if str(path).endswith(".pt") and "rng_rank" in str(path):
            saves["n"] += 1
            if saves["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(run_checkpoint.torch, "save", failing_save)
    with pytest.raises(EarlyBertError) as err:
        run(tiny_config(tmp_path, pydoc_corpus, "search.enabled=false"))
    message = str(err.value)
    assert "could not write the checkpoint of step 4" in message and "No space left on device" in message
    assert "step_00000002 is intact" in message
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]  # no partial folder left


def test_interrupted_save_is_ignored_with_a_warning(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step_00000002").mkdir(parents=True)
    (root / "step_00000002" / "trainer_state.json").write_text(json.dumps({"step": 2}))
    (root / ".tmp-step_00000004").mkdir()  # a save killed half-way
    (root / "latest").write_text("step_00000002")
    with pytest.warns(UserWarning, match="ignoring the partial checkpoint"):
        assert latest_checkpoint(tmp_path) == root / "step_00000002"
    (root / "latest").write_text("step_00000004")  # pointer to a folder that never completed
    with pytest.warns(UserWarning):
        assert latest_checkpoint(tmp_path) == root / "step_00000002"


class Payload:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_a_checkpoint_with_a_pickled_payload_is_refused(tmp_path, pydoc_corpus):
    run(tiny_config(tmp_path, pydoc_corpus, "search.enabled=false", "train.max_steps=2"))
    folder = latest_checkpoint(tmp_path / "run")
    with open(folder / "mp_rank_00_model_states.pt", "wb") as f:
        pickle.dump({"module": Payload()}, f)
    with pytest.raises(EarlyBertError, match="is not plain tensor data .*refusing to load it"):
        run(tiny_config(tmp_path, pydoc_corpus, "search.enabled=false", "train.max_steps=4", "resume=auto"))


def two_rank_args(tmp_path, corpus, *extra) -> list[str]:
    """The tiny config on two ranks under bf16 ZeRO-2, checkpoints every 5 steps."""
    return ["--config", str(REPO / "configs/pretrain/tiny.yaml"), f"output_dir={tmp_path / 'run'}",
            f"data.train_files={corpus}", f"data.cache_dir={tmp_path / 'cache'}", "train.micro_batch_size=4",
            f"train.deepspeed_config={REPO / 'configs/deepspeed/zero2_bf16.json'}", "train.max_steps=20",
            "search.max_search_steps=15", "checkpoint.every=5", *extra]


@pytest.mark.slow
def test_nan_in_one_ranks_gradient_under_bf16_zero2_stops_every_rank_before_the_update(tmp_path, pydoc_corpus):
    # The loss stays finite: only DeepSpeed's partitioned gradients (reduced across ranks) see the NaN.
    result = torchrun("tests/faulty_rank.py", *two_rank_args(tmp_path, pydoc_corpus), env={"FAULT": "nan:8"})
    assert result.returncode != 0
    last = tmp_path / "run" / "checkpoints" / "step_00000005"
    lines = [line for line in result.stderr.splitlines() if "earlybert pretrain: error:" in line]
    assert lines, result.stderr[-3000:]
    for line in lines:  # every rank that reports says the same
        assert "non-finite gradient norm (inf) at step 8: stopping before the update" in line
        assert f"the last good checkpoint is {last}" in line
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_00000005"
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_a_checkpoint_write_failing_on_rank_1_only_ends_both_ranks_with_the_cause(tmp_path, pydoc_corpus):
    # Rank 1's ZeRO shard of the second checkpoint (step 10, or the shrink's if the ticket is drawn before)
    # fails to write while rank 0 waits in DeepSpeed's barrier.
    started = time.monotonic()
    result = torchrun("tests/faulty_rank.py", *two_rank_args(tmp_path, pydoc_corpus), env={"FAULT": "checkpoint:2"},
                      timeout=300)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    cause = "could not write the checkpoint of step "
    lines = [line for line in result.stderr.splitlines() if cause in line]
    assert {int(line.split(cause)[1].split()[0]) for line in lines} <= set(range(6, 11)), lines
    assert any(line.endswith("(rank 1)") for line in lines), result.stderr[-3000:]  # rank 0, told by rank 1
    assert all("No space left on device" in line and "step_00000005 is intact" in line for line in lines)
    assert elapsed < 120, elapsed  # a hang would wait for gloo's 30-minute timeout
    root = tmp_path / "run" / "checkpoints"
    assert (root / "latest").read_text() == "step_00000005"


def test_an_optimizer_restarted_at_the_shrink_warms_up_again_and_says_so(tmp_path, pydoc_corpus, monkeypatch):
    from earlybert.train import trainer

    monkeypatch.setattr(trainer, "carry_optimizer_state", lambda *args: False)  # as for a JSON-named optimizer
    summary = run(tiny_config(tmp_path, pydoc_corpus, "train.max_steps=14", "search.max_search_steps=6",
                              "train.warmup_steps=4", "train.schedule=constant", "train.lr=0.002"))
    assert summary["optimizer_state_at_shrink"] == "restarted"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    drawn = summary["ticket_step"]
    lrs = [r["lr"] for r in rows if r["step"] > drawn][:5]
    assert lrs == pytest.approx([0.0005, 0.001, 0.0015, 0.002, 0.002])  # 1/4, 2/4, ... of the rate, then all
