{{/* Chart name, truncated for label values. */}}
{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: RELEASE-kubetune unless the release name already contains the chart name. */}}
{{- define "kubetune.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end -}}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kubetune.sidecarImage" -}}
{{- printf "%s:%s" .Values.trial.sidecarImage.repository (default .Chart.AppVersion .Values.trial.sidecarImage.tag) -}}
{{- end -}}

{{/* true when kopf peering (leader election) is on */}}
{{- define "kubetune.peering" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/*
The operator's permissions in every namespace it serves (a ClusterRole's rules in cluster-wide
mode, a Role's in each watched namespace otherwise). Each rule says why the operator needs it.
*/}}
{{- define "kubetune.namespacedRules" -}}
# Experiments: kopf watches them and patches its finalizer and annotations (kubetune.io/*).
- apiGroups: ["kubetune.io"]
  resources: ["tuneexperiments"]
  verbs: ["list", "watch", "patch"]
# Experiment status: phase, conditions (Ready/Reconciling/Stalled), trial counts, best trial.
- apiGroups: ["kubetune.io"]
  resources: ["tuneexperiments/status"]
  verbs: ["patch"]
# Trials: created owned by their experiment (get when a create meets 409), watched, and
# stopped/paused through their spec. Never deleted by the operator: garbage collection does it.
- apiGroups: ["kubetune.io"]
  resources: ["tunetrials"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Trial status (the operator owns phase and conditions; the sidecar owns status.report).
# get, list and watch too: the sidecars' Role grants them, and RBAC lets the operator grant
# only what it holds itself.
- apiGroups: ["kubetune.io"]
  resources: ["tunetrials/status"]
  verbs: ["get", "list", "watch", "patch"]
# Owner references with blockOwnerDeletion (trials -> experiment, pods -> trial) need update on
# the owner's finalizers where the OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: ["kubetune.io"]
  resources: ["tuneexperiments/finalizers", "tunetrials/finalizers"]
  verbs: ["update"]
# Trial pods: created owned by their TuneTrial, watched (label kubetune.io/experiment), listed
# on recovery, deleted to stop or pause a trial.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
# Events about experiments and trials (core/v1, posted by the operator and by kopf).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The trial sidecars' identity, made once per namespace: ServiceAccount + Role + RoleBinding
# (looked up first, created when missing). No escalate or bind verb: the API server accepts the
# Role because the operator holds every permission it grants.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
{{- if .Values.rbac.readSecrets }}
# The Secrets an experiment names (spec.storage.secretName, image pull secrets): read to
# validate them and to reach S3 for the engine snapshot. get only: no list, no watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.readKueueWorkloads }}
# Kueue's Workloads of trial pods: read (never written) for the reason a trial is not admitted.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list"]
{{- end }}
{{- if include "kubetune.peering" . }}
# kopf peering in a namespaced operator: one KopfPeering per served namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end -}}

{{/*
"true" when this release should render the CRD named by the second argument: it does not exist
yet (or `helm template` cannot tell), or this release already manages it. A CRD that another
release or another kopf operator installed is left alone, so the install does not fail on
Helm's ownership check.
*/}}
{{- define "kubetune.ownsCRD" -}}
{{- $root := index . 0 -}}
{{- $crd := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" (index . 1) -}}
{{- if not $crd -}}
true
{{- else if and (eq (dig "metadata" "annotations" "meta.helm.sh/release-name" "" $crd) $root.Release.Name) (eq (dig "metadata" "annotations" "meta.helm.sh/release-namespace" "" $crd) $root.Release.Namespace) -}}
true
{{- end -}}
{{- end -}}

{{- define "kubetune.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dashboard
{{- end -}}

{{- define "kubetune.dashboardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubetune.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end -}}

{{- define "kubetune.dashboardServiceAccountName" -}}
{{- if .Values.dashboard.serviceAccount.create -}}
{{- default (printf "%s-dashboard" (include "kubetune.fullname" . | trunc 53 | trimSuffix "-")) .Values.dashboard.serviceAccount.name -}}
{{- else -}}
{{- required "dashboard.serviceAccount.name is required when dashboard.serviceAccount.create is false" .Values.dashboard.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The dashboard's permissions where it reads (`kubetune dashboard --cluster`): read-only, and
only what its pages show. Each rule says which page needs it.
*/}}
{{- define "kubetune.dashboardRules" -}}
# The experiment list and each experiment's storage URI (status.storageUri).
- apiGroups: ["kubetune.io"]
  resources: ["tuneexperiments"]
  verbs: ["get", "list"]
# A trial's page: its TuneTrial (phase, attempts), found by the experiment label.
- apiGroups: ["kubetune.io"]
  resources: ["tunetrials"]
  verbs: ["list"]
# A trial's pods (one per attempt) and their Events.
- apiGroups: [""]
  resources: ["pods", "events"]
  verbs: ["list"]
# The trial container's log tail (kubectl logs --tail).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- end -}}
