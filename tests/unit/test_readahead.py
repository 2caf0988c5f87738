"""Issue 14 item 3 in pieces, without sockets: an upload that finds every staging buffer taken reads
ahead into blocks of the pool's read-ahead budget, moves into a buffer when one frees, and arrives
byte for byte (and digest for digest) as it would have straight into a buffer; a failed one gives
its blocks back; the budget is what chief_memory_mb leaves after the whole buffers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgefed.config import FederationSection, config_from_dict
from edgefed.federation.deadlines import UploadDeadlines
from edgefed.federation.readahead import BLOCK, PoolClosed, ReadAhead
from edgefed.federation.staging import StagingPool, readahead_bytes, staging_limit, staging_pool
from edgefed.wire import Frame, FrameReader, MessageType, TensorSpec, encode_tensor_frame
from tests.conftest import wait_for

# 2.5 MiB in three tensors: the blocks (1 MiB) and the tensors' edges do not line up
ARRAYS = [np.arange(300_000, dtype=np.float32), np.linspace(-3, 3, 200 * 1000, dtype=np.float32).reshape(200, 1000),
          np.full(155_360, 7.5, np.float32)]
SPECS = [TensorSpec("float32", a.shape) for a in ARRAYS]
FRAME = b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, 3, ARRAYS, 42))


def _reader(pool: StagingPool, staged: list[list[np.ndarray]], uploads: list[ReadAhead]) -> FrameReader:
    def allocate(_header: object, _n: int, specs: list[TensorSpec]) -> ReadAhead:
        uploads.append(ReadAhead(pool, specs, staged.append))
        return uploads[-1]

    return FrameReader(allocator=allocate)


def _assert_whole(frame: Frame) -> None:
    assert frame.tensors is not None and frame.num_samples == 42
    for got, want in zip(frame.tensors, ARRAYS, strict=True):
        np.testing.assert_array_equal(got, want)
    assert frame.sha256 == FrameReader().feed(FRAME)[0].sha256


def test_with_a_buffer_free_the_upload_goes_straight_into_it() -> None:
    pool, staged, uploads = StagingPool(SPECS, 1, readahead=BLOCK), [], []
    frames = _reader(pool, staged, uploads).feed(FRAME)
    _assert_whole(frames[0])
    assert frames[0].tensors is staged[0] and pool.peak_ahead == 0 and pool.in_use == 1


def test_an_upload_reads_ahead_while_the_buffer_is_taken_and_moves_into_it_when_it_frees() -> None:
    pool, staged, uploads = StagingPool(SPECS, 1, readahead=3 * BLOCK), [], []
    held = pool.acquire()
    assert held is not None
    reader = _reader(pool, staged, uploads)
    half = len(FRAME) // 2
    assert reader.feed(FRAME[:half]) == []
    assert not staged and pool.ahead == 2 * BLOCK  # about 1.25 MiB of data: two blocks
    pool.release(held)
    frames = reader.feed(FRAME[half:])
    _assert_whole(frames[0])
    assert frames[0].tensors is held and pool.ahead == 0 and pool.peak_ahead == 2 * BLOCK


def test_an_upload_read_ahead_to_its_end_waits_for_a_buffer_then_arrives_whole() -> None:
    pool, staged, uploads = StagingPool(SPECS, 1, readahead=3 * BLOCK), [], []
    held = pool.acquire()
    assert held is not None
    frames: list[Frame] = []
    feeder = threading.Thread(target=lambda: frames.extend(_reader(pool, staged, uploads).feed(FRAME)))
    feeder.start()
    wait_for(lambda: pool.ahead == sum(s.nbytes for s in SPECS), 10,
             "the whole upload in read-ahead blocks")
    assert feeder.is_alive() and not frames  # complete() waits for a buffer
    pool.release(held)
    feeder.join(timeout=10)
    _assert_whole(frames[0])
    assert pool.ahead == 0


def test_a_full_budget_holds_the_upload_back_until_a_buffer_frees() -> None:
    pool, staged, uploads = StagingPool(SPECS, 1, readahead=BLOCK), [], []
    held = pool.acquire()
    assert held is not None
    frames: list[Frame] = []
    feeder = threading.Thread(target=lambda: frames.extend(_reader(pool, staged, uploads).feed(FRAME)))
    feeder.start()
    wait_for(lambda: pool.ahead == BLOCK, 10, "one block of read-ahead")
    assert feeder.is_alive() and pool.peak_ahead == BLOCK  # never more than the budget
    pool.release(held)
    feeder.join(timeout=10)
    _assert_whole(frames[0])


def test_a_failed_upload_gives_its_blocks_back_and_a_closing_pool_wakes_a_waiter() -> None:
    pool, staged, uploads = StagingPool(SPECS, 1, readahead=2 * BLOCK), [], []
    assert pool.acquire() is not None
    _reader(pool, staged, uploads).feed(FRAME[: len(FRAME) // 2])
    assert pool.ahead == 2 * BLOCK
    uploads[0].abandon()  # the worker disconnected half-way
    assert pool.ahead == 0 and not staged
    errors: list[Exception] = []

    def feed() -> None:
        try:
            _reader(pool, staged, uploads).feed(FRAME)
        except PoolClosed as exc:
            errors.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    wait_for(lambda: pool.ahead == 2 * BLOCK, 10, "the budget to fill")
    pool.close()
    feeder.join(timeout=10)
    assert len(errors) == 1 and not staged


def _federation(**values: object) -> FederationSection:
    return config_from_dict({"node": {"name": "c", "role": "chief"}, "federation": values}).federation


@pytest.mark.parametrize(("memory_mb", "buffers", "ahead_mb"), [(0, 1, 0), (64, 2, 0), (72, 2, 8), (100, 4, 4)])
def test_the_read_ahead_budget_is_what_the_whole_buffers_leave(memory_mb: int, buffers: int, ahead_mb: int) -> None:
    model = [TensorSpec("float32", (2048, 2048))]  # 16 MiB: a float32 running mean, 32 MiB held
    federation = _federation(chief_memory_mb=memory_mb)
    assert (staging_limit(model, federation), readahead_bytes(model, federation)) == (buffers, ahead_mb << 20)


def test_a_paused_upload_clock_keeps_the_time_it_had_left() -> None:
    late: list[str] = []
    fired = threading.Event()
    # no grace, 1000 B/s: "waiting" has 1 s, "sending" 0.1 s
    deadlines: UploadDeadlines[str] = UploadDeadlines(1000, 0.0, lambda key: (late.append(key), fired.set()))
    deadlines.start()
    try:
        deadlines.begin("waiting", 1000)
        deadlines.pause("waiting")  # held back for memory: not the worker's fault
        deadlines.begin("sending", 100)
        assert fired.wait(10) and late == ["sending"]
        fired.clear()
        assert not fired.wait(1.2)  # paused: past its second and still not late
        started = time.monotonic()
        deadlines.resume("waiting")
        assert fired.wait(10) and late == ["sending", "waiting"]
        assert time.monotonic() - started > 0.5  # what it had left, not a deadline already passed
    finally:
        deadlines.close()


def test_a_transport_of_whole_messages_gets_no_read_ahead() -> None:
    model, federation = [TensorSpec("float32", (2048, 2048))], _federation(chief_memory_mb=72)
    assert staging_pool(model, federation, model).readahead == 8 << 20
    assert staging_pool(model, federation, model, streams=False).readahead == 0  # MPI: a block < a message
