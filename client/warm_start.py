"""A warm ClientApp process for every message: forked from one that has imported everything.

Flower 1.42's SuperNode starts a new `flwr-clientapp` process for each message and offers no way
to keep one alive (its warm executor pools serve only Kubernetes agent/model/connector tasks), so
every round paid for Python, torch, torchvision and Flower being imported again. `clafed client`
therefore starts this server beside the SuperNode: it imports all of that once, puts clafed's app
check in place (client/app_guard.py), and waits on a Unix socket in a private folder. The
`flwr-clientapp` that Flower starts (client/app_guard.write_launcher) connects, hands over its
arguments, environment, working folder and standard streams, and the server forks a child that
runs Flower's ClientApp exactly as the cold process would; the launcher relays signals to it and
exits with its exit code. Without the server (not started, crashed) the launcher runs the
ClientApp itself, as before.

The server never runs a torch operation (its threads pools must not exist when it forks), accepts
connections only from its own user (SO_PEERCRED), and exits when `clafed client` does. This
module imports only the standard library at the top: the launcher must start fast.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path

ENV_SOCKET = "CLAFED_WARM_SOCKET"
SOCKET_NAME = "clientapp.sock"
_MAX_REQUEST = 1 << 20  # arguments and environment of one launch
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


# ---- the launcher side (the `flwr-clientapp` Flower starts) -----------------------------------

def launch(environ: dict[str, str] | None = None) -> int:
    """Run this `flwr-clientapp` invocation in a warm child; the exit code (cold if no server)."""
    environ = dict(os.environ if environ is None else environ)
    path = environ.get(ENV_SOCKET)
    conn = _connect(path) if path else None
    if conn is None:
        from client.app_guard import main

        main()  # exits
        return 0
    with conn:
        request = json.dumps({"argv": sys.argv[1:], "env": environ, "cwd": os.getcwd()}).encode()
        socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [0, 1, 2])
        pid = int(_read_line(conn) or 0)
        if pid <= 0:
            print("clafed: the warm ClientApp server refused the launch", file=sys.stderr)
            return 1
        for sig in _FORWARDED:  # a SuperNode stopping its ClientApp reaches the child
            signal.signal(sig, lambda signum, _frame: _kill(pid, signum))
        status = _read_line(conn)
    return _exit_code(int(status)) if status else 1


def _connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = conn.recv(64)
        except InterruptedError:
            continue
        if not chunk:
            return ""
        data += chunk
    return data.decode().strip()


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _exit_code(status: int) -> int:
    """A shell-like exit code from a wait status (128 + N for a child killed by signal N)."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


# ---- the server side ---------------------------------------------------------------------------

def private_socket_path() -> Path:
    """A socket path in a fresh folder only this user can enter (short: AF_UNIX allows 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="clafed-warm-")) / SOCKET_NAME


def preload() -> None:
    """Import what every ClientApp process needs and put the app check in place (no torch op)."""
    import flwr.supernode.cli.flwr_clientapp  # noqa: F401
    import flwr.supernode.runtime.run_clientapp  # noqa: F401

    import client.client_app  # noqa: F401  (torch, torchvision, cv2, clafed's client side)
    from client.app_guard import install_guard
    from common.log_setup import log_clafed_to_stderr

    log_clafed_to_stderr()
    install_guard()


def serve(path: Path, parent: int | None = None) -> None:
    """Fork a ClientApp for each launcher that connects to `path`, until `parent` is gone."""
    parent = os.getppid() if parent is None else parent
    preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    print(f"clafed: warm ClientApp server ready on {path}", file=sys.stderr, flush=True)
    try:
        while not stop and _alive(parent):
            if selector.select(timeout=0.2):
                conn, _ = listener.accept()
                pid = _fork_for(conn, listener)
                if pid is None:
                    conn.close()
                else:
                    waiting[pid] = conn
            _reap(waiting)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass


def _fork_for(conn: socket.socket, listener: socket.socket) -> int | None:
    """Read one launch request from `conn` and fork its child (None: refused)."""
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    if uid != os.getuid():
        return None
    conn.settimeout(10)
    try:
        head, fds, _, _ = socket.recv_fds(conn, 4, 3)
        if len(head) != 4 or len(fds) != 3:
            return None
        size = struct.unpack("!I", head)[0]
        if size > _MAX_REQUEST:
            return None
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                return None
            body += chunk
        request = json.loads(body)
        argv, env, cwd = list(map(str, request["argv"])), dict(request["env"]), str(request["cwd"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pid = os.fork()
    if pid == 0:  # the child: become the launcher's flwr-clientapp
        listener.close()
        conn.close()
        _run_child(argv, env, cwd, fds)
    for fd in fds:
        os.close(fd)
    print(f"clafed: ClientApp process {pid} started warm", file=sys.stderr, flush=True)
    conn.sendall(f"{pid}\n".encode())
    return pid


def _run_child(argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> None:
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

        sys.argv = ["flwr-clientapp", *argv]  # Flower's exit handling recognises its process by this name
        flwr_clientapp()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 -- reported on the launcher's stderr, never back in the server
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"{status}\n".encode())
            except OSError:
                pass
            conn.close()


def _alive(pid: int) -> bool:
    return os.getppid() == pid


def main(argv: list[str] | None = None) -> None:
    """`python -m client.warm_start SOCKET_PATH`: the server `clafed client` starts."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m client.warm_start SOCKET_PATH")
    serve(Path(args[0]))


if __name__ == "__main__":
    main()
