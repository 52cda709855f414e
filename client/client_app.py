"""The ClientApp every hospital runs inside its SuperNode.

Five messages: who are you (name, role, case counts), the data-quality preflight (aggregate
counts), train one phase's network for a round,
score that round's global network on the validation cases, and evaluate the final CLA-HDM. Replies
carry weights, counts and aggregate figures only; a failure reaches the server as its kind and a
count (client/disclosure.py), the detail stays in this site's log.
"""
from __future__ import annotations

import os

import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client.disclosure import reported
from client.final_evaluation import evaluate_final_model
from client.local_training import train_round, validate_round
from client.site_context import current_site
from client.transport import packed_transport
from common import messages as msg
from common.names import checked_name

app = ClientApp(mods=[packed_transport])  # weights travel packed (common/packing.py)

# Simulated sites share the machine's cores: the runner caps each one's torch threads.
if os.environ.get("CLAFED_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["CLAFED_TORCH_THREADS"]))


@app.query("site_info")
@reported
def site_info(message: Message, context: Context) -> Message:
    site = current_site(context.node_config)
    description = msg.SiteDescription(site.config.name, site.config.role, site.cohort(), site.counts())
    return Message(description.content(), reply_to=message)


@app.query("preflight")
@reported
def preflight(message: Message, context: Context) -> Message:
    from client.preflight import shareable_preflight, site_preflight, write_local_report

    site = current_site(context.node_config)
    result = site_preflight(site)
    write_local_report(result, site.config.output_dir)  # the detail, case ids included, stays here
    figures = shareable_preflight(result, min_cohort=site.config.min_cohort, min_cell=site.config.min_cell)
    return Message(RecordDict({msg.METRICS: msg.metric_record(figures)}), reply_to=message)


@app.train()
@reported
def train(message: Message, context: Context) -> Message:
    instruction = msg.PhaseInstruction.from_config(message.content[msg.CONFIG])  # checked before the site is touched
    site = current_site(context.node_config)
    arrays, figures = train_round(site, instruction, message.content[msg.ARRAYS], run_id=context.run_id)
    return Message(msg.train_reply(arrays, figures), reply_to=message)


@app.evaluate("validate")
@reported
def validate(message: Message, context: Context) -> Message:
    instruction = msg.PhaseInstruction.from_config(message.content[msg.CONFIG])  # checked before the site is touched
    site = current_site(context.node_config)
    figures = validate_round(site, instruction, message.content[msg.ARRAYS])
    return Message(RecordDict({msg.METRICS: msg.metric_record(figures)}), reply_to=message)


@app.evaluate()
@reported
def evaluate(message: Message, context: Context) -> Message:
    instruction = msg.EvaluationInstruction.from_config(message.content[msg.CONFIG])  # checked before the site is touched
    checked_name(instruction.run, "run name sent by the server")  # a folder at the site: no path in it
    site = current_site(context.node_config)
    figures = evaluate_final_model(site, message.content[msg.ARRAYS], instruction)
    return Message(RecordDict({msg.METRICS: msg.metric_record(figures)}), reply_to=message)
