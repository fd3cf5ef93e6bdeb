"""The ``kubetune`` command: run a TuneExperiment manifest locally, inspect, plot and watch
results."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _cmd_run(args: argparse.Namespace) -> int:
    from kubetune.local.config import TuneConfig
    from kubetune.local.tuner import Tuner
    from kubetune.manifest.experiment import import_entrypoint, plan_from_manifest
    from kubetune.manifest.validate import Manifest
    from kubetune.tune.helpers import with_resources
    from kubetune.tune.resources import PlacementGroupFactory

    manifest = Manifest.load(args.manifest)
    for warning in manifest.warnings:
        print(f"kubetune: {warning}", file=sys.stderr)
    plan = plan_from_manifest(manifest)
    _check_run_options(args)
    if (manifest.doc.get("spec") or {}).get("restoreFrom"):
        raise manifest.error(
            ("spec", "restoreFrom"),
            "continuing an experiment from its storage URI is the operator's; on this machine"
            " run the same manifest with --resume (and the same --storage-path and --name)",
        )
    trainable = import_entrypoint(plan, manifest)
    if not callable(trainable):
        raise manifest.error(
            ("spec", "trainable", "entrypoint"),
            f"{plan.entrypoint} is a {type(trainable).__name__}, not a function or a"
            " tune.Trainable subclass",
        )
    if plan.resources is not None:
        trainable = with_resources(trainable, PlacementGroupFactory.from_dict(plan.resources))
    run_config = plan.run_config
    if args.name:
        run_config.name = args.name
    run_config.storage_path = args.storage_path or os.environ.get("KUBETUNE_RESULTS_DIR")
    if args.quiet:
        run_config.verbose = 0
    root = run_config.storage_path or "~/kubetune_results"
    path = f"{root.rstrip('/')}/{run_config.name}"
    if args.resume:
        if not Tuner.can_restore(path):
            print(f"kubetune: nothing to resume at {path}", file=sys.stderr)
            return 2
        tuner = Tuner.restore(path, trainable, resume_errored=args.resume_errored)
    else:
        if Tuner.can_restore(path):
            print(
                f"kubetune: {path} already holds this experiment: add --resume to continue it,"
                " or --name to start another",
                file=sys.stderr,
            )
            return 2
        tuner = Tuner(
            trainable,
            param_space=plan.param_space,
            tune_config=TuneConfig(**plan.tune),
            run_config=run_config,
        )
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        return 130
    if len(grid) and grid.num_errors:
        _print_errors(grid)
    if len(grid) and grid.num_errors == len(grid):
        return 1
    return 0


def _check_run_options(args: argparse.Namespace) -> None:
    """--name and --storage-path, before anything is written."""
    from kubetune.manifest.strict import name_issue

    if args.name is not None and (problem := name_issue(args.name)):
        raise ValueError(f"--name: {problem}")
    from kubetune._util import malformed_s3_path

    path = args.storage_path or ""
    if malformed_s3_path(path):
        raise ValueError(f"--storage-path {path!r}: write s3://BUCKET[/PREFIX]")


def _print_errors(grid: Any) -> None:
    """Which trials errored and why: printed also with -q (a script's log needs it most)."""
    errored = [r for r in grid if r.error is not None]
    print(f"kubetune: {len(errored)} of {len(grid)} trials errored:", file=sys.stderr)
    for result in errored[:10]:
        lines = str(result.error).strip().splitlines() or [""]
        print(f"  {os.path.basename(result.log_dir)}: {lines[-1][:200]}", file=sys.stderr)
    if len(errored) > 10:
        print(f"  ... and {len(errored) - 10} more", file=sys.stderr)
    print(f"  (each trial's error.txt is in {grid.experiment_path})", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from kubetune.manifest.experiment import plan_from_manifest
    from kubetune.manifest.validate import Manifest

    manifest = Manifest.load(args.manifest)
    for warning in manifest.warnings:
        print(f"kubetune: {warning}", file=sys.stderr)
    plan = plan_from_manifest(manifest)
    print(f"{args.manifest}: valid TuneExperiment {plan.name!r} ({plan.entrypoint})")
    return 0


def _load_grid(path: str) -> Any:
    from kubetune.local.result_grid import ResultGrid

    return ResultGrid.from_path(path)


def _cmd_results(args: argparse.Namespace) -> int:
    from kubetune.local.stored_state import read_state

    grid = _load_grid(args.path)
    state = read_state(grid._local_path)
    statuses = {t["dirname"]: t["status"] for t in state.get("trials", [])}
    metric = args.metric or grid._metric
    rows = []
    config_keys: list[str] = []
    for result in grid:
        config = result.config or {}
        for key in config:
            if key not in config_keys and len(config_keys) < 5:
                config_keys.append(key)
    for result in grid:
        metrics = result.metrics or {}
        dirname = os.path.basename(result.log_dir)
        rows.append(
            [
                dirname,
                statuses.get(dirname, "?"),
                *[_fmt((result.config or {}).get(k)) for k in config_keys],
                _fmt(metrics.get("training_iteration")),
                _fmt(metrics.get(metric)) if metric else "",
                (str(result.error).strip().splitlines() or [""])[0][:60] if result.error else "",
            ]
        )
    header = ["trial", "status", *config_keys, "iter", metric or "", "error"]
    try:
        from rich.console import Console
        from rich.table import Table

        fancy = sys.stdout.isatty()
    except ImportError:
        fancy = False
    if not fancy:  # plain columns for pipes and scripts
        print("\t".join(header))
        for row in rows:
            print("\t".join(row))
    else:
        table = Table(title=f"{grid.experiment_path} ({len(grid)} trials)")
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    finished = state.get("finished")
    if isinstance(finished, dict) and finished.get("status") == "FAILED":
        print(f"stopped: {finished.get('reason')}")
    else:
        print("finished" if finished else "still running (or interrupted)")
    return 0


def _cmd_repair(args: argparse.Namespace) -> int:
    from kubetune.local.repair import repair

    for line in repair(args.path):
        print(f"kubetune repair: {line}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("kubetune plot needs matplotlib: pip install 'kubetune[plot]'", file=sys.stderr)
        return 2
    from kubetune._util import unflattened_lookup

    grid = _load_grid(args.path)
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for result in grid:
        xs: list[Any] = []
        ys: list[float] = []
        for row in result.history():
            try:
                value = unflattened_lookup(args.metric, row)
            except KeyError:
                continue
            if isinstance(value, (int, float)):
                xs.append(row.get(args.x, len(xs) + 1))
                ys.append(value)
        if xs:
            ax.plot(xs, ys, label=os.path.basename(result.log_dir), linewidth=1)
            drawn += 1
    if not drawn:
        print(f"kubetune: no trial reported {args.metric!r}", file=sys.stderr)
        return 1
    ax.set_xlabel(args.x)
    ax.set_ylabel(args.metric)
    ax.set_title(os.path.basename(grid.experiment_path.rstrip("/")))
    if drawn <= 12:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output} ({drawn} trials)")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from kubetune.dashboard.server import serve  # web deps load only for this command

    if not args.cluster:
        if not args.path:
            raise ValueError("kubetune dashboard needs a PATH, s3://... or --cluster")
        if args.namespace or args.all_namespaces or args.s3_endpoint:
            raise ValueError("-n/--namespace, --all-namespaces and --s3-endpoint go with --cluster")
        return serve(args.path, args.host, args.port)
    from urllib.parse import quote

    from kubetune.dashboard.cluster import make_cluster_server

    def make(target: str, host: str, port: int) -> Any:
        return make_cluster_server(
            args.path,
            args.namespace or [],
            args.all_namespaces,
            host,
            port,
            s3_endpoint=args.s3_endpoint,
        )

    page = ""
    if args.path and "/" in args.path:
        page = "#/exp/" + quote(args.path, safe="")
    where = f"TuneExperiment {args.path}" if args.path else "the cluster's TuneExperiments"
    try:
        return serve(where, args.host, args.port, make=make, page=page)
    except RuntimeError as exc:  # the API server's answer (no access, no such experiment)
        print(f"kubetune: {exc}", file=sys.stderr)
        return 2


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a TuneExperiment manifest on this machine")
    run.add_argument("manifest")
    run.add_argument("--storage-path", help="where results go (default ~/kubetune_results)")
    run.add_argument("--name", help="experiment name (default: the manifest's metadata.name)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run")
    run.add_argument(
        "--resume-errored",
        action="store_true",
        help="with --resume: retry errored trials from their checkpoints",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress table")
    run.set_defaults(func=_cmd_run)
    validate = sub.add_parser("validate", help="check a manifest against the CRD schema")
    validate.add_argument("manifest")
    validate.set_defaults(func=_cmd_validate)
    results = sub.add_parser("results", help="the trial table of an experiment")
    results.add_argument("path")
    results.add_argument("--metric")
    results.set_defaults(func=_cmd_results)
    repair = sub.add_parser(
        "repair", help="rebuild a damaged experiment's state from its trial directories"
    )
    repair.add_argument("path")
    repair.set_defaults(func=_cmd_repair)
    plot = sub.add_parser("plot", help="draw each trial's metric curve")
    plot.add_argument("path")
    plot.add_argument("--metric", required=True)
    plot.add_argument("--x", default="training_iteration")
    plot.add_argument("-o", "--output", required=True)
    plot.set_defaults(func=_cmd_plot)
    from kubetune.cluster.cli import add_parser

    add_parser(sub)
    dash = sub.add_parser(
        "dashboard", help="a live web page of the experiments at a path or on the cluster"
    )
    dash.add_argument(
        "path",
        nargs="?",
        help="an experiment or a folder of them: a directory or s3://...; with --cluster,"
        " [NAMESPACE/]NAME of one TuneExperiment (default: every one in the namespace)",
    )
    dash.add_argument(
        "--cluster",
        action="store_true",
        help="the TuneExperiments of the kubeconfig's current context (read access only)",
    )
    dash.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="with --cluster: a namespace to show (repeatable; default: the context's)",
    )
    dash.add_argument(
        "--all-namespaces", action="store_true", help="with --cluster: every namespace"
    )
    dash.add_argument(
        "--s3-endpoint",
        help="with --cluster: the S3 endpoint as this machine reaches it, when the experiments"
        " name one only their pods reach (an in-cluster Service; here a port-forward)",
    )
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    dash.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    dash.set_defaults(func=_cmd_dashboard)
    args = parser.parse_args(argv)
    from kubetune.manifest.validate import ManifestError
    from kubetune.storage import StorageError

    try:
        code: int = args.func(args)
    except (ManifestError, StorageError, FileNotFoundError, ValueError) as exc:
        print(f"kubetune: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
