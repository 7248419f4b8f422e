"""mlops: one command line for what users run locally.

    mlops config check [--offline] [FILE...]
                                     validate pipeline YAMLs (default: every include/pipelines/*.yaml),
                                     then run their SQL on the source with no rows (ml_ops.config)
    mlops pipeline dry-run NAME --days N [--end DAY]
                                     a pipeline's steps on N days of its source, into a scratch prefix
                                     and a temporary MLflow store (ml_ops.pipeline.dry_run)
    mlops features materialize --pipeline NAME [--until DAY] [--rebuild]
                                     (re)build a pipeline's online feature store from its validated raw
                                     partitions (ml_ops.features.materialize)
    mlops stack up|down|status       the embedded stack (ml_ops.local.stack)
    mlops demo                       the end-to-end demo (ml_ops.local.demo)
    mlops traffic ...                fresh simulated traffic to the gateway (ml_ops.local.traffic)
    mlops sim ...                    load simulated source days (ml_ops.local.sim)

Each subcommand hands the rest of the command line to its module's own ``main``, so options are defined
once, in the module (``mlops traffic --help`` is the module's help); ``python -m <module>`` keeps working.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from importlib import import_module

# subcommand -> (module whose main() it runs, one-line help); imported only when chosen: they are heavy
DELEGATES = {
    "stack": ("ml_ops.local.stack", "start, stop or inspect the embedded stack: up | down | status [--only ...]"),
    "demo": ("ml_ops.local.demo", "the loop by itself: concept change, alarm, retrain, gate, canary, promotion"),
    "traffic": ("ml_ops.local.traffic", "fresh simulated events (none trained on) to the gateway, labels late"),
    "sim": ("ml_ops.local.sim.__main__", "load simulated source days: fraud | tumors --db URL --start DAY --days N"),
}
# mlops pipeline ACTION -> (module whose main() it runs, one-line help)
PIPELINE_ACTIONS = {
    "dry-run": (
        "ml_ops.pipeline.dry_run",
        "NAME --days N [--end DAY]: extract, validate, features, train and compare on N days of the real "
        "source, into a scratch prefix and a temporary MLflow store; prints each stage's outputs and warnings",
    ),
}

# mlops features ACTION -> (module whose main() it runs, one-line help)
FEATURES_ACTIONS = {
    "materialize": (
        "ml_ops.features.materialize",
        "--pipeline NAME [--until DAY] [--rebuild]: record the events of the newest validated raw day and its "
        "lookback in the online store (MLOPS_ONLINE_STORE); a merge, safe beside live traffic",
    ),
}


def _run(main: Callable[..., int | None], prog: str, argv: list[str]) -> int:
    """Call a module's main with ``argv``: as its argument if it takes one, else as ``sys.argv``."""
    params = inspect.signature(main).parameters
    if "prog" in params:
        rc = main(argv, prog=prog)
    elif params:
        rc = main(argv)
    else:
        saved = sys.argv
        sys.argv = [prog, *argv]
        try:
            rc = main()
        finally:
            sys.argv = saved
    return rc or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config = sub.add_parser("config", help="pipeline configuration")
    config_sub = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    # the module's parser has the options (FILE..., --offline)
    config_sub.add_parser(
        "check",
        help="[--offline] [FILE...]: validate pipeline YAMLs (default: all of include/pipelines), then run their "
        "SQL on the source with no rows and check it returns the columns the YAML names",
        add_help=False,
    )
    pipeline = sub.add_parser("pipeline", help="one pipeline before it is switched on: dry-run")
    pipeline_sub = pipeline.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (_module, help_) in PIPELINE_ACTIONS.items():
        pipeline_sub.add_parser(name, help=help_, add_help=False)  # the module's parser has the options
    features = sub.add_parser("features", help="the online feature store: materialize")
    features_sub = features.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (_module, help_) in FEATURES_ACTIONS.items():
        features_sub.add_parser(name, help=help_, add_help=False)
    for name, (_module, help_) in DELEGATES.items():
        # No options of its own (not even -h): everything after the subcommand goes to the module's parser.
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "config":
        from ml_ops.config import main as config_main

        return _run(config_main, "mlops config check", rest)
    if args.command == "pipeline":
        module = import_module(PIPELINE_ACTIONS[args.action][0])
        return _run(module.main, f"mlops pipeline {args.action}", rest)
    if args.command == "features":
        module = import_module(FEATURES_ACTIONS[args.action][0])
        return _run(module.main, f"mlops features {args.action}", rest)
    if args.command == "demo" and rest:
        parser.error(f"mlops demo takes no arguments (got {' '.join(rest)}); it reads MLOPS_DEMO_* variables")
    module = import_module(DELEGATES[args.command][0])
    return _run(module.main, f"mlops {args.command}", rest)


if __name__ == "__main__":
    sys.exit(main())
