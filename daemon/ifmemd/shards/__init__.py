"""Memory shards: the child process and what it holds.

Lives here: the shard process and its pipe protocol (`shard`), reading files
(`corpus`), cutting them into cited passages (`chunker`), the on-disk index
and keeping it up to date (`store`, `sync`, `writer`, `watcher`, and
`readahead`, the process that reads a first build's files beside the
shard), full-text search (`index`), ranking by meaning (`semantic`,
optional, and `bert`, its sentence encoder in numpy), and the model
backends (`llm`, `claude`, `openai_chat`, `modelshard`).

May import: `ifmemd.errors`, the low-level helpers of `ifmemd.system`, and
each other. Never `ifmemd.wire` (a shard talks only to its supervisor, over
pipes), never `ifmemd.log` (shards never write the log), never the
composition at the top of `ifmemd`. (tests/test_layering.py holds these rules.)
"""
