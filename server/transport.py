"""Flower's Grid with clafed's transport: weights packed into one array, replies collected promptly.

- Every message's weights go packed (common/packing.py: one Array instead of one per tensor, so a
  few requests per hop instead of hundreds) and replies are unpacked before anyone reads them; a
  reply whose packing does not check out loses its weights, so the round refuses it.
- Flower 1.42's `send_and_receive` looks for replies every 3 s, so each message exchange (two per
  round: train, then validate) waited 1.5 s on average after the last site answered. Asking the
  SuperLink every quarter second costs one small local request each time (the ServerApp runs on
  the coordinator's machine).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from common import packing
from common.errors import ProtocolError
from common.messages import ARRAYS

POLL_SECONDS = 0.25


log = logging.getLogger("clafed.server")


class TransportGrid(Grid):
    """Every call goes to `grid`, with weights packed on the way out and unpacked on the way in;
    `send_and_receive` polls every `poll` seconds."""

    def __init__(self, grid: Grid, poll: float | None = None) -> None:
        self.grid, self.poll = grid, POLL_SECONDS if poll is None else poll

    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self):
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        for message in messages:
            if message.has_content():
                message.content = packing.packed(message.content)
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.grid.pull_messages(message_ids))
        for reply in replies:
            if reply.has_content():
                reply.content = unpacked_reply(reply)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push `messages`, then collect replies until each has one or `timeout` seconds passed."""
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            arrived = list(self.pull_messages(pending))
            replies += arrived
            pending -= {reply.metadata.reply_to_message_id for reply in arrived}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll if deadline is None else max(0.0, min(self.poll, deadline - time.monotonic())))
        return replies


def unpacked_reply(reply: Message) -> RecordDict:
    """The reply's content with its weights unpacked, or without weights if they do not check out."""
    try:
        return packing.unpacked(reply.content)
    except ProtocolError as err:
        log.error("reply from node %s: %s; its weights are dropped", reply.metadata.src_node_id, err)
        return RecordDict({key: record for key, record in reply.content.items()
                           if key not in (ARRAYS, packing.INDEX)})
