"""The servers of the `postgres-rabbitmq` profile, as the launcher and test harness run them.

Like Redis, each is Debian's package (`runtime/postgres.sh`, `runtime/rabbitmq.sh`), run
by Consort with its data in the run folder, listening on 127.0.0.1 only, behind a password
from the run's secret store (`secrets/secrets.json`, which the components read through
`consort-secrets`):

- **PostgreSQL 15** refuses to run as root, so it runs as Debian's `postgres` user
  (`setpriv`, keeping the parent-death signal), its cluster in `<run>/postgres/data`
  (owned by that user), no Unix socket, password authentication (scram-sha-256) for the
  one role `consort`, which owns the database `consort`.
- **RabbitMQ 3.10** runs with its own `epmd` (Erlang's port mapper, started here in the
  foreground rather than daemonised by Erlang, so it stops with the system), its node
  name, AMQP, distribution and epmd ports its own, its Mnesia database and message store
  in `<run>/rabbitmq/`, no plugins, and one user `consort` (the default `guest` is not
  created). Its config file holds the password, so it lives in `secrets/` (0600).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from consort.dev.processes import Proc, port_open
from consort.dev.runtime import RuntimeMissing
from consort.dev.security import RunSecrets, write_secret

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
#: The role, database and RabbitMQ user the components name.
USER = "consort"
#: The unprivileged account PostgreSQL runs as.
PG_ACCOUNT = "postgres"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise RuntimeMissing(f"{what} is not installed ({path}); run `make setup`.")
    return path


def _traversable(path: Path) -> None:
    """Let other users pass through (not list) the folders above `path` that we own, so
    the `postgres` account reaches its data folder in a run folder under a private tmp."""
    for parent in path.parents:
        try:
            st = parent.stat()
        except OSError:
            return
        if st.st_uid != os.getuid() or st.st_mode & stat.S_IXOTH:
            continue
        parent.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def postgres(run_dir: Path, port: int, secrets: RunSecrets, log: Path) -> Proc:
    """PostgreSQL on 127.0.0.1:`port` with its cluster in `<run_dir>/postgres/data`
    (initialised on first start, then kept)."""
    server = _need(PG_BIN / "postgres", "PostgreSQL 15 (postgresql-15)")
    account = pwd.getpwnam(PG_ACCOUNT)
    home = run_dir / "postgres"
    data = home / "data"
    as_account = [
        "setpriv",
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--init-groups",
        "--pdeathsig",
        "TERM",
        "--",
    ]
    if not (data / "PG_VERSION").exists():
        _init_cluster(home, data, server, as_account, account, secrets)
    return Proc(
        "postgres",
        [
            *as_account,
            str(server),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={port}",
            "-c",
            "unix_socket_directories=",
            # Every commit is on disk before it is acknowledged (the defaults, said aloud).
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=64MB",
        ],
        log,
        cwd=home,
        ready=lambda: _pg_ready(port),
    )


def _init_cluster(
    home: Path,
    data: Path,
    server: Path,
    as_account: list[str],
    account: pwd.struct_passwd,
    secrets: RunSecrets,
) -> None:
    """initdb as the account, with the run's password, and the database the components name."""
    home.mkdir(parents=True, exist_ok=True)
    _traversable(home)
    os.chown(home, account.pw_uid, account.pw_gid)
    home.chmod(0o700)
    pwfile = home / "initdb.pw"
    write_secret(pwfile, secrets.postgres_password + "\n")
    os.chown(pwfile, account.pw_uid, account.pw_gid)
    try:
        subprocess.run(
            [
                *as_account,
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            cwd=home,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
    finally:
        pwfile.unlink(missing_ok=True)
    # The database the components name, created in single-user mode (no server yet).
    subprocess.run(
        [*as_account, str(server), "--single", "-D", str(data), "postgres"],
        input=f"CREATE DATABASE {USER} OWNER {USER};\n".encode(),
        check=True,
        capture_output=True,
        cwd=home,
    )


def _pg_ready(port: int) -> bool:
    if not port_open(port):
        return False
    ready = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
        check=False,
        capture_output=True,
    )
    return ready.returncode == 0


def rabbitmq_config(secrets: RunSecrets, port: int) -> Path:
    """The broker's config file (it names the password: 0600, in `secrets/`)."""
    conf = secrets.dir / "rabbitmq.conf"
    write_secret(
        conf,
        "\n".join(
            [
                f"listeners.tcp.default = 127.0.0.1:{port}",
                f"default_user = {USER}",
                f"default_pass = {secrets.rabbitmq_password}",
                "default_vhost = /",
                "default_permissions.configure = .*",
                "default_permissions.read = .*",
                "default_permissions.write = .*",
                "loopback_users = none",
                # A small machine: block publishers (not lose messages) near these limits.
                "disk_free_limit.absolute = 200MB",
                "vm_memory_high_watermark.relative = 0.2",
                "",
            ]
        ),
    )
    return conf


def epmd(port: int, log: Path) -> Proc:
    """Erlang's port mapper for the broker's node, on 127.0.0.1:`port`, in the foreground."""
    _need(RABBITMQ_SERVER, "RabbitMQ (rabbitmq-server)")
    erts = sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))
    binary = erts[-1] if erts else Path(shutil.which("epmd") or "/usr/bin/epmd")
    return Proc(
        "epmd",
        [str(binary), "-port", str(port), "-address", "127.0.0.1"],
        log,
        env={"ERL_EPMD_ADDRESS": "127.0.0.1"},
        ready=lambda: port_open(port),
    )


def rabbitmq(
    run_dir: Path, port: int, dist_port: int, epmd_port: int, secrets: RunSecrets, log: Path
) -> Proc:
    """RabbitMQ on 127.0.0.1:`port`, data in `<run_dir>/rabbitmq`, its epmd on `epmd_port`."""
    server = _need(RABBITMQ_SERVER, "RabbitMQ (rabbitmq-server)")
    home = run_dir / "rabbitmq"
    home.mkdir(parents=True, exist_ok=True)
    (home / "enabled_plugins").write_text("[].\n")
    conf = rabbitmq_config(secrets, port)
    return Proc(
        "rabbitmq",
        [str(server)],
        log,
        env={
            # Erlang's cookie file goes to $HOME: this run folder's, not root's.
            "HOME": str(home),
            "RABBITMQ_NODENAME": f"consort-{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ERL_ARGS": (
                f"+P 1048576 -kernel inet_dist_use_interface {{127,0,0,1}} "
                f"-kernel inet_dist_listen_min {dist_port} -kernel inet_dist_listen_max {dist_port}"
            ),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
        },
        cwd=home,
        ready=lambda: port_open(port),
    )
