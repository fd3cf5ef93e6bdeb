"""``python -m kubetune.trial SPEC.json``: run one trial and exit with its outcome's code."""

from __future__ import annotations

import argparse
import json
import os
import sys

from kubetune.trial import exit_codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.trial", description=__doc__)
    parser.add_argument("spec", nargs="?", help="path of the trial spec (JSON)")
    parser.add_argument("--spec-json", help="the trial spec itself, as JSON")
    args = parser.parse_args(argv)
    from kubetune.trial.spec import SpecError, TrialSpec

    try:
        if args.spec_json is not None:
            spec = TrialSpec.from_dict(json.loads(args.spec_json))
        elif args.spec is not None:
            spec = TrialSpec.load(args.spec)
        elif os.environ.get("KUBETUNE_TRIAL_SPEC"):
            spec = TrialSpec.load(os.environ["KUBETUNE_TRIAL_SPEC"])
        else:
            parser.error("give a spec path, --spec-json, or $KUBETUNE_TRIAL_SPEC")
    except (SpecError, json.JSONDecodeError) as exc:
        print(f"kubetune.trial: {exc}", file=sys.stderr)
        return exit_codes.INVALID_SPEC
    from kubetune.trial import telemetry
    from kubetune.trial.devices import set_cuda_visible_devices
    from kubetune.trial.runner import run_spec

    set_cuda_visible_devices(os.environ)  # a pod's GPUs, as the device plugin gave them
    telemetry.start_from_env(os.environ, spec.out_dir)  # when the pod asked for GPUs
    return run_spec(spec)


if __name__ == "__main__":
    sys.exit(main())
