"""The ServerApp the coordinator's SuperLink runs (`flwr run`, or `clafed simulate`)."""
from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.log_setup import log_clafed_to_stderr
from server import run_dir as rd
from server.federation import FederationError, run_federation
from server.report import write_report
from server.settings import load_settings
from server.transport import TransportGrid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    log_clafed_to_stderr()
    settings = load_settings(context.run_config)
    recorder = run_federation(TransportGrid(grid), settings)  # packed weights, prompt replies
    log = logging.getLogger("clafed.server")
    try:
        md, _ = write_report(recorder.path)
        log.info("report: %s", md)
    except Exception:  # noqa: BLE001 -- the run's records are complete; a report can be rebuilt with `clafed report`
        log.exception("could not write the report of %s; run `clafed report %s`", recorder.path, recorder.path)
    problems = rd.run_problems(recorder.path)
    if problems:  # every record is written; the run still counts as failed
        raise FederationError(f"run finished in {recorder.path} with {len(problems)} site problem(s): "
                              + "; ".join(problems[:5]))
    log.info("run complete: %s", recorder.path)
