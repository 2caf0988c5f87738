"""The chief's round rules (edgefed.federation.rounds) on their own: no sockets, no threads, no clock."""

from __future__ import annotations

import numpy as np
import pytest

from edgefed.federation.rounds import RoundBook, RoundRules, Seat
from edgefed.wire import specs_of


def model() -> list[np.ndarray]:
    return [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]


def book_with(*names: str, rounds: int = 3, late: bool = True) -> RoundBook[Seat]:
    book: RoundBook[Seat] = RoundBook(RoundRules(rounds, min_workers=len(names), allow_late_joiners=late), "chief")
    for name in names:
        assert book.admission_refusal(name) is None
        book.seat(Seat(name, book.task_index_for(name)))
    book.begin(model(), 0, False)
    return book


def test_admission_task_indices_and_late_joiners() -> None:
    book = book_with("w1", "w2", late=False)
    assert book.enough_workers()
    assert str(book.admission_refusal("chief")) == "chief is the chief's own name"
    book.started = True
    assert str(book.admission_refusal("w3")) == "late joiners are not allowed in this federation"
    duplicate = book.admission_refusal("w1")
    assert duplicate is not None and duplicate.code == "duplicate-identity"  # the live connection keeps its seat
    first = book.seats["w1"]
    assert book.leave(first) and not book.leave(first)
    assert book.admission_refusal("w1") is None  # a known worker may come back
    again = Seat("w1", book.task_index_for("w1"))
    book.seat(again)
    assert again.task_index == 1
    assert book.participants() == ["w1", "w2"] and book.total() == 3


def test_a_round_waits_for_synced_workers_and_averages_by_samples() -> None:
    book = book_with("w1", "w2")
    for seat in book.alive():
        book.synced(seat, 0)
    book.contribute_own([np.ones((3, 2), np.float32), np.ones(2, np.float32)], 1)
    expected = book.expected()
    assert expected == {"w1", "w2"} and book.missing(expected) == {"w1", "w2"}

    update = [np.full((3, 2), 4, np.float32), np.full(2, 4, np.float32)]
    assert book.header_refusal(0, specs_of(update), 3) is None
    assert book.fold("w1", 0, update, 3, 100) is None
    assert str(book.fold("w1", 0, update, 3, 100)) == "a second update for round 0"
    book.refused("w2", 0)
    assert book.missing(expected) == set()

    closed = book.close_round(None)
    assert closed.next_round == 1 and not closed.final and closed.contributors == ["chief", "w1"]
    np.testing.assert_allclose(closed.average[0], np.full((3, 2), (1 + 3 * 4) / 4))
    assert not closed.average[0].flags.writeable  # shared by broadcasts and the checkpoint
    assert str(book.fold("w2", 0, update, 3, 100)) == "stale update for round 0; the round has closed"


@pytest.mark.parametrize(
    ("round_number", "arrays", "samples", "reason"),
    [
        (-1, model(), 5, "stale update for round -1; the chief is at round 0"),
        (1, model(), 5, "update for round 1 is ahead of the chief's round 0"),
        (0, model(), 1 << 60, f"update claims {1 << 60} samples (at most {10**12})"),
        (0, [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)], 5,
         "update does not fit the model: tensor 0 is float32[2, 3], expected float32[3, 2]"),
        (0, model(), 0, "update carries no samples"),
    ],
)
def test_uploads_refused_from_their_header(
    round_number: int, arrays: list[np.ndarray], samples: int, reason: str
) -> None:
    assert str(book_with("w1").header_refusal(round_number, specs_of(arrays), samples)) == reason


def test_non_finite_values_are_refused_and_the_last_round_is_final() -> None:
    bad = model()
    bad[1][0] = np.inf
    assert str(RoundBook.content_refusal(bad)) == "tensor 1 contains NaN or Inf"
    book = book_with(rounds=1)
    book.contribute_own(model(), 1)
    assert book.close_round(None).final and book.finished


@pytest.mark.parametrize(
    ("hello", "code"),
    [({"num_samples": -5}, "bad-hello"), ({"num_samples": True}, "bad-hello"),
     ({"num_samples": "9"}, "bad-hello"), ({"protocol": 2, "num_samples": 1}, "unsupported-protocol"),
     ({"protocol": "1"}, "unsupported-protocol")],
)
def test_hello_fields_are_checked(hello: dict[str, object], code: str) -> None:
    refusal = book_with().admission_refusal("w9", hello)
    assert refusal is not None and refusal.code == code
    assert book_with().admission_refusal("w9", {"protocol": 1, "num_samples": 7}) is None


def test_a_sum_of_huge_finite_updates_stays_finite() -> None:
    book = book_with("w1")
    huge = [np.full((3, 2), 3e38, np.float32), np.full(2, -3e38, np.float32)]
    book.contribute_own(model(), 1)
    assert book.fold("w1", 0, huge, 1000, 1) is None
    closed = book.close_round(None)
    assert closed.refusal is None and all(np.isfinite(a).all() for a in closed.average)


def test_a_non_finite_average_is_never_adopted() -> None:
    book: RoundBook[Seat] = RoundBook(RoundRules(5), "chief")
    book.begin([np.ones(4, np.float64)], 0, False)  # float64 tensors can still overflow a float64 sum
    book.contribute_own([np.ones(4, np.float64)], 1)
    assert book.fold("w1", 0, [np.full(4, 1e308)], 1000, 1) is None
    closed = book.close_round(None)
    assert closed.refusal is not None and closed.refusal.code == "non-finite-average"
    np.testing.assert_array_equal(closed.average[0], np.ones(4))
    np.testing.assert_array_equal(book.global_weights[0], np.ones(4))
