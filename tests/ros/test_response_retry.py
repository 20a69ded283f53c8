"""A response Fast DDS refuses (client not matched yet) is resent until it goes out, and counted."""
import warnings

import pytest

from earl_ros.ros import response_retry


class FlakyService:
    """Refuses the first `refusals` sends the way rclpy does: a RuntimeWarning, no exception."""

    def __init__(self, refusals):
        self.refusals, self.sent = refusals, []

    def send_response(self, response, header):
        if self.refusals:
            self.refusals -= 1
            warnings.warn("failed to send response (timeout): client will not receive response", RuntimeWarning)
            return
        self.sent.append((response, header))


def test_refused_response_is_resent_until_delivered():
    srv, events = FlakyService(refusals=3), []
    resender = response_retry.install(srv, lambda e, n: events.append((e, n)), retry_pause=0.0)
    srv.send_response("resp", "hdr")
    assert resender.wait_idle(5.0)
    assert srv.sent == [("resp", "hdr")]
    assert events == [("resent", 4)]


def test_first_time_delivery_reports_nothing():
    srv, events = FlakyService(refusals=0), []
    response_retry.install(srv, lambda e, n: events.append((e, n)))
    srv.send_response("resp", "hdr")
    assert srv.sent == [("resp", "hdr")] and events == []


def test_response_that_never_goes_out_is_counted_lost_not_retried_forever():
    srv, events = FlakyService(refusals=10**9), []
    resender = response_retry.install(srv, lambda e, n: events.append((e, n)), give_up_after=0.05,
                                      retry_pause=0.001)
    srv.send_response("resp", "hdr")
    assert resender.wait_idle(5.0)
    assert srv.sent == [] and len(events) == 1 and events[0][0] == "lost" and events[0][1] > 1


def test_a_vanished_client_does_not_hold_up_the_next_response():
    """The first attempt is inline; resends run beside it, so the caller (the executor) moves on."""
    class OneClientGone:
        def __init__(self):
            self.sent = []

        def send_response(self, response, header):
            if header == "gone":
                warnings.warn("failed to send response (timeout): client will not receive response", RuntimeWarning)
                return
            self.sent.append(response)

    srv, events = OneClientGone(), []
    resender = response_retry.install(srv, lambda e, n: events.append((e, n)), give_up_after=0.5, retry_pause=0.01)
    srv.send_response("to the vanished client", "gone")
    srv.send_response("to the next client", "here")
    assert srv.sent == ["to the next client"] and events == []  # not waiting for the 0.5 s of resends
    assert resender.wait_idle(5.0)
    assert events and events[0][0] == "lost"


def test_unrelated_warnings_still_reach_the_caller():
    class Noisy:
        def send_response(self, response, header):
            warnings.warn("something else", UserWarning)

    srv = Noisy()
    response_retry.install(srv, lambda e, n: None)
    with pytest.warns(UserWarning, match="something else"):
        srv.send_response("resp", "hdr")
