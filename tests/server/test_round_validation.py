"""One exchange a round: a round's global network is validated by the next round's training replies."""
from __future__ import annotations

from flwr.app import ConfigRecord, Message, RecordDict

from common import messages as msg
from common.model import SubModel
from server.settings import Settings
from server.strategy import make_strategy
from tests.server.test_strategy import Grid


def reply(node: int, arrays, validation: dict) -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=msg.TRAIN)
    figures = {msg.NUM_EXAMPLES: 5, "loss": 1.0, "accuracy": 0.5,
               **{msg.VALIDATION_PREFIX + k: v for k, v in validation.items()}}
    return Message(msg.train_reply(arrays, figures), reply_to=request)


def test_the_previous_round_is_validated_from_training_replies_and_only_the_last_gets_validate(tiny_profile):
    events: list = []
    strategy = make_strategy(Settings(profile="tiny", clip_factor=0.0), [1, 2], lambda r: events.append(("round", r)),
                             validators=[1], on_validation=lambda rnd, f, e: events.append(("validation", rnd, f)),
                             declared={1: 5, 2: 5})
    strategy.last_round = 2
    arrays = msg.state_to_arrays(SubModel(tiny_profile.model).state_dict())
    grid = Grid([1, 2])
    first = list(strategy.configure_train(1, arrays, ConfigRecord({"phase": "x"}), grid))
    assert first[0].content[msg.CONFIG][msg.VALIDATE_RECEIVED] is False  # nothing was validated yet
    assert list(strategy.configure_evaluate(1, arrays, ConfigRecord({"phase": "x"}), grid)) == []
    second = list(strategy.configure_train(2, arrays, ConfigRecord({"phase": "x"}), grid))
    assert all(m.content[msg.CONFIG][msg.VALIDATE_RECEIVED] is True for m in second)
    strategy.aggregate_train(2, [reply(1, arrays, {"n": 3, "loss_sum": 1.5}), reply(2, arrays, {"n": 0})])
    # Round 1's figures reach the recorder before round 2's weights replace the network; only
    # validators count, and the training figures are free of them.
    assert [e[0] for e in events] == ["validation", "round"]
    assert events[0][1] == 1 and events[0][2] == {1: {"n": 3, "loss_sum": 1.5}}
    assert all(not k.startswith(msg.VALIDATION_PREFIX) for m in events[1][1].replies.values() for k in m)
    last = list(strategy.configure_evaluate(2, arrays, ConfigRecord({"phase": "x"}), grid))
    assert [m.metadata.dst_node_id for m in last] == [1]
