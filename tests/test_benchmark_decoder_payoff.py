"""The decoder payoff benchmark's table: per variant over seeds, time saved against the full runs' mean."""

from benchmarks.decoder_payoff import table


def run(variant: str, seed: int, seconds: float, perplexity: float, ticket_step=None) -> dict:
    return {"variant": variant, "seed": seed, "heldout": {"perplexity": perplexity}, "final_loss": 3.0,
            "train_time_s": seconds, "ticket_s": 30.0 if variant == "wanda" else 0.0, "ticket_step": ticket_step,
            "drawn_by": None, "params": 100_000_000, "train_flops_per_token": 600_000_000}


def test_time_saved_is_against_the_mean_full_run_and_a_step0_tickets_seconds_stand_apart():
    runs = [run("full", 1, 100.0, 20.0), run("full", 2, 140.0, 22.0), run("earlybert", 1, 90.0, 24.0, 12),
            run("earlybert", 2, 78.0, 26.0, 15), run("wanda", 1, 72.0, 30.0)]
    rows, text = table(runs)
    by = {r["variant"]: r for r in rows}
    assert by["earlybert"]["time_saved"] == 1 - 84.0 / 120.0 and by["earlybert"]["perplexity"] == 25.0
    assert by["wanda"]["time_saved"] == 1 - 72.0 / 120.0 and by["wanda"]["ticket_s"] == 30.0
    assert "| earlybert | 2 | 25.00 | 3.000 | 84 | 30.0% | 0 | 12, 15 | 100.0M | 0.600 |" in text
    assert "| full | 2 | 21.00 |" in text
