"""The socket: protocol v1 messages, newline-delimited framing, the server, peer credentials.

Lives here: message shapes, handshake and the blocking client (`protocol`),
line framing over anyio streams (`framing`), the accept loop and connection
handling (`server`), and SO_PEERCRED (`peercred`).

May import: `ifmemd.errors`, the low-level helpers of `ifmemd.system`, and
each other. It knows nothing of the log, the shards or the daemon: the server
calls back into whatever handler the daemon gives it.
(tests/test_layering.py holds these rules.)
"""
