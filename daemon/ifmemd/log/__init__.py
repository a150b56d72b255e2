"""The event log: everything an auditor needs, and nothing about what the events mean to the daemon.

Lives here: the byte format (`logformat`), the SQLite store (`eventlog`) and
its single writer (`writer`), signing keys (`keys`), checkpoints, the event
registry and upcasters (`events`), the folded state (`state`), snapshots,
replay and the verifier; sealed segments and pruning (`segments`), the reader
of a whole log across its files (`chain`), and sealing and pruning with no
daemon (`maintenance`).

May import: `ifmemd.errors`, the low-level helpers of `ifmemd.system`
(`durable`, `privatefile`, `paths`), and each other. Never `ifmemd.shards`,
`ifmemd.wire`, or the composition at the top of `ifmemd` (daemon, supervisor,
coordinator, config). Only modules in this package touch the `events` table.
(tests/test_layering.py holds these rules.)
"""
