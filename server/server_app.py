"""The ServerApp the coordinator's SuperLink runs (`flwr run`, or `clafed simulate`)."""
from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server import run_dir as rd
from server.federation import FederationError, run_federation
from server.settings import load_settings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings(context.run_config)
    recorder = run_federation(grid, settings)
    problems = rd.run_problems(recorder.path)
    if problems:  # every record is written; the run still counts as failed
        raise FederationError(f"run finished in {recorder.path} with {len(problems)} site problem(s): "
                              + "; ".join(problems[:5]))
    logging.getLogger("clafed.server").info("run complete: %s", recorder.path)
