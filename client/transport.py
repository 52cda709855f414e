"""The ClientApp's side of clafed's transport: weights arrive and leave packed (common/packing.py).

A request whose weights are packed is unpacked before any handler sees it, and the handler's
reply is packed the same way; a request that is not packed is answered unpacked. An index that
does not describe its buffer is refused like any other malformed message.
"""
from __future__ import annotations

import logging

from flwr.app import Context, Message

from client.disclosure import SiteFailure
from common import packing
from common.errors import ProtocolError

log = logging.getLogger("clafed.client")


def packed_transport(message: Message, context: Context, call_next) -> Message:
    """A Flower mod: unpack the request's weights, pack the reply's when the request was packed."""
    was_packed = message.has_content() and packing.is_packed(message.content)
    if was_packed:
        try:
            message.content = packing.unpacked(message.content)
        except ProtocolError as err:
            log.error("refused a %s message: %s", message.metadata.message_type, err)
            raise SiteFailure(str(err)) from None
    reply = call_next(message, context)
    if was_packed and reply.has_content():
        reply.content = packing.packed(reply.content)
    return reply
