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
# Experiments: watched by kopf, which patches its own annotations and finalizers on them.
- apiGroups: ["kubetune.io"]
  resources: ["tuneexperiments"]
  verbs: ["get", "list", "watch", "patch"]
# Experiment status: phase, conditions (Ready/Reconciling/Stalled), trial counts, best trial.
- apiGroups: ["kubetune.io"]
  resources: ["tuneexperiments/status"]
  verbs: ["get", "patch"]
# Trials: created (owned by their experiment), stopped/paused through their spec, deleted.
- apiGroups: ["kubetune.io"]
  resources: ["tunetrials"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Trial status (the operator owns phase and conditions; the sidecar owns status.report).
# list and watch too: the sidecars' Role grants them, and RBAC lets the operator grant only
# what it holds.
- apiGroups: ["kubetune.io"]
  resources: ["tunetrials/status"]
  verbs: ["get", "list", "watch", "patch"]
# Owner references with blockOwnerDeletion (kopf.adopt sets it) need update on the owner's
# finalizers where the OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: ["kubetune.io"]
  resources: ["tuneexperiments/finalizers", "tunetrials/finalizers"]
  verbs: ["update"]
# Trial pods: created (owned by their TuneTrial), watched for completion, deleted to stop a trial.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events about experiments and trials (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The trial sidecars' identity, made per namespace: ServiceAccount + Role + RoleBinding.
# Kubernetes lets the operator create that Role only because it holds every permission the Role
# grants (tunetrials and tunetrials/status: get, list, watch, patch): no escalate/bind verbs.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch"]
{{- if .Values.rbac.readSecrets }}
# The S3 credentials named by spec.storage.secretName: get only (no list, no watch).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if include "kubetune.peering" . }}
# kopf peering in a namespaced operator: one KopfPeering per served namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end -}}
