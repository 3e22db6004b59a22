"""`kubetune` command line. Each subcommand imports its heavy dependencies lazily."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence


def _run(args: argparse.Namespace) -> int:
    from kubetune_cli.local_run import run_manifest

    return run_manifest(args.manifest, output_dir=args.output_dir, progress=not args.no_progress)


def _quickstart(args: argparse.Namespace) -> int:
    from kubetune_cli.quickstart import quickstart

    return quickstart(work_dir=args.work_dir)


def _dev(args: argparse.Namespace) -> int:
    from kubetune_dev.__main__ import main as dev_main

    return dev_main([args.action] + (["--state-dir", args.state_dir] if args.state_dir else []))


def _crds(args: argparse.Namespace) -> int:
    from kubetune_api import crdgen

    return crdgen.main([args.directory] + (["--check"] if args.check else []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a FineTuneJob manifest locally, without a cluster")
    run.add_argument("manifest", help="path to a FineTuneJob YAML file")
    run.add_argument("--output-dir", default=None, help="where file:// outputs land if relative")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    quick = commands.add_parser("quickstart", help="pre-train a tiny model, LoRA-tune it, compare")
    quick.add_argument("--work-dir", default="runs/quickstart", help="where data and artifacts go")
    quick.set_defaults(func=_quickstart)

    dev = commands.add_parser("dev", help="a local control plane for development")
    dev.add_argument("action", choices=["up", "down"])
    dev.add_argument("--state-dir", default=None, help="certs, logs, kubeconfig")
    dev.set_defaults(func=_dev)

    crds = commands.add_parser("crds", help="write (or --check) the generated CRDs")
    crds.add_argument("directory", nargs="?", default="crds")
    crds.add_argument("--check", action="store_true")
    crds.set_defaults(func=_crds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Library deprecation notices (transformers, torch) drown the progress bars and summary.
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
