"""The ingress commits, per partition, the first offset not handled yet."""

from __future__ import annotations

from aiokafka import TopicPartition

from bridge.ingress_consumer import _Watermarks

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_the_commit_waits_for_the_first_message_in_hand() -> None:
    marks = _Watermarks()
    for offset in (10, 11, 12):
        marks.take(P0, offset)
    assert marks.to_commit({P0}) == {P0: 10}  # nothing handled yet: 10 is next
    marks.committed({P0: 10})
    marks.done(P0, 11)
    marks.done(P0, 12)
    assert marks.to_commit({P0}) == {}  # 10 (slow) holds the commit back
    marks.done(P0, 10)
    assert marks.to_commit({P0}) == {P0: 13}


def test_only_assigned_partitions_are_committed_and_revoked_ones_are_forgotten() -> None:
    marks = _Watermarks()
    marks.take(P0, 5)
    marks.take(P1, 7)
    marks.done(P0, 5)
    marks.done(P1, 7)
    assert marks.to_commit({P0}) == {P0: 6}
    marks.forget([P1])
    marks.done(P1, 7)  # a late finish on a partition this member lost: ignored
    assert marks.to_commit({P0, P1}) == {P0: 6}
