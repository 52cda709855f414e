"""The `clafed` command: one sub-command per module, imported only when it is used.

Each command module exposes `add_arguments(parser)` and `run(args) -> int` (the exit code),
so adding a command is one line in COMMANDS and heavy imports (torch, flwr) stay lazy. Exit
codes follow one policy (common/errors.py): 1 for problems found, 2 for input it cannot use.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("common.validate_cli", "check a manifest or site YAML; one line per problem"),
    "preflight": ("client.preflight_cli", "a site's data-quality preflight: cohorts, scanners, image sizes, duplicates"),
    "readers": ("common.readers_cli", "reader-study statistics (CIs, McNemar, permutation tests) as Markdown"),
    "synth": ("simulation.synth_cli", "write a synthetic three-hospital BUS + CDFI dataset"),
    "ingest": ("client.ingest_cli", "turn a DICOM export and a diagnosis CSV into a validated site folder"),
    "split": ("simulation.split_cli", "split a pooled manifest into virtual hospitals (no image copies)"),
    "predict": ("client.predict_cli", "diagnose cases from a checkpoint: probabilities, path and heatmap pictures"),
    "simulate": ("simulation.simulate_cli", "run the whole federation on this machine (synthetic data by default)"),
    "certs": ("server.certs_cli", "generate the CA, TLS, SuperNode and model-signing keys of a deployment"),
    "server": ("server.launch_cli", "start the coordinator's SuperLink (TLS, node authentication, database)"),
    "client": ("client.launch_cli", "start this hospital's SuperNode from its site YAML"),
    "evaluate": ("client.evaluate_cli", "evaluate a CLA-HDM checkpoint on a site's cases, locally (CSV, ROC, CIs)"),
    "serve": ("common.serve_cli", "web app: diagnose a case, browse a site's results, watch a run (127.0.0.1)"),
    "report": ("server.report_cli", "rebuild report.md and report.html from a run directory's saved records"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser; command modules are imported to add their arguments."""
    parser = argparse.ArgumentParser(prog="clafed", description="Federated CLA-HDM for cervical lymphadenopathy")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    from common.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, ClafedError

    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except ClafedError as err:  # an input the command cannot use: the message says what to fix
        print(f"clafed {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
