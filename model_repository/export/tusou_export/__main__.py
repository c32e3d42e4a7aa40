"""``python -m tusou_export {tiny,export}``: see each sub-command's ``--help``."""

from __future__ import annotations

import sys


def main() -> int:
    usage = "usage: python -m tusou_export {tiny,export} [options]  (see <command> --help)"
    if len(sys.argv) < 2 or sys.argv[1] not in ("tiny", "export"):
        print(usage, file=sys.stderr)
        return 2
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "tiny":
        from .tiny import main as run
    else:
        from .export import main as run
    return run(rest)


if __name__ == "__main__":
    raise SystemExit(main())
