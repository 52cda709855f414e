"""Only the clafed installed at this hospital runs here: every other app a SuperLink sends is refused.

A SuperNode executes whatever app (FAB) a run on its SuperLink ships. Flower's own check
(`--trusted-entities`) accepts only apps signed through the Flower platform, which a self-hosted
federation does not have. So `clafed client` puts this guard in place of `flwr-clientapp` (the
process Flower starts for every message): before the app is unpacked or imported, every file of
the FAB must be byte-identical to the same file of the clafed installed here, and its ClientApp
must be clafed's. A coordinator that runs a different clafed version, or anyone who got a run
started with their own code, gets an error reply; nothing of theirs executes at the site.
"""
from __future__ import annotations

import io
import logging
import sys
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

from common.errors import ClafedError
from common.log_setup import log_clafed_to_stderr

CLIENTAPP = "client.client_app:app"
# Written by `flwr build` itself: the list of the FAB's files with their hashes.
FAB_METADATA = ".info/"
FAB_CONFIG = "pyproject.toml"

log = logging.getLogger("clafed.client")


class AppRefused(ClafedError, RuntimeError):
    """The app sent by the SuperLink is not the clafed installed at this site."""


def installed_root() -> Path:
    """The folder holding the installed clafed packages (client/, common/, ...)."""
    import client

    return Path(client.__file__).resolve().parent.parent


def app_problems(fab: bytes, root: Path | None = None) -> list[str]:
    """Why the FAB `fab` is not the clafed installed under `root` (empty: it is)."""
    root = installed_root() if root is None else root
    try:
        archive = zipfile.ZipFile(io.BytesIO(fab))
    except zipfile.BadZipFile:
        return ["not a FAB (zip) archive"]
    problems = []
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    if FAB_CONFIG not in names:
        problems.append(f"no {FAB_CONFIG}")
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            problems.append(f"{name}: a path outside the app")
        elif name.startswith(FAB_METADATA):
            continue
        elif name == FAB_CONFIG:
            problems += _config_problems(archive.read(name))
        else:
            installed = root / path
            if not installed.is_file():
                problems.append(f"{name}: not part of the clafed installed here")
            elif installed.read_bytes() != archive.read(name):
                problems.append(f"{name}: differs from the clafed installed here")
    return problems


def _config_problems(text: bytes) -> list[str]:
    try:
        config = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        return [f"{FAB_CONFIG}: unreadable ({err})"]
    clientapp = config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {}).get("clientapp")
    if clientapp != CLIENTAPP:
        return [f"{FAB_CONFIG}: its ClientApp is {clientapp!r}, this site runs only {CLIENTAPP!r}"]
    return []


def check_app(fab: bytes) -> None:
    """Raise AppRefused (naming at most five differing files) unless `fab` is the installed clafed."""
    problems = app_problems(fab)
    if problems:
        listing = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        log.error("refused an app sent by the SuperLink: %s", listing)
        raise AppRefused(f"this site runs only the clafed installed here; the app it was sent differs: {listing}")


def install_guard() -> None:
    """Make Flower's ClientApp runner check each FAB before it unpacks it (fail closed)."""
    import flwr.supernode.runtime.run_clientapp as runner

    unpack = getattr(runner, "install_from_fab", None)
    if unpack is None:
        raise SystemExit("clafed: this Flower version cannot be guarded (no install_from_fab in its ClientApp "
                         "runner); install the flwr version pinned in clafed's pyproject.toml")

    def checked_install(fab_file, *args, **kwargs):
        check_app(fab_file if isinstance(fab_file, bytes) else Path(fab_file).read_bytes())
        return unpack(fab_file, *args, **kwargs)

    runner.install_from_fab = checked_install


def main() -> None:
    """`flwr-clientapp`, guarded (the script `clafed client` puts first on the SuperNode's PATH)."""
    log_clafed_to_stderr()
    install_guard()
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    sys.argv[0] = "flwr-clientapp"  # Flower's exit handling recognises its process by this name
    flwr_clientapp()


def write_launcher(folder: Path) -> Path:
    """Write the `flwr-clientapp` launcher into `folder` (to go first on the SuperNode's PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "flwr-clientapp"
    # Forked from clafed's warm server when `clafed client` runs one (client/warm_start.py), else cold.
    script.write_text(f"#!{sys.executable}\n# Written by `clafed client`: Flower's flwr-clientapp behind clafed's "
                      f"app check.\nfrom client.warm_start import launch\n\nraise SystemExit(launch())\n")
    script.chmod(0o755)
    return script
