{{/* Names and labels: every template takes them from here. */}}

{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubetune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubetune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "kubetune.labels" -}}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end }}

{{/* The stable subset that selects the operator pods; never change it (Deployment selectors are immutable). */}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Label value trainer pods carry (kubetune_api.labels.finetunejob_labels); the PodMonitor selects it. */}}
{{- define "kubetune.trainerName" -}}
kubetune-trainer
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubetune.leaseName" -}}
{{- default (include "kubetune.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "kubetune.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kubetune.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubetune.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's permissions, rule for rule those of kubetune_operator.builders.rbac.OPERATOR_RULES
(a unit test compares them; operator/RBAC.md says why each is needed). Split by scope:
namespaced rules go to a ClusterRole, or to a Role in each watched namespace; the Lease for
leader election is only needed in the release namespace.
*/}}
{{- define "kubetune.namespacedRules" -}}
# Watch FineTuneJobs and ContinuousPretrains; Kopf keeps its handler state in annotations (patch).
- apiGroups: ["kubetune.io"]
  resources: ["finetunejobs", "continuouspretrains"]
  verbs: ["get", "list", "watch", "patch"]
# A ContinuousPretrain creates a FineTuneJob per run and prunes finished ones past historyLimit.
- apiGroups: ["kubetune.io"]
  resources: ["finetunejobs"]
  verbs: ["create", "delete"]
- apiGroups: ["kubetune.io"]
  resources: ["finetunejobs/status", "continuouspretrains/status"]
  verbs: ["get", "patch"]
# Children carry blockOwnerDeletion, which needs update on the owner's finalizers.
- apiGroups: ["kubetune.io"]
  resources: ["finetunejobs/finalizers", "continuouspretrains/finalizers"]
  verbs: ["update"]
# The trainer Job (create, suspend/resume).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Trainer pods: phase, scheduling failures, termination messages. Read only.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Trainer config, torchrun rendezvous Service, the trainer's own ServiceAccount.
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "create"]
# Validation: the referenced Secrets and claims exist. get by name only: it cannot list Secrets.
- apiGroups: [""]
  resources: ["secrets", "persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# A Role per job that lets its trainer pod patch that one job's status (and nothing else).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
{{- end }}

{{/* Leader election: the Lease lives in the release namespace. */}}
{{- define "kubetune.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* Cluster-scoped, read-only (both modes). */}}
{{- define "kubetune.clusterRules" -}}
# Kopf discovers resources and notices CRD changes at run time.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# Kopf lists and watches namespaces in both modes (with named namespaces it retries for about
# a minute, then falls back to assuming they exist): names only, no access to their contents.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
