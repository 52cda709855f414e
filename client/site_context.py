"""Which site this SuperNode serves: its YAML comes from the node config, never from the server."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from common.config import ConfigError
from common.site import SiteData, load_site

NODE_CONFIG_KEY = "site-config"
# Simulation only: Flower's simulation runtime gives each virtual SuperNode just a partition id,
# so the runner lists the sites' YAML paths (JSON) in this variable, indexed by that id; it is
# set in the SuperLink's environment, which every process the SuperLink starts inherits.
ENV_SITES = "CLAFED_SITES"


def site_config_path(node_config: Mapping[str, object], environ: Mapping[str, str] = os.environ) -> Path:
    """The site YAML of this node: node_config's site-config, else the simulation's partition."""
    if NODE_CONFIG_KEY in node_config:
        return Path(str(node_config[NODE_CONFIG_KEY]))
    if "partition-id" in node_config and environ.get(ENV_SITES):
        paths = json.loads(environ[ENV_SITES])
        index = int(node_config["partition-id"])
        if not 0 <= index < len(paths):
            raise ConfigError(f"simulation partition {index} has no site YAML ({len(paths)} listed in {ENV_SITES})")
        return Path(paths[index])
    raise ConfigError("this SuperNode has no site: start it with "
                      "--node-config 'site-config=\"/path/to/sites/hospitalX.yaml\"'")


def current_site(node_config: Mapping[str, object]) -> SiteData:
    """Load (once per process) the site this node serves."""
    return load_site(site_config_path(node_config))
