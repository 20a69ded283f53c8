"""The `ask` action of the `earl` node: the query service's request as a goal, streamed and cancellable.

A goal goes through the same checks, queue and workers as a `query` request (so the two share the
node's capacity and arrival order); while it runs, feedback carries its stage and the answer text
token by token (earl_ros.model.streaming). A cancel takes a waiting goal out of the queue at once, or
stops a running one at its model's next token; the goal then ends CANCELED with error_code
CANCELLED and the worker is free for the next request. Served by the query node's executor, like
the service: handlers never block it.
"""
from __future__ import annotations

import time

from rclpy.callback_groups import ReentrantCallbackGroup

from earl_ros.model.streaming import AnswerProgress

ACTION_NAME = "ask"
RESPONSE_FIELDS = ("success", "error_code", "message", "header", "result", "mask", "track_ids")


class AskAction:
    def __init__(self, server):
        """`server`: the QueryServer whose node, session and finishing steps the action shares."""
        from earl_interfaces.action import Ask
        from rclpy.action import ActionServer

        self.server, self.session, self.Ask = server, server.session, Ask
        self._running: dict[bytes, object] = {}  # goal id -> PendingQuery, while admitted
        self.action = ActionServer(server.query_node, Ask, ACTION_NAME, execute_callback=self._execute,
                                   cancel_callback=self._on_cancel, callback_group=ReentrantCallbackGroup())

    def destroy(self) -> None:
        self.action.destroy()

    def _on_cancel(self, goal_handle):
        from rclpy.action import CancelResponse

        pending = self._running.get(bytes(goal_handle.goal_id.uuid))
        if pending is not None:
            self.session.cancel(pending)
        return CancelResponse.ACCEPT

    async def _execute(self, goal_handle):
        from earl_interfaces.srv import Query

        response = Query.Response()
        pending = self.server.admit(goal_handle.request, response, time.perf_counter(), self._progress(goal_handle))
        if pending is None:
            return self._result(goal_handle, response)
        key = bytes(goal_handle.goal_id.uuid)
        self._running[key] = pending
        if goal_handle.is_cancel_requested:  # cancelled before it was admitted
            self.session.cancel(pending)
        try:
            await pending.future
        finally:
            self._running.pop(key, None)
        return self._result(goal_handle, response)

    def _progress(self, goal_handle) -> AnswerProgress:
        """Feedback messages from the worker thread, one per stage and one per generated token."""
        Feedback = self.Ask.Feedback
        progress = AnswerProgress(
            on_stage=lambda stage: goal_handle.publish_feedback(Feedback(stage=stage)),
            on_text=lambda text, tokens: goal_handle.publish_feedback(
                Feedback(stage=progress.stage_name, text=text, tokens=tokens)))
        return progress

    def _result(self, goal_handle, response):
        result = self.Ask.Result(**{f: getattr(response, f) for f in RESPONSE_FIELDS})
        if response.error_code == "CANCELLED" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif response.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result
