"""clafed's transport: weights packed both ways, replies collected as they arrive."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.disclosure import SiteFailure
from client.transport import packed_transport
from common import packing
from common.errors import ProtocolError
from common.messages import ARRAYS, CONFIG, METRICS
from server.transport import TransportGrid

STATE = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(7),
         "half": torch.randn(5).half(), "empty": torch.zeros(0, 2)}


def content() -> RecordDict:
    return RecordDict({ARRAYS: ArrayRecord(STATE), CONFIG: ConfigRecord({"phase": "shared"}),
                       METRICS: MetricRecord({"num-examples": 3})})


def numpy_of(record: RecordDict) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record[ARRAYS].items()}


def test_packing_keeps_every_tensor_exactly_in_one_array():
    original = content()
    packed = packing.packed(original)
    assert list(packed[ARRAYS]) == [packing.PACKED] and packing.is_packed(packed)
    assert list(original[ARRAYS]) == list(STATE)  # the original is untouched
    back = numpy_of(packing.unpacked(packed))
    assert list(back) == list(STATE)
    for key, tensor in STATE.items():
        assert back[key].dtype == tensor.numpy().dtype and np.array_equal(back[key], tensor.numpy())
    assert packing.unpacked(packing.packed(original))[CONFIG]["phase"] == "shared"


def tampered(**changes) -> RecordDict:
    packed = packing.packed(content())
    index = json.loads(packed[packing.INDEX]["index"])
    index.update(changes)
    packed[packing.INDEX] = ConfigRecord({"index": json.dumps(index)})
    return packed


@pytest.mark.parametrize("changes, says", [
    ({"dtypes": ["object", "int64", "float16", "float32"]}, "not one of model weights"),
    ({"shapes": [[4, 3, 3, 4], [], [5], [0, 2]]}, "describes"),
    ({"shapes": [[4, 3, 3, 3], [-1], [5], [0, 2]]}, "not a list of sizes"),
    ({"names": ["a", "a", "b", "c"]}, "distinct"),
    ({"names": ["a"]}, "different numbers"),
])
def test_an_index_that_does_not_describe_the_buffer_is_refused(changes, says):
    with pytest.raises(ProtocolError, match=says):
        packing.unpacked(tampered(**changes))


def test_a_packed_message_with_more_arrays_is_refused():
    packed = packing.packed(content())
    packed[ARRAYS] = ArrayRecord({packing.PACKED: packed[ARRAYS][packing.PACKED], "extra": Array(np.zeros(3))})
    with pytest.raises(ProtocolError, match="one array"):
        packing.unpacked(packed)


def request(record: RecordDict) -> Message:
    return Message(record, dst_node_id=5, message_type="train")


def test_the_clientapp_sees_plain_weights_and_answers_packed_when_asked_packed():
    seen = []

    def handler(message, _context):
        seen.append(list(message.content[ARRAYS]))
        return Message(RecordDict({ARRAYS: message.content[ARRAYS]}), reply_to=message)

    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    reply = packed_transport(request(packing.packed(content())), context, handler)
    assert seen[-1] == list(STATE) and packing.is_packed(reply.content)
    plain = packed_transport(request(content()), context, handler)
    assert not packing.is_packed(plain.content) and list(plain.content[ARRAYS]) == list(STATE)
    with pytest.raises(SiteFailure, match="describes"):
        packed_transport(request(tampered(shapes=[[1], [], [5], [0, 2]])), context, handler)


class SlowSites:
    """A grid whose sites answer (echoing the weights they got) at set times after the push."""

    def __init__(self, delays: dict[int, float], reply_content=None) -> None:
        self.delays, self.pushed, self.sent, self.reply_content = delays, 0.0, {}, reply_content

    def push_messages(self, messages):
        self.pushed = time.monotonic()
        ids = []
        for message in messages:
            ids.append(str(message.metadata.dst_node_id))
            self.sent[ids[-1]] = message
        return ids

    def pull_messages(self, message_ids):
        elapsed = time.monotonic() - self.pushed
        replies = []
        for i in message_ids:
            if elapsed >= self.delays[int(i)]:
                reply = Message(self.reply_content or self.sent[i].content, reply_to=self.sent[i])
                reply.metadata.__dict__["_reply_to_message_id"] = i
                reply.metadata.__dict__["_src_node_id"] = int(i)
                replies.append(reply)
        return replies

    def get_node_ids(self):
        return [1, 2]


def outgoing(*nodes: int) -> list[Message]:
    return [Message(content(), dst_node_id=n, message_type="train") for n in nodes]


def test_weights_leave_packed_and_replies_are_read_unpacked_as_soon_as_all_arrived():
    sites = SlowSites({1: 0.1, 2: 0.6})
    grid = TransportGrid(sites, poll=0.05)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = list(grid.send_and_receive(outgoing(1, 2), timeout=10))
    took = time.monotonic() - started
    assert all(packing.is_packed(m.content) for m in sites.sent.values())
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2]
    assert all(list(r.content[ARRAYS]) == list(STATE) for r in replies)
    assert 0.6 <= took < 1.5  # Flower's Grid would look again only after 3 s


def test_missing_replies_end_at_the_timeout_with_those_that_came():
    grid = TransportGrid(SlowSites({1: 0.0, 2: 99.0}), poll=0.05)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = list(grid.send_and_receive(outgoing(1, 2), timeout=0.4))
    assert [r.metadata.src_node_id for r in replies] == [1]
    assert 0.4 <= time.monotonic() - started < 1.0


def test_a_reply_whose_packing_does_not_check_out_loses_its_weights():
    grid = TransportGrid(SlowSites({1: 0.0}, reply_content=tampered(dtypes=["float32", "int64", "float16", "U8"])),
                         poll=0.05)  # type: ignore[arg-type]
    (reply,) = grid.send_and_receive(outgoing(1), timeout=5)
    assert ARRAYS not in reply.content and packing.INDEX not in reply.content
    assert reply.content[METRICS]["num-examples"] == 3  # the round's checks refuse it for lack of weights
