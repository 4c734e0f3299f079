{{/*
Names, labels and small values shared by every template. All names are namespaced by the chart
("kuberank.") so a parent chart can include this one without clashes.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "kuberank.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, else "<release>-<chart>" (just "<release>" when it already
holds the chart name). Truncated to 63 characters: some Kubernetes name fields allow no more.
*/}}
{{- define "kuberank.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "kuberank.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods: stable across upgrades, never add to them. */}}
{{- define "kuberank.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuberank.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on every object. */}}
{{- define "kuberank.labels" -}}
helm.sh/chart: {{ include "kuberank.chart" . }}
{{ include "kuberank.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kuberank
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Annotations on every object (may be empty). */}}
{{- define "kuberank.annotations" -}}
{{- with .Values.commonAnnotations }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "kuberank.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kuberank.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository[:tag][@digest]; the tag defaults to the chart's appVersion. */}}
{{- define "kuberank.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository | trimPrefix "/" }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the Alertmanager webhook's bearer token. */}}
{{- define "kuberank.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "kuberank.fullname" .)) .Values.alertWebhook.existingSecret }}
{{- end }}

{{/* "true" when several operator replicas run: they elect one leader through a Lease. */}}
{{- define "kuberank.leaderElection" -}}
{{- if gt (int .Values.operator.replicaCount) 1 }}
{{- if .Values.alertWebhook.enabled }}
{{- fail (printf "alertWebhook.enabled=true needs operator.replicaCount=1 (got %d): only the elected leader serves the webhook, but the Service would send Alertmanager's notifications to any replica; set operator.replicaCount=1 or alertWebhook.enabled=false" (int .Values.operator.replicaCount)) }}
{{- end -}}
true
{{- end }}
{{- end }}

{{/* Namespace of the Grafana dashboard ConfigMap. */}}
{{- define "kuberank.dashboardNamespace" -}}
{{- default .Release.Namespace .Values.monitoring.grafanaDashboard.namespace }}
{{- end }}

{{/* Name of the admission rules ConfigMap and of the ValidatingAdmissionPolicy. */}}
{{- define "kuberank.admissionName" -}}
{{- printf "%s-admission" (include "kuberank.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Repositories RerankerDeployments may pull from: the admin's list, else the chart's inference image. */}}
{{- define "kuberank.allowedImageRepositories" -}}
{{- if .Values.admission.allowedImageRepositories }}
{{- join "," .Values.admission.allowedImageRepositories }}
{{- else }}
{{- printf "%s/%s" .Values.image.registry .Values.inferenceImage.repository | trimPrefix "/" }}
{{- end }}
{{- end }}
