{{/*
Named templates. charts/tests/chart_test.py renders these with a small Go-template subset (see its docstring):
keep to if/else/with/range/define/include, pipelines and the functions it lists.
*/}}

{{/* The chart name, truncated to the 63 characters DNS labels allow. */}}
{{- define "peerd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-peerd", or "<release>" when the release name already contains the chart name. */}}
{{- define "peerd.fullname" -}}
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

{{/* Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the namespace: one release per namespace. */}}
{{- define "peerd.clusterName" -}}
{{- printf "%s-%s" (include "peerd.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "peerd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: immutable once a DaemonSet exists, so only name and instance. */}}
{{- define "peerd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "peerd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every object's labels. `app` keeps the original peerd's `kubectl -l app=peerd` working. */}}
{{- define "peerd.labels" -}}
helm.sh/chart: {{ include "peerd.chart" . }}
{{ include "peerd.selectorLabels" . }}
app: {{ include "peerd.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: peerd
{{- end -}}

{{- define "peerd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "peerd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "peerd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
--bootstrap: peerd.bootstrap when set (k8s-lease, auto), else the headless Service's DNS name and the router
port: every A/AAAA record is a peer.
*/}}
{{- define "peerd.bootstrap" -}}
{{- if .Values.peerd.bootstrap -}}
{{- .Values.peerd.bootstrap -}}
{{- else -}}
{{- printf "%s.%s.svc.%s:%d" (include "peerd.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.router) -}}
{{- end -}}
{{- end -}}

{{/*
The mirror URLs containerd on the node is told to use (--mirrors): with hostNetwork peerd is on the node's
loopback; otherwise the node forwards httpHostPort to the pod. $(NODE_IP) is expanded by the kubelet from env.
*/}}
{{- define "peerd.mirrors" -}}
{{- if .Values.peerd.mirrors -}}
{{- join "," .Values.peerd.mirrors -}}
{{- else if .Values.hostNetwork -}}
{{- printf "http://127.0.0.1:%d" (int .Values.ports.http) -}}
{{- else if .Values.httpHostPort -}}
{{- printf "http://$(NODE_IP):%d" (int .Values.httpHostPort) -}}
{{- else -}}
{{- fail "peerd.addMirrorConfiguration needs hostNetwork, httpHostPort or peerd.mirrors: containerd on the node cannot reach the pod network" -}}
{{- end -}}
{{- end -}}
