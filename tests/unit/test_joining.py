"""The join rules (edgefed/federation/joining.py): fixed shards for expected workers, a shard count
that fits every index handed out, and when round 1 may start."""

from __future__ import annotations

import itertools

import pytest

from edgefed.config import ConfigError, config_from_dict, dump_config
from edgefed.federation.joining import JoinPlan
from edgefed.federation.rounds import RoundBook, RoundRules, Seat
from edgefed.wire import MessageError, Welcome


@pytest.mark.parametrize("order", list(itertools.permutations(["a", "b", "c"])), ids="".join)
def test_expected_workers_keep_their_index_whatever_the_order(order: tuple[str, ...]) -> None:
    plan = JoinPlan(["a", "b", "c"])
    joined: list[str] = []
    for name in order:
        index = plan.task_index_for(name)
        joined.append(name)
        assert index == "abc".index(name) + 1
        assert 0 < index < plan.shard_count(len(joined))
    assert plan.shard_count(3) == 4


def test_unexpected_workers_take_the_next_index_and_keep_it() -> None:
    plan = JoinPlan(["a"])
    assert plan.task_index_for("z") == 2
    assert plan.task_index_for("y") == 3
    assert plan.task_index_for("z") == 2
    assert plan.shard_count(alive=1) == 4  # y and z have gone but their indices stay valid


def test_ready_waits_for_every_expected_worker_then_min_workers() -> None:
    plan = JoinPlan(["a", "b"], min_workers=1)
    assert not plan.ready({"a"})  # expected workers win over min_workers
    assert plan.missing({"a"}) == ["b"]
    assert plan.ready({"a", "b", "x"})
    assert not JoinPlan(min_workers=2).ready({"a"})
    assert JoinPlan(min_workers=2).ready({"a", "b"})
    assert not JoinPlan().ready({"a", "b"})  # neither: wait_time decides


def test_book_welcomes_a_late_joiner_after_the_others_left_with_a_shard_that_exists() -> None:
    book: RoundBook[Seat] = RoundBook(RoundRules(2, min_workers=1), "chief")
    first = Seat("w2", book.task_index_for("w2"))
    book.seat(first)
    book.leave(first)
    late = Seat("w1", book.task_index_for("w1"))
    book.seat(late)
    assert late.task_index == 2
    assert book.shard_count() == 3  # was alive + 1 == 2: "task index 2 is outside 0..1"


def test_expected_workers_config_round_trips_and_is_checked() -> None:
    raw = {"node": {"name": "c", "role": "chief"}, "federation": {"expected_workers": ["pi-1", "pi-2"]}}
    assert config_from_dict(raw).federation.expected_workers == ("pi-1", "pi-2")
    assert 'expected_workers = ["pi-1", "pi-2"]' in dump_config(raw)
    for bad, message in ((["pi 1"], "not a node name"), ("pi-1", "must be a list"), (["a", "a"], "twice"),
                         ([3], "not a node name")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**raw, "federation": {"expected_workers": bad}})
    with pytest.raises(ConfigError, match="lists the node itself"):
        config_from_dict({**raw, "federation": {"expected_workers": ["pi-1", "c"]}})


def test_welcome_refuses_a_task_index_without_a_shard() -> None:
    with pytest.raises(MessageError, match="task_index 2 must be below total 2"):
        Welcome(task_index=2, total=2, round=0, chief="chief")


def test_a_membership_reload_keeps_indices_and_stops_waiting_for_a_removed_worker() -> None:
    plan = JoinPlan(["a", "b", "c"])
    assert plan.task_index_for("x") == 4  # an unexpected joiner
    assert not plan.ready({"a", "b"})
    assert plan.set_expected(["a", "b"]) == ([], ["c"])
    assert plan.ready({"a", "b"}) and plan.missing({"a"}) == ["b"]
    # indices handed out stay; a newly expected worker takes the next free one, a rejoin keeps its own
    assert plan.set_expected(["a", "b", "d", "x"]) == (["d", "x"], [])
    assert [plan.task_index_for(name) for name in ("a", "b", "c", "x", "d")] == [1, 2, 3, 4, 5]
    assert plan.shard_count(alive=2) == 6
