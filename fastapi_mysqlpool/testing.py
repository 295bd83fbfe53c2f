"""Testing apps: a throwaway MariaDB/MySQL server, and tests that roll back.

::

    from fastapi_mysqlpool.testing import TemporaryServer

    with TemporaryServer() as server:
        app = FastAPI(lifespan=mysql_pool_lifespan(server.url))

The server gets a private data directory, socket and free port, all removed on
exit, so a test may stop, kill, restart or reconfigure it without touching any
other server. Needs ``mariadbd`` (or ``mysqld``) installed and the ``testing``
extra (``pip install fastapi-mysqlpool[testing]``, for mirakuru).

:class:`Rollback` runs the requests of a test in one transaction rolled back
at its end (the pytest plugin's ``mysql_rollback`` fixture, see
:mod:`fastapi_mysqlpool.pytest_plugin`); a statement that would commit it
implicitly raises :class:`ImplicitCommitError`.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import MySQLdb

from ._errors import ImplicitCommitError
from ._pinning import Rollback

__all__ = ["ImplicitCommitError", "Rollback", "TemporaryServer"]

_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin", "/usr/libexec")


def _find(*names: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SEARCH_PATH])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryServer:
    """A private ``mariadbd``/``mysqld`` on 127.0.0.1, user ``root`` without
    password, with an empty database *database*.

    *options* are extra server options (``{"max_connections": 20}``).
    """

    user = "root"
    host = "127.0.0.1"

    def __init__(
        self,
        *,
        database: str = "test",
        options: Mapping[str, Any] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.database = database
        self.options = dict(options or {})
        self.startup_timeout = startup_timeout
        self.port = _free_port()
        # Made by the first start(): a server never started leaves nothing.
        self._base_dir: Path | None = None
        self._server = _find("mariadbd", "mysqld")
        self._executor: Any = None

    @property
    def base_dir(self) -> Path:
        """The server's private directory (made by the first :meth:`start`)."""
        if self._base_dir is None:
            # Short: a unix socket path must fit in 108 bytes.
            self._base_dir = Path(tempfile.mkdtemp(prefix="mysqlpool-"))
        return self._base_dir

    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket(self) -> str:
        return str(self.base_dir / "mysqld.sock")

    @property
    def log_path(self) -> Path:
        return self.base_dir / "error.log"

    @property
    def url(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def config(self) -> dict[str, Any]:
        """``MySQLdb.connect`` arguments for the server's database."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": "",
            "database": self.database,
        }

    def connect(self, **overrides: Any) -> MySQLdb.connections.Connection:
        """An autocommit connection (for setup and checks, not for the pool).

        An override set to ``None`` drops that argument (``database=None``).
        """
        params = {**self.config, "autocommit": True, **overrides}
        return MySQLdb.connect(**{k: v for k, v in params.items() if v is not None})

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> TemporaryServer:
        if self._server is None:
            raise RuntimeError(
                "TemporaryServer needs mariadbd or mysqld (Debian: apt-get "
                "install mariadb-server)"
            )
        if not (self.datadir / "mysql").exists():
            # Not initialized, or not completely (an interrupted first start).
            shutil.rmtree(self.datadir, ignore_errors=True)
            self._initialize()
        try:
            from mirakuru import TCPExecutor
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "TemporaryServer needs mirakuru: "
                "pip install 'fastapi-mysqlpool[testing]'"
            ) from None
        # Early messages (before --log-error applies) go to the same log.
        with open(self.log_path, "ab") as log:
            self._executor = TCPExecutor(
                self._command(),
                host=self.host,
                port=self.port,
                timeout=self.startup_timeout,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                self._executor.start()
            except BaseException as exc:
                # Ctrl-C included: never leave a server running on our files.
                self.kill()
                if isinstance(exc, Exception):
                    raise RuntimeError(
                        f"server did not start: {exc}\n{self.log_tail()}"
                    ) from exc
                raise
        with contextlib.closing(self.connect(database=None)) as conn:
            conn.query(f"CREATE DATABASE IF NOT EXISTS `{self.database}`".encode())
        return self

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM, wait)."""
        if self._executor is not None:
            self._executor.stop()
            self._executor = None

    def kill(self) -> None:
        """Crash the server (SIGKILL): no clean shutdown, as in a power cut."""
        if self._executor is not None:
            self._executor.kill()
            self._executor = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._executor is not None and bool(self._executor.running())

    def close(self) -> None:
        """Stop the server and delete its files."""
        try:
            self.stop()
        finally:
            if self._base_dir is not None:
                shutil.rmtree(self._base_dir, ignore_errors=True)

    def __enter__(self) -> TemporaryServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TemporaryServer {self.host}:{self.port} {state}>"

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's error log, for diagnostics."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ---------------------------------------------------------

    def _is_mariadb(self) -> bool:
        assert self._server is not None
        version = subprocess.run(  # noqa: S603 - our own binary, no shell
            [self._server, "--version"], capture_output=True, text=True, check=True
        ).stdout
        return "mariadb" in version.lower()

    def _user_args(self) -> list[str]:
        # mysqld refuses to run as root unless told to.
        return ["--user=root"] if os.geteuid() == 0 else [f"--user={getpass.getuser()}"]

    def _initialize(self) -> None:
        assert self._server is not None
        if self._is_mariadb():
            install = _find("mariadb-install-db", "mysql_install_db")
            if install is None:
                raise RuntimeError("mariadb-install-db not found")
            command = [
                install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user_args(),
            ]
        else:
            command = [
                self._server,
                "--no-defaults",
                "--initialize-insecure",
                f"--datadir={self.datadir}",
                *self._user_args(),
            ]
        # A session of its own: an interruption kills the whole tree (the install
        # script starts a bootstrap server).
        process = subprocess.Popen(  # noqa: S603 - our own binary, no shell
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"could not initialize {self.datadir}:\n{output}")

    def _command(self) -> list[str]:
        assert self._server is not None
        options = {
            "datadir": self.datadir,
            "socket": self.socket,
            "port": self.port,
            "bind-address": self.host,
            "pid-file": self.base_dir / "mysqld.pid",
            "log-error": self.log_path,
            "tmpdir": self.base_dir,
            "character-set-server": "utf8mb4",
            "innodb-buffer-pool-size": "64M",
            **{key.replace("_", "-"): value for key, value in self.options.items()},
        }
        return [
            self._server,
            "--no-defaults",
            "--skip-name-resolve",
            *self._user_args(),
            *(f"--{key}={value}" for key, value in options.items()),
        ]
