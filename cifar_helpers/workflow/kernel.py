"""The kernel manager papermill starts each notebook's kernel with: IPC transport where the platform
has it (ipykernel warns about unencrypted TCP on every start), else TCP."""

from __future__ import annotations

import os
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

# Unix socket paths are limited to about 107 bytes; ZeroMQ appends "-<port>" to the IPC prefix.
_MAX_IPC_PATH = 100


class LocalKernelManager(AsyncKernelManager):
    """An ``AsyncKernelManager`` using the IPC transport on POSIX systems (see the module docstring)."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

    async def _async_pre_start_kernel(self, **kwargs: Any) -> Any:
        if self.transport == "ipc":
            # IPC sockets live beside the connection file in Jupyter's runtime directory (a relative
            # "kernel-ipc" would put them in the notebook's folder); too long a path falls back to TCP.
            if not self.connection_file:
                from jupyter_core.paths import jupyter_runtime_dir

                runtime = jupyter_runtime_dir()
                os.makedirs(runtime, mode=0o700, exist_ok=True)
                self.connection_file = os.path.join(runtime, f"kernel-{os.getpid()}-{id(self):x}.json")
            prefix = os.path.splitext(self.connection_file)[0] + "-ipc"
            if len(prefix) + len("-65535") <= _MAX_IPC_PATH:
                self.ip = prefix
            else:
                self.transport = "tcp"
                self.ip = "127.0.0.1"
        return await super()._async_pre_start_kernel(**kwargs)
