"""The collapse check after the draw: which losses it compares, its verdict, resuming, and a real run."""

import json

import pytest

from earlybert.recipes.finetune import main as finetune_main
from earlybert.train.draw_check import DrawCheck
from tests.conftest import REPO, SHARED


def feed(check: DrawCheck, search: list[float], slim: list[float], rewind: bool, draw: int):
    verdicts = []
    for step, loss in enumerate(search):
        verdicts.append(check.record(True, step, loss))
        if step + 1 == draw:
            check.drawn(draw, rewind)
    # A rewound slim stage reads the data from step 0 again; a continued one carries on at the draw step.
    first = 0 if rewind else draw
    verdicts += [check.record(False, first + i, loss) for i, loss in enumerate(slim)]
    return verdicts


def test_rewind_compares_the_same_batches_after_as_many_updates():
    check = DrawCheck(window=3, limit=0.5)
    search = [2.0, 1.6, 1.2, 0.6, 0.5, 0.4]  # first steps 1.6 mean; before the draw (data steps 3-5) 0.5
    slim = [2.1, 1.9, 1.5, 1.2, 1.1, 1.0, 0.7]
    verdicts = feed(check, search, slim, rewind=True, draw=6)
    # The verdict comes with the slim stage's sixth step (data step 5), not before.
    assert verdicts[:6 + 5] == [None] * 11 and verdicts[6 + 5] is not None and verdicts[-1] is None
    v = check.verdict
    assert (v["start_loss"], v["before_loss"], v["slim_loss"]) == pytest.approx((1.6, 0.5, 1.1))
    assert v["given_back"] == pytest.approx(0.6 / 1.1) and v["collapsed"] and v["before_steps"] == [4, 6]
    assert "WARNING" in check.message() and "55% of that progress given back" in check.message()


def test_continue_compares_the_steps_right_after_the_draw_with_those_right_before():
    check = DrawCheck(window=2, limit=0.5)
    feed(check, [1.0, 1.0, 0.6, 0.4], [0.6, 0.6, 5.0], rewind=False, draw=4)
    v = check.verdict
    assert (v["start_loss"], v["before_loss"], v["slim_loss"]) == pytest.approx((1.0, 0.5, 0.6))
    assert v["given_back"] == pytest.approx(0.2) and not v["collapsed"] and check.message().endswith("ok")


def test_no_progress_before_the_draw_is_not_judged():
    # A draw early in a short fine-tuning run: the loss has not moved, there is nothing to give back.
    check = DrawCheck(window=2, limit=0.5)
    feed(check, [0.694, 0.692, 0.690, 0.686], [0.9, 0.9], rewind=False, draw=4)
    v = check.verdict
    assert not v["judged"] and v["given_back"] is None and not v["collapsed"]
    assert check.message().startswith("draw check: not judged")


def test_a_run_that_ends_early_compares_what_it_had_and_limit_zero_never_warns():
    check = DrawCheck(window=4, limit=0.0)
    feed(check, [2.0, 2.0, 1.0, 1.0, 1.0, 1.0], [2.0], rewind=False, draw=6)
    assert check.verdict is None
    v = check.decide()
    assert v["given_back"] == pytest.approx(1.0 / 0.5) and v["slim_steps"] == 1 and not v["collapsed"]
    assert "WARNING" not in check.message()


def test_a_long_search_keeps_only_the_losses_it_compares():
    check = DrawCheck(window=3, limit=0.5)
    feed(check, [2.0] * 3 + [1.5] * 94 + [1.0] * 3, [1.2] * 3, rewind=False, draw=100)
    assert sorted(check.search_losses) == [0, 1, 2, 97, 98, 99]
    assert check.verdict["given_back"] == pytest.approx(0.2)  # (1.2 - 1.0) / (2.0 - 1.0)


def test_the_state_resumes_exactly():
    first, second = DrawCheck(window=2, limit=0.5), DrawCheck(window=2, limit=0.5)
    feed(first, [2.0, 2.0, 1.0, 1.0], [1.5, 1.5], rewind=True, draw=4)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for check in (first, second):
        assert check.record(False, 2, 1.6) is None
        assert check.record(False, 3, 1.4)["given_back"] == pytest.approx(0.5)  # data steps 2-3 both sides
    assert second.verdict == first.verdict


def finetune_spam(minilm, out, *extra):
    data = SHARED / "data" / "spam-subjects"
    if not data.is_dir():
        pytest.skip(f"{data} is absent (../shared beside the project)")
    code = finetune_main(["glue", "--config", str(REPO / "configs/finetune/glue.yaml"), "task=custom",
                          "text_columns=[sentence]", "label_column=label", f"data_dir={data}", f"model={minilm}",
                          "mode=earlybert", f"output_dir={out}", "epochs=0", "train.max_steps=50",
                          "train.micro_batch_size=16", "train.lr=1e-4", "max_seq_len=32", "search.draw_at=30",
                          "log.progress_bar=false", *extra])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_a_destructive_ticket_fires_the_warning_and_a_sound_one_does_not(minilm_path, tmp_path, capsys, monkeypatch):
    from earlybert.ticket.search import TicketSearch

    sound = finetune_spam(minilm_path, tmp_path / "sound", "search.weights=rewind")
    assert sound["draw_check"]["judged"] and not sound["draw_check"]["collapsed"]
    assert "WARNING" not in capsys.readouterr().out
    # Keep the lowest-scoring heads and neurons, nine in ten pruned, and continue from the searched weights.
    masks = TicketSearch.masks
    monkeypatch.setattr(TicketSearch, "masks", lambda self, h, f: masks(self, [-s for s in h], [-s for s in f]))
    bad = finetune_spam(minilm_path, tmp_path / "bad", "search.weights=continue", "search.heads_ratio=0.9",
                        "search.ffn_ratio=0.9")
    assert bad["draw_check"]["collapsed"] and bad["draw_check"]["given_back"] > sound["draw_check"]["given_back"]
    assert "WARNING: the slim model may have collapsed" in capsys.readouterr().out
