import json

import pytest

from earlybert.errors import EarlyBertError
from earlybert.ticket.ticket import FORMAT, Ticket


def good() -> dict:
    return {"format": FORMAT, "model_type": "bert", "heads": [[1, 0, 1], [1, 1, 0]],
            "ffn": [[1, 1, 0, 0], [0, 1, 1, 1]], "step": 40, "distance_history": [{"step": 40}]}


def test_json_round_trip_keeps_masks_and_metadata(tmp_path):
    ticket = Ticket.from_dict(good())
    ticket.save(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["format"] == FORMAT and data["num_layers"] == 2 and data["num_heads"] == 3
    assert data["intermediate_size"] == 4 and data["heads_kept"] == [2, 2] and data["ffn_kept"] == [2, 3]
    again = Ticket.load(tmp_path / "t.json")
    assert again.heads == ticket.heads and again.ffn == ticket.ffn
    assert again.metadata == {"step": 40, "distance_history": [{"step": 40}]}
    assert list(tmp_path.iterdir()) == [tmp_path / "t.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "earlybert-ticket/0"}, "format"),
        ({"heads": [[0, 0, 0], [1, 1, 0]]}, "layer 0 prunes every head"),
        ({"heads": [[1, 2, 1], [1, 1, 0]]}, "values other than 0 and 1"),
        ({"ffn": [[1, 1, 0, 0]]}, "2 head layers but 1 FFN layers"),
        ({"heads": "all"}, "list of per-layer"),
    ],
)
def test_invalid_tickets_are_refused(change, message):
    with pytest.raises(EarlyBertError, match=message):
        Ticket.from_dict({**good(), **change})


def test_missing_field_and_bad_json(tmp_path):
    data = good()
    del data["ffn"]
    with pytest.raises(EarlyBertError, match="lacks the 'ffn' field"):
        Ticket.from_dict(data)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EarlyBertError, match="not valid JSON"):
        Ticket.load(tmp_path / "bad.json")
    with pytest.raises(EarlyBertError, match="does not exist"):
        Ticket.load(tmp_path / "missing.json")


def test_shape_check_against_a_model():
    ticket = Ticket.from_dict(good())
    ticket.check_shapes("bert", [3, 3], [4, 4])
    ticket.check_shapes("slim_bert", [3, 3], [4, 4])
    with pytest.raises(EarlyBertError, match=r"ticket shapes \(heads 2 x \[3\], ffn 2 x \[4\]\) do not match"):
        ticket.check_shapes("bert", [12] * 2, [4, 4])
    with pytest.raises(EarlyBertError, match="model type"):
        ticket.check_shapes("roberta", [3, 3], [4, 4])
