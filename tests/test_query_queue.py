"""The query queue (ROS-free): every admitted request is answered once, in arrival order, or BUSY."""
import threading
import time

import pytest

from earl_ros.live.query_queue import QueryQueue
from earl_ros.model.errors import BusyError


def make(max_waiting=3):
    refused = []
    q = QueryQueue(max_waiting, lambda t, e: refused.append((t.payload, e)))
    return q, refused


def test_workers_get_requests_strictly_in_arrival_order():
    q, _ = make(max_waiting=10)
    for i in range(5):
        q.submit(i, timeout_s=60)
    order = [q.take(0.1).payload for _ in range(5)]
    assert order == [0, 1, 2, 3, 4]
    assert q.take(0.01) is None


def test_a_full_queue_answers_busy_at_once_and_names_its_length():
    q, _ = make(max_waiting=2)
    q.submit("a", 60)
    q.submit("b", 60)
    t0 = time.monotonic()
    with pytest.raises(BusyError, match="2 queries are already waiting"):
        q.submit("c", 60)
    assert time.monotonic() - t0 < 0.5
    assert q.stats()["rejected_busy"] == 1


def test_running_requests_do_not_count_against_the_waiting_bound():
    q, _ = make(max_waiting=1)
    q.submit("a", 60)
    q.take(0.1)  # now running
    q.submit("b", 60)  # the one waiting place is free again
    with pytest.raises(BusyError, match="1 running"):
        q.submit("c", 60)


def test_a_request_that_waits_past_its_timeout_is_refused_busy_exactly_once():
    q, refused = make()
    q.submit("slow", timeout_s=0.05)
    time.sleep(0.1)
    assert q.expire_overdue() == 1
    assert q.expire_overdue() == 0
    assert q.take(0.01) is None  # never handed to a worker as well
    assert [p for p, _ in refused] == ["slow"] and isinstance(refused[0][1], BusyError)
    assert "query_timeout" in refused[0][1].message


def test_take_also_expires_overdue_requests_before_serving_the_next():
    q, refused = make()
    q.submit("old", timeout_s=0.01)
    time.sleep(0.05)
    q.submit("new", timeout_s=60)
    assert q.take(0.1).payload == "new"
    assert [p for p, _ in refused] == ["old"]


def test_accepted_always_equals_answered_plus_in_flight():
    q, _ = make(max_waiting=50)
    seen = []

    def check():
        s = q.stats()
        seen.append(s["accepted"] == s["answered"] + s["in_flight"])

    def worker():
        while True:
            t = q.take(0.2)
            if t is None:
                return
            check()
            q.done(t)
            check()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for i in range(40):
        q.submit(i, 60)
        check()
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    s = q.stats()
    assert all(seen) and s["accepted"] == s["answered"] == 40 and s["in_flight"] == 0


def test_close_refuses_what_waits_and_everything_after():
    q, refused = make()
    q.submit("waiting", 60)
    q.close()
    assert [p for p, _ in refused] == ["waiting"]
    with pytest.raises(BusyError, match="shutting down"):
        q.submit("late", 60)
    assert q.take(0.01) is None


def test_wait_times_are_reported():
    q, _ = make()
    q.submit("a", 60)
    time.sleep(0.05)
    q.done(q.take(0.1))
    s = q.stats()
    assert s["wait_s_max"] >= 0.04 and s["wait_s_p50"] == s["wait_s_max"]


def test_queue_needs_room_for_one():
    with pytest.raises(ValueError):
        QueryQueue(0, lambda t, e: None)


def test_a_cancelled_waiting_request_leaves_the_queue_and_is_finished_once():
    from earl_ros.model.errors import CancelledError

    q, refused = make()
    a = q.submit("a", 60)
    b = q.submit("b", 60)
    assert q.cancel(b, CancelledError("cancelled while queued"))
    assert not q.cancel(b, CancelledError("again")), "finished once"
    assert [p for p, _ in refused] == ["b"] and refused[0][1].code == "CANCELLED"
    assert q.take(0.01) is a and q.take(0.01) is None
    assert not q.cancel(a, CancelledError("running")), "a running request is the worker's to answer"
    s = q.stats()
    assert s["cancelled"] == 1 and s["accepted"] == s["answered"] + s["in_flight"]
