"""Run a Tuner's trials on a Kubernetes cluster (``kubetune submit``, ``KUBETUNE_MODE=cluster``).

Of ``kubetune`` this package and ``kubetune.sidecar`` alone talk to the API server (the
kubernetes client, imported lazily inside the functions that need it): ``Tuner.fit()`` in
cluster mode creates a TuneExperiment as ``kubectl apply`` would and reads its status.
Nothing here is imported by ``import kubetune``.
"""
