"""`python -m kubetune_dev up|down [--state-dir DIR]`: a local control plane for development."""

from __future__ import annotations

import argparse
import logging
import sys

from kubetune_dev.controlplane import DEFAULT_STATE_DIR, ControlPlaneError, down, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune_dev", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "start the control plane and run until Ctrl-C or `down`"),
        ("down", "stop the control plane started by `up`"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--state-dir", default=str(DEFAULT_STATE_DIR), help="default: %(default)s"
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.command == "up":
        try:
            up(args.state_dir)
        except ControlPlaneError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if not down(args.state_dir):
        print(f"no control plane running from {args.state_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
