"""The machine the daemon runs on: paths, private files, durable writes, systemd, set-up.

Lives here: XDG paths (`paths`), reading owner-only files (`privatefile`),
the one crash-safe file write (`durable`), sd_notify (`sdnotify`), the user
unit files (`units`), and the two set-up commands' libraries (`install` for
`ifmem init`, `doctor` for `ifmem doctor`).

May import: `paths`, `privatefile`, `durable`, `sdnotify` and `units` import
only `ifmemd.errors` and each other, so every other package can use them.
`install` and `doctor` check the whole installation, so they may also import
`ifmemd.log`, `ifmemd.wire` and `ifmemd.config`, and nothing may import them
but the CLI. (tests/test_layering.py holds these rules.)
"""
