"""The ticket search core: step resolution, ties, fp32 coefficients, draw policies."""

import re

import pytest
import torch

from earlybert.errors import EarlyBertError
from earlybert.ticket.coefficients import attach_coefficients, ffn_coefficients, head_coefficients, set_coefficients
from earlybert.ticket.search import SearchConfig, TicketSearch
from tests.conftest import random_inputs, tiny_model


@pytest.mark.parametrize(("run_steps", "check", "limit"), [(126, 2, 13), (25_000, 250, 2500)])
def test_fractions_resolve_to_steps_for_two_data_sizes(run_steps, check, limit):
    """2,000 and 400,000 examples at batch 32 for 2 epochs: the same config, proportional steps."""
    steps = SearchConfig(check_every=0.01, max_search_steps=0.1).resolve(run_steps, run_steps // 2, "rewind")
    assert (steps.check_every, steps.limit, steps.fixed, steps.weights) == (check, limit, False, "rewind")
    assert steps.slim_steps == run_steps


@pytest.mark.parametrize(("weights", "rewarmup", "steps"), [("continue", 0.05, 7), ("continue", 4, 4),
                                                           ("rewind", 0.0, 0), ("continue", 0.0, 0)])
def test_rewarmup_resolves_to_steps(weights, rewarmup, steps):
    cfg = SearchConfig(weights=weights, rewarmup=rewarmup)
    assert cfg.resolve(run_steps=126, epoch_steps=63, default_weights="rewind").rewarmup == steps


@pytest.mark.parametrize("weights", ["rewind", "auto"])
def test_rewarmup_is_refused_where_the_slim_stage_rewinds(weights):
    with pytest.raises(EarlyBertError, match="search.rewarmup=0.05 ramps the rate after a continued draw"):
        SearchConfig(weights=weights, rewarmup=0.05).resolve(126, 63, "rewind")


def test_epoch_fractions_and_step_counts():
    cfg = SearchConfig(check_every=5, draw_at=0.2, fraction_of="epoch", weights="continue", rewind_length=0.5)
    steps = cfg.resolve(run_steps=189, epoch_steps=63, default_weights="rewind")
    assert (steps.check_every, steps.limit, steps.fixed, steps.weights, steps.slim_steps) == (5, 13, True,
                                                                                             "continue", 94)


@pytest.mark.parametrize("setting", [{"max_search_steps": 400}, {"max_search_steps": 126}, {"draw_at": 200}])
def test_a_search_that_would_outlast_the_run_is_refused(setting):
    with pytest.raises(EarlyBertError, match="not before the end of the 126-step run"):
        SearchConfig(**setting).resolve(126, 63, "rewind")


@pytest.mark.parametrize(("setting", "message"), [
    ({"check_every": 0}, "check_every=0 must be > 0"),
    ({"max_search_steps": 2.5}, "search.max_search_steps=2.5 is neither a fraction"),
    ({"weights": "restart"}, "weights='restart' is unknown: use one of auto, rewind, continue"),
    ({"fraction_of": "batch"}, "fraction_of='batch' is unknown: use one of run, epoch"),
    ({"coefficient_lr": -1.0}, "coefficient_lr=-1.0 must be >= 0"),
    ({"draw_at": -0.1}, "draw_at=-0.1 must be >= 0"),
])
def test_bad_search_settings_built_in_python_are_refused(setting, message):
    with pytest.raises(EarlyBertError, match=re.escape(message)):
        SearchConfig(**setting)


def test_coefficients_stay_fp32_on_a_bf16_model():
    model = tiny_model("bert", "sequence_classification").to(torch.bfloat16).eval()
    attach_coefficients(model)
    assert {c.dtype for c in head_coefficients(model) + ffn_coefficients(model)} == {torch.float32}
    logits = model(**random_inputs(model)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    # A step of 1e-3 survives in fp32 (bf16 near 1.0 has a spacing of 0.0078 and would round it away).
    head_coefficients(model)[0].data[0] -= 1e-3
    assert head_coefficients(model)[0][0].item() == pytest.approx(0.999, abs=1e-6)


def test_the_detector_does_not_fire_while_coefficients_are_tied():
    model = tiny_model("bert", "masked_lm").to(torch.bfloat16)
    search = TicketSearch(SearchConfig(window=3, threshold=0.1), SearchConfig().resolve(1000, None, "continue"))
    search.attach(model)
    # All coefficients at their initial 1.0: identical masks every check, decided by index order alone.
    for step in (10, 20, 30, 40):
        assert search.observe(step, model) is None
    assert all(c.tied for c in search.detector.history)
    # Distinct values: the same masks three checks in a row now fire.
    gen = torch.Generator().manual_seed(0)
    set_coefficients(model, [torch.rand(c.numel(), generator=gen) for c in head_coefficients(model)],
                     [torch.rand(c.numel(), generator=gen) for c in ffn_coefficients(model)])
    assert search.observe(50, model) is None and search.observe(60, model) is None
    ticket = search.observe(70, model)
    assert ticket is not None and ticket.metadata["drawn_by"] == "fired" and ticket.metadata["step"] == 70


def test_draw_at_and_limit_draw_at_their_step():
    model = tiny_model("bert", "masked_lm")
    fixed = TicketSearch(SearchConfig(check_every=1, draw_at=7), SearchConfig(check_every=1, draw_at=7).resolve(
        100, None, "continue"))
    fixed.attach(model)
    drawn = [s for s in range(1, 20) if fixed.observe(s, model) is not None]
    assert drawn[0] == 7
    limited = SearchConfig(check_every=4, max_search_steps=10)
    search = TicketSearch(limited, limited.resolve(100, None, "continue"))
    ticket = next(t for s in range(1, 20) if (t := search.observe(s, model)) is not None)
    assert (ticket.metadata["step"], ticket.metadata["drawn_by"], ticket.metadata["fired"]) == (10, "limit", False)
