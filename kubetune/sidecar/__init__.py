"""The trial pod's sidecar: restores inputs, uploads outputs, reports progress, relays verdicts.

``python -m kubetune.sidecar`` runs it from the environment below; ``--probe`` is the pod's
startup probe (exit 0 once inputs are restored). In-process (local mode, tests)::

    from kubetune.sidecar import Sidecar, SidecarConfig
    Sidecar(SidecarConfig(root=..., storage_uri=...), api=None).run()

Phases (DESIGN.md §3.2, the pod built by ``kubetune_operator.pod.build_trial_pod``):

restore
    Download ``RESTORE_FROM`` (a checkpoint URI) into ``ROOT/restore`` and every object under
    ``PARAMS_FROM`` into ``ROOT/params``; snapshot the trial's stored ``result.json`` and
    ``progress.csv`` (earlier attempts' lines); write ``ROOT/trial.json`` (``TRIAL_SPEC`` with
    ``checkpoint_index_start`` raised past every checkpoint already stored); then ``ROOT/.ready``.
upload
    Follow ``ROOT/out``: each complete ``checkpoint_NNNNNN`` directory (hidden ``.tmp_`` names
    are incomplete) is uploaded once with boto3's transfer manager, file progress kept in
    ``ROOT/.sidecar/`` so a restarted sidecar resumes without re-sending finished files;
    result.json in storage is always earlier attempts' lines + this attempt's lines, and only
    ever names checkpoints that are completely stored; progress.csv, params.json, error.txt and
    gpu.json are uploaded every ``UPLOAD_INTERVAL_S`` and at the end. The keep-rule
    (``NUM_TO_KEEP``, ``SCORE_ATTRIBUTE``, ``SCORE_ORDER``: kubetune.engine.checkpoints, the
    engine's own rule) deletes surplus checkpoints from storage and from ``ROOT/out``; the
    newest and those in the TuneTrial's ``spec.pinnedCheckpoints`` are kept.
report
    Merge-patch (``application/merge-patch+json``, field manager ``kubetune-sidecar``) the
    TuneTrial's ``status.report``, at most once per ``REPORT_INTERVAL_S`` (a gate request at
    once): ``sequence`` (+1 per write), ``attempt``, ``iteration``, ``metric``, ``results`` (the
    newest ``REPORT_RESULTS`` result lines without ``config``; non-finite numbers as the
    strings "NaN", "Infinity", "-Infinity"), ``firstResult`` (index of results[0] in the
    trial's whole log), ``resultCount`` (lines in the log so far), ``uploadedResults`` (lines
    stored in result.json), ``latestCheckpoint``/``bestCheckpoint`` (URIs, complete in
    storage), ``gate`` (the pending decision request or null), ``verdictSeq``, ``gpu``,
    ``exit`` (the runner's done marker), ``error``, ``uploaded`` (everything is stored),
    ``updateTime``. A result is reported only once its checkpoint (if any) is stored.
gate relay
    ``ROOT/gate/request.json`` is reported at once; the operator answers by setting the
    TuneTrial's ``spec.verdict`` ``{seq, action, reason}``; the sidecar watches and writes
    ``ROOT/gate/verdict-<seq>.json`` atomically.
finish
    When ``ROOT/done`` appears (the trial container exited) everything is flushed and the
    sidecar exits 0; on SIGTERM it flushes within ``GRACE_S`` less a margin.

Outages of storage or the API server are retried with backoff; nothing is lost or repeated.

Environment (``KUBETUNE_SIDECAR_`` prefix unless noted)::

    ROOT                shared volume (default /kubetune)
    STORAGE_URI         the trial's directory: s3://BUCKET/PREFIX/EXPERIMENT/TRIAL (or a local dir)
    TRIAL_SPEC          the trial spec JSON written to ROOT/trial.json (optional)
    RESTORE_FROM        checkpoint URI to restore into ROOT/restore (optional)
    PARAMS_FROM         URI prefix of with_parameters objects for ROOT/params (optional)
    CODE_FROM           URI prefix of code shipped by `kubetune submit` for ROOT/code (optional)
    TRIAL               TuneTrial name; unset: no API reporting
    NAMESPACE           its namespace (default: the token directory's namespace file)
    TOKEN_DIR           default /var/run/secrets/kubernetes.io/serviceaccount
    ATTEMPT             attempt number (default 0)
    POD                 pod name (informational)
    METRIC              the experiment's metric (status.report.metric)
    NUM_TO_KEEP, SCORE_ATTRIBUTE, SCORE_ORDER   keep-rule (default: keep all; newest best)
    REPORT_INTERVAL_S   minimum seconds between status writes (default 0.5: 2 writes/s)
    REPORT_RESULTS      results in status.report.results (default 16)
    UPLOAD_INTERVAL_S   seconds between log uploads (default 5)
    POLL_INTERVAL_S     seconds between scans of ROOT (default 0.1)
    GPUS                GPUs requested (0: none); the trial container samples them into
                        ROOT/out/gpu.json (kubetune.trial.telemetry)
    GPU_INTERVAL_S      how often gpu.json is read (default 10 when GPUS > 0, else off)
    GRACE_S             the pod's termination grace period (default 30)
    DELETE_GRACE_S      delete a surplus checkpoint only after this long, re-reading the
                        pins first (default 5; a PBT exploit's pin arrives with a delay)
    DELETE_STORED       1 (default): the keep-rule deletes surplus checkpoints from storage;
                        0 (set by the operator, whose engine deletes them knowing every
                        pending PBT restore): it only frees ROOT/out of stored ones
    RESTORE_TIMEOUT_S   how long to retry an unreachable store while restoring (default 600)
    PART_MIB            multipart threshold and part size in MiB (default 16)
    CONCURRENCY         parts/files in flight per checkpoint upload (default 10)
    KUBETUNE_S3_ENDPOINT_URL, KUBETUNE_S3_REGION, KUBETUNE_S3_ADDRESSING_STYLE,
    KUBETUNE_S3_VERIFY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
                        storage (kubetune.storage.s3.S3Config.from_env); without keys,
                        boto3's chain (IRSA, workload identity, instance profile)
"""

from __future__ import annotations

from kubetune.sidecar.config import SidecarConfig
from kubetune.sidecar.core import Sidecar

__all__ = ["Sidecar", "SidecarConfig"]
