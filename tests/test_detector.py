import pytest
import torch

from earlybert.errors import EarlyBertError
from earlybert.ticket.detector import EarlyBirdDetector


def masks(bits_heads, bits_ffn):
    return [torch.tensor(bits_heads, dtype=torch.int8)], [torch.tensor(bits_ffn, dtype=torch.int8)]


# 10 head units and 10 FFN units: each flipped bit is a distance of 0.1.
BASE_H = [1] * 6 + [0] * 4
BASE_F = [1] * 5 + [0] * 5


def flip(bits, *idx):
    out = list(bits)
    for i in idx:
        out[i] = 1 - out[i]
    return out


SEQUENCE = [
    (BASE_H, BASE_F),  # step 10
    (flip(BASE_H, 0, 1), BASE_F),  # 20
    (BASE_H, flip(BASE_F, 2, 3)),  # 30
    (BASE_H, BASE_F),  # 40: window of 4 only
    (BASE_H, BASE_F),  # 50: full window, but step 20's mask is 0.2 away
    (BASE_H, flip(BASE_F, 9)),  # 60: queue 20..60: step 20 is 0.2 away in heads
    (BASE_H, BASE_F),  # 70: queue 30..70: step 30 is 0.2 away in FFN
    (BASE_H, flip(BASE_F, 0)),  # 80: queue 40..80: heads 0.0, ffn 0.2 to step 60
    (BASE_H, BASE_F),  # 90: queue 50..90: ffn 0.1 to steps 60 and 80 -> fires
]


def run(detector, sequence, start=0):
    fired = []
    for i, (h, f) in enumerate(sequence[start:], start=start):
        if detector.update(10 * (i + 1), *masks(h, f)):
            fired.append(10 * (i + 1))
    return fired


def test_fires_exactly_at_hand_computed_step():
    det = EarlyBirdDetector(window=5, threshold=0.1)
    assert run(det, SEQUENCE) == [90]
    assert det.fired_at == 90
    dists = [(c.step, c.heads_distance, c.ffn_distance) for c in det.history]
    assert dists[0] == (10, None, None)
    assert dists[4] == pytest.approx((50, 0.2, 0.2))
    assert dists[7] == pytest.approx((80, 0.0, 0.2))
    assert dists[8] == pytest.approx((90, 0.0, 0.1))


def test_does_not_fire_before_window_is_full_even_when_identical():
    det = EarlyBirdDetector(window=3, threshold=0.0)
    fired = [det.update(s, *masks(BASE_H, BASE_F)) for s in (1, 2, 3, 4)]
    assert fired == [False, False, True, False]  # fires once, at the first full window


def test_threshold_applies_to_heads_and_ffn_separately():
    det = EarlyBirdDetector(window=2, threshold=0.1)
    det.update(1, *masks(BASE_H, BASE_F))
    assert not det.update(2, *masks(BASE_H, flip(BASE_F, 0, 1)))  # ffn 0.2
    assert det.update(3, *masks(flip(BASE_H, 5), flip(BASE_F, 0, 1)))  # heads 0.1, ffn 0.0


def test_resume_from_state_dict_is_identical():
    full = EarlyBirdDetector(window=5, threshold=0.1)
    run(full, SEQUENCE)
    first = EarlyBirdDetector(window=5, threshold=0.1)
    run(first, SEQUENCE[:6])
    import json

    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
    resumed = EarlyBirdDetector()
    resumed.load_state_dict(state)
    assert run(resumed, SEQUENCE, start=6) == [90]
    assert resumed.state_dict() == full.state_dict()


def test_bad_settings_are_refused():
    with pytest.raises(EarlyBertError, match="window"):
        EarlyBirdDetector(window=1)
    with pytest.raises(EarlyBertError, match="threshold"):
        EarlyBirdDetector(threshold=1.5)


def test_a_tied_check_anywhere_in_the_window_keeps_it_from_firing():
    # Masks drawn from tied scores are decided by index order: identical masks would look converged.
    det = EarlyBirdDetector(window=3, threshold=0.0)
    det.update(1, *masks(BASE_H, BASE_F))
    det.update(2, *masks(BASE_H, BASE_F), tied=True)
    assert not det.update(3, *masks(BASE_H, BASE_F))  # the window 1-3 holds the tied check at step 2
    assert not det.update(4, *masks(BASE_H, BASE_F))  # so does 2-4
    assert det.update(5, *masks(BASE_H, BASE_F))  # 3-5 is clear of it
