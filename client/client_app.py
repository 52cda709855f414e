"""The ClientApp every hospital runs inside its SuperNode.

Four messages: who are you (name, role, case counts), train one phase's network for a round,
score that round's global network on the validation cases, and evaluate the final CLA-HDM. Replies
carry weights, counts and aggregate figures only; a failure reaches the server as its kind and a
count (client/disclosure.py), the detail stays in this site's log.
"""
from __future__ import annotations

import os

import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from common import messages as msg
from client.disclosure import reported
from client.final_evaluation import evaluate_final_model
from client.local_training import train_round, validate_round
from client.site_context import current_site

app = ClientApp()

# Simulated sites share the machine's cores: the runner caps each one's torch threads.
if os.environ.get("CLAFED_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["CLAFED_TORCH_THREADS"]))


@app.query("site_info")
@reported
def site_info(message: Message, context: Context) -> Message:
    site = current_site(context.node_config)
    info = msg.config_record({"name": site.config.name, "role": site.config.role, "cohort": site.cohort()})
    content = RecordDict({msg.SITE: info, msg.METRICS: msg.metric_record(site.counts())})
    return Message(content, reply_to=message)


@app.train()
@reported
def train(message: Message, context: Context) -> Message:
    site = current_site(context.node_config)
    config = message.content[msg.CONFIG]
    server_round = int(config.get("round-offset", 0)) + int(config["server-round"])
    arrays, figures = train_round(
        site, str(config["level"]), msg.profile_from_json(str(config["profile"])), message.content[msg.ARRAYS],
        seed=int(config.get("seed", 0)), server_round=server_round, rounds=int(config["rounds"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)))
    return Message(msg.train_reply(arrays, figures), reply_to=message)


@app.evaluate("validate")
@reported
def validate(message: Message, context: Context) -> Message:
    site = current_site(context.node_config)
    config = message.content[msg.CONFIG]
    figures = validate_round(site, str(config["level"]), msg.profile_from_json(str(config["profile"])),
                             message.content[msg.ARRAYS])
    return Message(RecordDict({msg.METRICS: msg.metric_record(figures)}), reply_to=message)


@app.evaluate()
@reported
def evaluate(message: Message, context: Context) -> Message:
    site = current_site(context.node_config)
    figures = evaluate_final_model(site, message.content[msg.ARRAYS], message.content[msg.CONFIG])
    info = msg.config_record({"name": site.config.name, "role": site.config.role, "cohort": site.cohort()})
    return Message(RecordDict({msg.METRICS: msg.metric_record(figures), msg.SITE: info}), reply_to=message)
