"""DeepSpeed engines on one CPU rank: fp32 weights gathered from every precision and ZeRO stage, AdamW state
carried across the shrink. (Two ranks: tests/test_pretrain.py and tests/test_reliability.py.)"""

import json

import pytest
import torch
from deepspeed.utils import safe_get_full_optimizer_state

from earlybert.ticket.coefficients import attach_coefficients, has_coefficients
from earlybert.ticket.shrink import apply_plan, prune_plan, shrink_model
from earlybert.ticket.ticket import Ticket
from earlybert.train.distributed import setup_distributed
from earlybert.train.engine import (
    adamw,
    build_engine,
    carry_optimizer_state,
    check_and_clip_gradients,
    consolidated_copy,
    fp32_values,
    optimizer_name,
)
from earlybert.train.objectives import MaskedLMObjective
from earlybert.train.trainer_config import TrainConfig
from tests.conftest import FAMILY_TASKS, outputs_of, random_inputs, tiny_model

SETUPS = {"fp32 ZeRO-0": (0, False), "bf16 ZeRO-0": (0, True), "bf16 ZeRO-1": (1, True),
          "bf16 ZeRO-2": (2, True), "fp32 ZeRO-3": (3, False), "bf16 ZeRO-3": (3, True)}


def trained_engine(tmp_path, stage: int, bf16: bool, steps: int = 2, family: str = "bert", max_grad_norm: float = 1.0,
                   clip_outside: bool = False):
    """A tiny MLM with coefficients after `steps` AdamW steps under the given precision and ZeRO stage
    (with `clip_outside`, clipped by `check_and_clip_gradients` before each step, as the trainer does)."""
    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
              "gradient_clipping": "auto", "bf16": {"enabled": bf16},
              "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    model = tiny_model(family)
    attach_coefficients(model)
    train = TrainConfig(deepspeed_config=str(path), micro_batch_size=3, lr=1e-2, max_grad_norm=max_grad_norm)
    engine = build_engine(MaskedLMObjective(model, 1e-3, 1e-3), train, setup_distributed(), coefficient_lr=1e-2,
                          clip_outside=clip_outside)
    inputs = random_inputs(model)
    inputs["labels"] = inputs["input_ids"].clone()
    for _ in range(steps):
        loss, _ = engine(**inputs, loss_denominator=33.0)
        engine.backward(loss)
        if clip_outside:
            check_and_clip_gradients(engine, max_grad_norm)
        engine.step()
    return engine, train, inputs


def moments(engine, param, key: str) -> torch.Tensor:
    full = safe_get_full_optimizer_state(param, key)
    if full is not None:
        return full.reshape(param.ds_shape if hasattr(param, "ds_shape") else param.shape)
    wrapper = engine.optimizer
    if hasattr(wrapper, "fp32_groups"):  # bf16 ZeRO-0 keys its state by a per-parameter fp32 copy
        copies = {id(lp): hp for lps, hps in zip(wrapper.fp16_groups, wrapper.fp32_groups) for lp, hp in zip(lps, hps)}
        return wrapper.optimizer.state[copies[id(param)]][key]
    return wrapper.state[param][key]


@pytest.mark.parametrize("setup", SETUPS)
def test_consolidated_copy_holds_the_fp32_masters_whole_and_tied(tmp_path, setup):
    engine, _, inputs = trained_engine(tmp_path, *SETUPS[setup])
    model = engine.module.model
    copy = consolidated_copy(model)
    assert has_coefficients(copy) and copy.training == model.training
    assert copy.cls.predictions.decoder.weight is copy.bert.embeddings.word_embeddings.weight
    names, params = zip(*model.named_parameters())
    for name, master in zip(names, fp32_values(list(params))):
        got = copy.get_parameter(name)
        assert got.dtype == torch.float32 and torch.equal(got.detach(), master.reshape(got.shape)), name
    assert torch.isfinite(copy(**{k: v for k, v in inputs.items() if k != "labels"}).logits).all()


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_consolidated_copy_of_every_family_computes_what_the_model_computes(family, task):
    """Tied weights included: XLM-R ties its decoder to the embeddings the other way round, and loading before
    tying once left the shared tensor unfilled (NaN losses right after the shrink)."""
    model = tiny_model(family, task)
    attach_coefficients(model)
    copy = consolidated_copy(model)
    for name, value in model.state_dict().items():
        assert torch.equal(copy.state_dict()[name], value), name
    inputs = random_inputs(model)
    assert torch.equal(outputs_of(copy.eval(), inputs), outputs_of(model, inputs))


# Every precision x stage for BERT; the fused-projection families (ModernBERT's Wqkv and GLU, DeBERTa's
# relative attention, DistilBERT's names) under the two sharded stages, whose coefficients live in partitions.
CARRY_CASES = [(setup, "bert") for setup in SETUPS] + [
    (setup, family) for family in ("modernbert", "deberta-v2", "distilbert")
    for setup in ("bf16 ZeRO-2", "bf16 ZeRO-3")]


@pytest.mark.parametrize(("setup", "family"), CARRY_CASES)
def test_adam_moments_and_step_count_are_carried_across_the_shrink(tmp_path, setup, family):
    engine, train, inputs = trained_engine(tmp_path, *SETUPS[setup], family=family)
    model = engine.module.model
    ticket = Ticket(model_type=family, heads=[[1, 0, 1, 1], [0, 1, 0, 0]],
                    ffn=[[1] * 30 + [0] * 18, [0] * 40 + [1] * 8])
    plan = prune_plan(model, ticket)
    slim = shrink_model(consolidated_copy(model), ticket)
    new = build_engine(MaskedLMObjective(slim, 0.0, 0.0), train, setup_distributed())
    assert carry_optimizer_state(engine, model, new, new.module.model, plan)
    slim_params = dict(new.module.model.named_parameters())
    compared = 0
    for name, param in model.named_parameters():
        if name not in slim_params:
            continue  # the coefficients
        for key in ("exp_avg", "exp_avg_sq"):
            expected = apply_plan({name: moments(engine, param, key)}, plan)[name]
            got = moments(new, slim_params[name], key)
            assert torch.equal(expected.float(), got.float().reshape(expected.shape)), (name, key)
            compared += 1
    assert compared == 2 * (len(dict(model.named_parameters())) - 4)  # 2 layers x (heads, FFN) coefficients
    def step_counts(wrapper) -> set[float]:
        return {float(s["step"]) for s in getattr(wrapper, "optimizer", wrapper).state.values()}

    # Bias correction continues (bf16 ZeRO-0's wrapper counts one extra step it takes at construction).
    assert step_counts(new.optimizer) == step_counts(engine.optimizer) == {3.0 if setup == "bf16 ZeRO-0" else 2.0}
    loss, _ = new(**inputs, loss_denominator=33.0)
    new.backward(loss)
    new.step()
    assert new.was_step_applied() and torch.isfinite(loss)


def test_the_chosen_adamw_makes_the_reference_update_and_is_named(tmp_path):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    train = TrainConfig(lr=1e-2, weight_decay=0.01)
    chosen = adamw([{"params": params, "weight_decay": 0.01}], train)
    plain = torch.optim.AdamW([{"params": reference, "weight_decay": 0.01}], lr=1e-2, betas=tuple(train.betas),
                              eps=train.eps, foreach=False)
    for _ in range(5):
        for p, q in zip(params, reference):
            grad = torch.randn_like(p)
            p.grad, q.grad = grad.clone(), grad.clone()
        chosen.step()
        plain.step()
    for p, q in zip(params, reference):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), (p - q).abs().max()
    engine, _, _ = trained_engine(tmp_path, 0, False, steps=1)
    assert optimizer_name(engine) in ("torch AdamW (fused)", "torch AdamW (foreach)")
    engine, _, _ = trained_engine(tmp_path, 2, True, steps=1)
    assert optimizer_name(engine).endswith("in DeepSpeed's DeepSpeedZeroOptimizer")


@pytest.mark.parametrize("setup", ["fp32 ZeRO-0", "bf16 ZeRO-2", "fp32 ZeRO-3"])
def test_clipping_outside_deepspeed_makes_deepspeeds_update(tmp_path, setup):
    # A norm of 0.05 clips every step. fp32 ZeRO-0 turns DeepSpeed's clipping off and clips in one foreach pass;
    # elsewhere DeepSpeed keeps clipping (its gradients are not on the parameters) and the call does nothing.
    ours, _, _ = trained_engine(tmp_path, *SETUPS[setup], max_grad_norm=0.05, clip_outside=True)
    theirs, _, _ = trained_engine(tmp_path, *SETUPS[setup], max_grad_norm=0.05)
    assert ours.gradient_clipping() == (0.0 if setup == "fp32 ZeRO-0" else 0.05)
    assert theirs.gradient_clipping() == 0.05
    names, params = zip(*ours.module.named_parameters())
    for name, a, b in zip(names, fp32_values(list(params)), fp32_values(list(theirs.module.parameters()))):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    unclipped, _, _ = trained_engine(tmp_path, *SETUPS[setup], max_grad_norm=0.0)
    assert not torch.allclose(fp32_values(list(unclipped.module.parameters()))[0], fp32_values([params[0]])[0])


def test_a_non_finite_gradient_norm_is_returned_and_nothing_is_clipped(tmp_path):
    engine, train, inputs = trained_engine(tmp_path, 0, False, steps=0, max_grad_norm=0.05, clip_outside=True)
    engine.backward(engine(**inputs, loss_denominator=33.0)[0])
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    grads[0].view(-1)[0] = float("inf")
    before = [g.clone() for g in grads]
    norm = check_and_clip_gradients(engine, 0.05)
    assert norm == float("inf")
    assert all(torch.equal(a, b) for a, b in zip(before, grads))
