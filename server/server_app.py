"""The ServerApp the coordinator's SuperLink runs (`flwr run`, or `clafed simulate`)."""
from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server import run_dir as rd
from server.federation import FederationError, run_federation
from server.report import write_report
from server.settings import load_settings

app = ServerApp()


def _log_to_stderr() -> None:
    """clafed's records on stderr. Not through the root logger: Flower's logger has its own handler
    and also propagates, so a root handler printed each Flower line twice (and let httpx's in)."""
    logger = logging.getLogger("clafed")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@app.main()
def main(grid: Grid, context: Context) -> None:
    _log_to_stderr()
    settings = load_settings(context.run_config)
    recorder = run_federation(grid, settings)
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
