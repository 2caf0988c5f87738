"""pipelined.PartialFold through the real frame reader: an upload folded while it arrives gives the
mean bit for bit as folding it whole did, and every early end leaves the mean exactly as it was."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgefed.federation.aggregation import StreamingAggregator
from edgefed.federation.pipelined import PartialFold, State, pipelines
from edgefed.federation.rounds import RoundBook, RoundRules, Seat
from edgefed.federation.running_mean import CHUNK
from edgefed.wire import Frame, FrameReader, MessageType, ReasonCode, encode_tensor_frame, specs_of

RNG = np.random.default_rng(14)
# past EXACT_SUM_MAX_BYTES (8 MiB) of float32: a float32 running mean; an odd tail, an empty tensor
MODEL = [RNG.standard_normal((1024, 2100)).astype(np.float32), np.zeros(0, np.float32),
         RNG.standard_normal(CHUNK * 3 + 17).astype(np.float32)]
STEP = 16 << 10  # bytes per read, like a TLS record


def book_with_one_update() -> RoundBook[Seat]:
    """Round 0 open, the chief's own weights and one update already folded (so the mean is not its
    first update's copy: an undo must bring back real values)."""
    book: RoundBook[Seat] = RoundBook(RoundRules(rounds=3), "chief")
    book.begin([np.array(w) for w in MODEL], 0, False)
    book.contribute_own([w * np.float32(0.5) for w in MODEL], 7)
    assert book.fold("early", 0, [w + np.float32(0.25) for w in MODEL], 5, 100) is None
    return book


def update(offset: float) -> list[np.ndarray]:
    return [(w + np.float32(offset)).astype(np.float32) for w in MODEL]


def means(book: RoundBook[Seat]) -> list[np.ndarray]:
    assert book.current is not None and isinstance(book.current.aggregator, StreamingAggregator)
    return [np.array(m) for m in book.current.aggregator.accumulators()]


def send(book: RoundBook[Seat], name: str, weights: list[np.ndarray], samples: int,
         upto: int | None = None) -> tuple[PartialFold, Frame | None]:
    """The frame of weights through a FrameReader whose allocator gives a PartialFold; upto: stop there."""
    data = b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, 0, weights, samples))
    buffers = [np.empty(w.shape, np.float32) for w in weights]
    holder: list[PartialFold] = []

    def allocate(header: object, num_samples: int, specs: object) -> PartialFold:
        holder.append(PartialFold(buffers, book, threading.Condition(), name, 0, num_samples))
        return holder[0]

    reader, view, frame = FrameReader(allocator=allocate, hash_payloads=True), memoryview(data), None
    end = len(data) if upto is None else upto
    position = 0
    while position < end:
        target = reader.buffer()
        count = min(len(target), STEP, end - position)
        target[:count] = view[position:position + count]
        position += count
        frame = reader.advance(count)
    return holder[0], frame


def test_only_fedavg_of_a_float32_mean_with_one_plain_buffer_is_pipelined() -> None:
    specs = specs_of(MODEL)
    assert pipelines(RoundRules(rounds=1), specs, 1, 0)
    assert not pipelines(RoundRules(rounds=1), specs, 2, 0)  # two buffers: whole uploads fold beside it
    assert not pipelines(RoundRules(rounds=1), specs, 1, 1 << 20)  # read-ahead
    assert not pipelines(RoundRules(rounds=1, aggregation="clip"), specs, 1, 0)
    assert not pipelines(RoundRules(rounds=1, screen_factor=3.0), specs, 1, 0)
    assert not pipelines(RoundRules(rounds=1), specs_of([np.zeros(1000, np.float32)]), 1, 0)  # a float64 sum


def test_an_upload_folded_while_it_arrives_gives_the_whole_uploads_mean_bit_for_bit() -> None:
    whole, piped = book_with_one_update(), book_with_one_update()
    assert whole.fold("w1", 0, update(-1.5), 11, 100) is None
    partial, frame = send(piped, "w1", update(-1.5), 11)
    assert frame is not None and partial.state is State.FOLDING
    assert piped.folding() and partial.commit(100) is None and not piped.folding()
    for got, want in zip(means(piped), means(whole), strict=True):
        np.testing.assert_array_equal(got, want)
    closed, reference = piped.close_round(None), whole.close_round(None)
    assert closed.contributors == reference.contributors == ["chief", "early", "w1"]
    assert closed.samples == reference.samples == 23
    for got, want in zip(closed.average, reference.average, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_frames_digest_covers_the_bytes_as_received() -> None:
    plain = FrameReader(hash_payloads=True).feed(
        b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, 0, update(1.0), 3)))[0]
    _, frame = send(book_with_one_update(), "w1", update(1.0), 3)
    assert frame is not None and frame.sha256 == plain.sha256  # hashed before the buffer became the undo log


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_an_upload_cut_short_leaves_the_mean_exactly_as_it_was(fraction: float) -> None:
    book = book_with_one_update()
    before = means(book)
    data_bytes = sum(w.nbytes for w in MODEL)
    partial, frame = send(book, "w1", update(3.0), 9, upto=int(data_bytes * fraction))
    assert frame is None and partial.state is State.FOLDING and book.folding()
    assert any(not np.array_equal(a, b) for a, b in zip(means(book), before, strict=True))  # it did fold
    partial.abandon()  # the connection failed (UploadSlots.release)
    assert partial.state is State.UNDONE and not book.folding()
    for got, want in zip(means(book), before, strict=True):
        np.testing.assert_array_equal(got, want)
    assert book.current is not None and "w1" not in book.current.answered


def test_nan_in_the_last_chunk_is_refused_and_undone() -> None:
    book = book_with_one_update()
    before = means(book)
    bad = update(2.0)
    bad[-1][-1] = np.inf
    partial, frame = send(book, "mallory", bad, 9)
    assert frame is not None and partial.state is State.REFUSED
    refusal = partial.commit(100)
    assert refusal is not None and refusal.code == ReasonCode.NON_FINITE and "tensor 2" in refusal.reason
    for got, want in zip(means(book), before, strict=True):
        np.testing.assert_array_equal(got, want)
    closed = book.close_round(None)
    assert closed.contributors == ["chief", "early"] and closed.samples == 12


def test_a_round_closing_mid_upload_takes_its_part_out_and_the_upload_is_then_stale() -> None:
    book, reference = book_with_one_update(), book_with_one_update()
    partial, _ = send(book, "slow", update(5.0), 9, upto=(4 << 20))
    assert partial.state is State.FOLDING
    closed, want = book.close_round(None), reference.close_round(None)
    assert partial.state is State.UNDONE and closed.contributors == ["chief", "early"]
    for got, expected in zip(closed.average, want.average, strict=True):
        np.testing.assert_array_equal(got, expected)
    refusal = partial.commit(100)  # its last bytes came after the close
    assert refusal is not None and refusal.code == ReasonCode.STALE


def test_nothing_else_folds_while_an_upload_is_half_folded() -> None:
    book = book_with_one_update()
    partial, _ = send(book, "w1", update(1.0), 9, upto=(2 << 20))
    assert book.folding()
    with pytest.raises(RuntimeError):
        book.fold("w2", 0, update(2.0), 3, 100)
    with pytest.raises(RuntimeError):
        book.contribute_own(MODEL, 1)
    second, _ = send(book, "w2", update(2.0), 3)  # a second pipelined upload cannot take the round: whole-upload way
    assert second.state is State.PASSIVE and not second.folds
    partial.abandon()
    assert book.fold("w2", 0, update(2.0), 3, 100) is None


def test_a_rounds_first_update_is_folded_at_its_last_byte_not_before() -> None:
    book: RoundBook[Seat] = RoundBook(RoundRules(rounds=3), "chief")
    book.begin([np.array(w) for w in MODEL], 0, False)
    partial, _ = send(book, "w1", update(1.0), 9, upto=(4 << 20))
    assert partial.state is State.WAITING and not book.folding()  # no mean made early (peak memory)
    partial, frame = send(book, "w1", update(1.0), 9)
    assert frame is not None and partial.state is State.FOLDING and partial.commit(100) is None
    book.contribute_own(MODEL, 3)
    reference: RoundBook[Seat] = RoundBook(RoundRules(rounds=3), "chief")
    reference.begin([np.array(w) for w in MODEL], 0, False)
    assert reference.fold("w1", 0, update(1.0), 9, 100) is None
    reference.contribute_own(MODEL, 3)
    for got, want in zip(book.close_round(None).average, reference.close_round(None).average, strict=True):
        np.testing.assert_array_equal(got, want)
