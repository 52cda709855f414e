"""`clafed server` / `clafed client`: the Flower command lines built from certs and site YAMLs."""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from client.launch_cli import check_site_credentials, flwr_home, supernode_command
from common.cli import main
from common.config import load_site_config
from common.launch import flower_env, run_forwarding
from server.launch_cli import missing_credentials, superlink_command

REPO = Path(__file__).resolve().parents[2]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_superlink_command_has_tls_node_auth_database_and_no_runtime_installs(tmp_path):
    guarded = superlink_command(tmp_path, database=tmp_path / "s.db", host="127.0.0.1", port=9999)
    # Flower's SuperLink behind clafed's Control API guard, on the loopback control address.
    assert guarded[1:3] == ["-m", "server.superlink_guard"]
    assert flag(guarded, "--control-host") == "127.0.0.1"
    command = guarded[guarded.index("--") + 1:]
    assert command[0] == "flower-superlink"
    assert flag(command, "--ssl-ca-certfile") == str(tmp_path / "ca.crt")
    assert flag(command, "--ssl-certfile") == str(tmp_path / "superlink.crt")
    assert flag(command, "--ssl-keyfile") == str(tmp_path / "superlink.key")
    assert flag(command, "--database") == str(tmp_path / "s.db")
    assert (flag(command, "--host"), flag(command, "--port")) == ("127.0.0.1", "9999")
    assert "--enable-supernode-auth" in command and "--disable-runtime-dependency-installation" in command
    assert "--insecure" not in command
    # With a database the guard keeps the messages' payloads out of it (server/superlink_guard.py).
    assert "--payloads-in-memory" in guarded[:guarded.index("--")]
    in_memory = superlink_command(tmp_path, database=None)
    assert "--database" not in in_memory and "--payloads-in-memory" not in in_memory


def test_the_default_is_a_database_in_the_working_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["server", "--certs", str(tmp_path), "--print"]) == 0
    out = capsys.readouterr().out
    assert f"--database {tmp_path / 'superlink_state.db'}" in out and "--payloads-in-memory" in out
    assert main(["server", "--certs", str(tmp_path), "--print", "--no-database"]) == 0
    out = capsys.readouterr().out
    assert "--database" not in out and "--payloads-in-memory" not in out


def test_payloads_stay_in_memory_next_to_a_sqlite_linkstate(tmp_path, monkeypatch):
    import flwr.superlink.main as superlink_main
    from flwr.server.superlink.linkstate import InMemoryLinkState, SqlLinkState
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.superlink.federation import NoOpFederationManager

    from server.superlink_guard import keep_payloads_in_memory

    # monkeypatch restores Flower's function after the test.
    monkeypatch.setattr(superlink_main, "get_objectstore_linkstate_factories",
                        superlink_main.get_objectstore_linkstate_factories)
    keep_payloads_in_memory()
    objects, states = superlink_main.get_objectstore_linkstate_factories(str(tmp_path / "s.db"),
                                                                        NoOpFederationManager())
    assert isinstance(objects.store(), InMemoryObjectStore)
    state = states.state()
    assert isinstance(state, SqlLinkState) and state.object_store is objects.store()
    assert (tmp_path / "s.db").is_file()
    # Flower's in-memory state is left as it is.
    objects, states = superlink_main.get_objectstore_linkstate_factories(":flwr-in-memory:", NoOpFederationManager())
    assert isinstance(objects.store(), InMemoryObjectStore) and isinstance(states.state(), InMemoryLinkState)


def test_supernode_command_from_the_example_yaml():
    yaml_path = REPO / "sites" / "hospital1.yaml"
    site = load_site_config(yaml_path)
    command = supernode_command(site, yaml_path, runtime_port=9101, max_retries=3)
    assert command[0] == "flower-supernode"
    assert flag(command, "--superlink") == site.server_address
    assert flag(command, "--root-certificates") == str(REPO / "credentials" / "ca.crt")
    assert flag(command, "--auth-supernode-private-key") == str(REPO / "credentials" / "hospital1" / "supernode.key")
    assert flag(command, "--node-config") == f'site-config="{yaml_path}"'
    assert (flag(command, "--port"), flag(command, "--max-retries")) == ("9101", "3")
    assert "--insecure" not in command and "--max-wait-time" not in command
    assert flwr_home(site) == REPO / "site_outputs" / "hospital1" / "flwr_home"


def test_supernode_command_without_ca_trusts_system_cas_and_quotes_odd_paths(tmp_path):
    site = replace(load_site_config(REPO / "sites" / "hospital2.yaml"), root_certificates=None)
    odd = tmp_path / 'we"ird' / "h2.yaml"
    command = supernode_command(site, odd)
    assert "--root-certificates" not in command
    assert flag(command, "--node-config") == 'site-config="' + str(odd).replace('"', '\\"') + '"'


def test_missing_credentials_are_named(tmp_path):
    site = load_site_config(REPO / "sites" / "hospital3.yaml")
    problems = check_site_credentials(replace(site, auth_private_key=None, root_certificates=tmp_path / "no.crt"),
                                      Path("sites/hospital3.yaml"))
    assert any("auth_private_key is not set" in p and "hospital3/supernode.key" in p for p in problems)
    assert any("root_certificates: file not found" in p for p in problems)
    assert [p.name for p in missing_credentials(tmp_path)] == ["ca.crt", "superlink.crt", "superlink.key"]


def test_print_shows_the_commands(tmp_path, capsys):
    assert main(["client", "--site", str(REPO / "sites" / "hospital1.yaml"), "--print",
                 "--server-address", "superlink:8000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FLWR_HOME=") and "flower-supernode --superlink superlink:8000" in out
    assert "-m client.supernode_runner --poll 0.5 -- flower-supernode" in out  # asks for work twice a second
    assert main(["server", "--certs", str(tmp_path), "--print", "--port", "8443"]) == 0
    assert "flower-superlink" in capsys.readouterr().out


def test_run_refuses_without_credentials(tmp_path, capsys):
    assert main(["server", "--certs", str(tmp_path)]) == 2
    assert "clafed certs" in capsys.readouterr().err
    # The example YAML's credential paths (../credentials/...) do not exist next to this copy.
    copy = tmp_path / "sites" / "hospital1.yaml"
    copy.parent.mkdir()
    copy.write_text((REPO / "sites" / "hospital1.yaml").read_text())
    assert main(["client", "--site", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "root_certificates: file not found" in err and "auth_private_key: file not found" in err


def test_flower_env_puts_this_interpreter_first():
    env = flower_env({"PATH": "/usr/bin"}, FLWR_HOME="/x")
    assert env["PATH"].split(os.pathsep)[:2] == [str(Path(sys.executable).parent), "/usr/bin"]
    assert env["FLWR_HOME"] == "/x"


def test_run_forwarding_returns_the_child_exit_code_and_forwards_sigterm(tmp_path):
    assert run_forwarding([sys.executable, "-c", "raise SystemExit(7)"], os.environ) == 7
    # The child signals its parent (us) with SIGTERM; forwarding hands it back to the child.
    child = ("import os, signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
             "os.kill(os.getppid(), signal.SIGTERM)\n"
             "time.sleep(10)\n")
    assert run_forwarding([sys.executable, "-c", child], os.environ) == 42
