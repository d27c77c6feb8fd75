"""A real OpenSSH server (/usr/sbin/sshd) inside a network-namespace host.

```
 root namespace (the test, the control plane on hosts.gateway)
      └── bridge ── host hN: sshd on HOST:22, root login with a generated key only
```

The host reaches nothing but the bridge (support/netns.py), so whatever `corral node add`
installs there must come over the SSH connection. Keys are generated per server: `key` is
the client's private key, `wrong_key` one the server does not accept. Needs root.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from support.cluster import wait_for
from support.netns import Host

SSHD = "/usr/sbin/sshd"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


class NetnsSshd:
    def __init__(
        self, host: Host, root: Path, port: int = 22, client_key: Path | None = None
    ) -> None:
        """`client_key`: a private key to accept (its .pub beside it), shared by several
        servers; default: one generated for this server."""
        self.host = host
        self.port = port
        self.dir = root / f"sshd-{host.name}"
        self.dir.mkdir(parents=True)
        self.key = client_key or self.dir / "client_ed25519"
        self.wrong_key = self.dir / "stranger_ed25519"
        host_key = self.dir / "host_ed25519"
        for key in (self.key, self.wrong_key, host_key):
            if not key.exists():
                _keygen(key)
        authorized = self.dir / "authorized_keys"
        shutil.copy(self.key.with_name(self.key.name + ".pub"), authorized)
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress {host.address}\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\nUsePAM no\nPidFile none\nStrictModes no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin yes\nUseDNS no\n"
            "Subsystem sftp internal-sftp\nMaxStartups 50\nMaxSessions 50\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        self.log = self.dir / "sshd.log"
        with self.log.open("ab") as out:
            self.proc = host.popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=out)
        wait_for(
            f"sshd on {host.name} to listen",
            lambda: self.proc.poll() is None and _listening(host.address, port),
            timeout=10,
        )

    @property
    def url(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"ssh://root@{self.host.address}{port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> NetnsSshd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
