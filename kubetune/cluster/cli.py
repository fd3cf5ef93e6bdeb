"""``kubetune submit SCRIPT [ARGS...]``: run an unchanged Ray Tune script with its trials on the
cluster (the script runs here, as ``python SCRIPT`` would; its Tuner.fit() runs in cluster
mode, so only the trials become pods)."""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="run a Tuner script with its trials as pods on the cluster (kubeconfig context)",
        description=__doc__,
    )
    p.add_argument("script", help="the Python script (its Tuner.fit() runs on the cluster)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    p.add_argument(
        "--working-dir",
        help="directory shipped to every trial and put on its sys.path (default: the script's"
        " directory; '' for none)",
    )
    p.add_argument("--requirements", help="requirements.txt installed in each trial pod")
    p.add_argument("--image", help="trial image (default: the operator's trial base image)")
    p.add_argument("--storage", help="s3://BUCKET/PREFIX for the experiment (KUBETUNE_STORAGE)")
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        print(f"kubetune submit: no script {args.script}", file=sys.stderr)
        return 2
    os.environ["KUBETUNE_MODE"] = "cluster"
    working_dir = args.working_dir if args.working_dir is not None else os.path.dirname(script)
    values = {
        "KUBETUNE_NAMESPACE": args.namespace,
        "KUBETUNE_WORKING_DIR": os.path.abspath(working_dir) if working_dir else None,
        "KUBETUNE_REQUIREMENTS": os.path.abspath(args.requirements) if args.requirements else None,
        "KUBETUNE_IMAGE": args.image,
        "KUBETUNE_STORAGE": args.storage,
    }
    for var, value in values.items():
        if value:
            os.environ[var] = value
    sys.argv = [script, *args.args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
