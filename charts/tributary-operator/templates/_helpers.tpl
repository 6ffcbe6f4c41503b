{{/*
The chart name, or nameOverride.
*/}}
{{- define "tributary-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, else the release name when it
contains the chart name (a release `tributary-operator` gives `tributary-operator`), else
`<release>-<chart>`. At most 52 characters, so that `<fullname>-controller` and
`<fullname>-leader-election` stay valid names.
*/}}
{{- define "tributary-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tributary-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator's pods (the Deployment's selector; the controller
Service adds the leader label to them).
*/}}
{{- define "tributary-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tributary-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "tributary-operator.labels" -}}
helm.sh/chart: {{ include "tributary-operator.chart" . }}
{{ include "tributary-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tributary
{{- end }}

{{/*
The operator image: repository with the digest, or the tag (default: appVersion).
*/}}
{{- define "tributary-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The namespace the operator watches; empty when it watches all of them.
*/}}
{{- define "tributary-operator.watchNamespace" -}}
{{- if and .Values.watch.allNamespaces .Values.watch.namespace }}
{{- fail "watch.allNamespaces and watch.namespace exclude each other: set one of them" }}
{{- end }}
{{- if not .Values.watch.allNamespaces }}
{{- default .Release.Namespace .Values.watch.namespace }}
{{- end }}
{{- end }}

{{- define "tributary-operator.controllerServiceName" -}}
{{- printf "%s-controller" (include "tributary-operator.fullname" .) }}
{{- end }}

{{/*
Where brokers reach their controllers: the controller Service of this release.
*/}}
{{- define "tributary-operator.controllerAddress" -}}
{{- default (printf "%s.%s.svc:9093" (include "tributary-operator.controllerServiceName" .) .Release.Namespace) .Values.controllerAddress }}
{{- end }}

{{- define "tributary-operator.leaseName" -}}
{{- default (include "tributary-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
RBAC rules for the namespaces the operator watches. The same list as
WATCHED_NAMESPACES in operator/src/api_access.rs (`tributary-operator rbac` prints
it); scripts/check-chart fails when they differ.
*/}}
{{- define "tributary-operator.watchedRules" -}}
- apiGroups: ["tributary.dev"]
  resources: ["clusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tributary.dev"]
  resources: ["clusters/status"]
  verbs: ["patch"]
- apiGroups: ["tributary.dev"]
  resources: ["topics"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tributary.dev"]
  resources: ["topics/status"]
  verbs: ["update", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "update", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end }}

{{/*
RBAC rules outside any namespace: the rack label of the nodes brokers run on.
CLUSTER_WIDE in operator/src/api_access.rs.
*/}}
{{- define "tributary-operator.clusterWideRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
{{- end }}

{{/*
RBAC rules for the operator's own namespace: its Lease and the leader label on its pod.
OWN_NAMESPACE in operator/src/api_access.rs.
*/}}
{{- define "tributary-operator.ownNamespaceRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
{{- end }}
