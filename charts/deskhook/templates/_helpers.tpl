{{/* Names, labels and the few computed values every template shares. */}}

{{- define "deskhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "deskhook.fullname" -}}
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

{{- define "deskhook.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "deskhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "deskhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deskhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "deskhook.labels" -}}
helm.sh/chart: {{ include "deskhook.chart" . }}
{{ include "deskhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deskhook
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "deskhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deskhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "deskhook.resourceName" -}}
{{- default (include "deskhook.fullname" .) .Values.webhookAutomation.name }}
{{- end }}

{{- define "deskhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Pods that run when nothing scales them: the PodDisruptionBudget only makes sense above one. */}}
{{- define "deskhook.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
The termination grace period: it must outlast the drain (delay + grace) or the kubelet kills a pod
with events still queued.
*/}}
{{- define "deskhook.terminationGracePeriodSeconds" -}}
{{- $drain := add .Values.server.shutdownDelaySeconds .Values.server.shutdownGraceSeconds }}
{{- $period := .Values.server.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $period }}
{{- add $drain 5 }}
{{- else if le (int $period) (int $drain) }}
{{- fail (printf "server.terminationGracePeriodSeconds (%v) must exceed shutdownDelaySeconds + shutdownGraceSeconds (%v)" $period $drain) }}
{{- else }}
{{- $period }}
{{- end }}
{{- end }}

{{/* The Secret the pods read credentials from, or "" when there is none. */}}
{{- define "deskhook.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if include "deskhook.secretData" . }}
{{- include "deskhook.fullname" . }}
{{- end }}
{{- end }}

{{/*
The key under which the Secret holds credential `.key`, or "" when it holds none: with an existing
Secret as declared in existingSecretKeys, else the fixed key of each value that was set.
*/}}
{{- define "deskhook.secretKey" -}}
{{- $values := .root.Values.secrets }}
{{- if $values.existingSecret }}
{{- index $values.existingSecretKeys .key | default "" }}
{{- else if index $values .key }}
{{- index (dict "hmacSecrets" "hmac-secrets" "adminToken" "admin-token" "zohoClientId" "zoho-client-id" "zohoClientSecret" "zoho-client-secret" "zohoRefreshToken" "zoho-refresh-token" "llmApiKey" "llm-api-key") .key }}
{{- end }}
{{- end }}

{{/* The data of the chart's Secret (base64 values), empty when no credential was given. */}}
{{- define "deskhook.secretData" -}}
{{- $s := .Values.secrets }}
{{- if not $s.existingSecret }}
{{- $zoho := list $s.zohoClientId $s.zohoClientSecret $s.zohoRefreshToken | compact | len }}
{{- if and (gt $zoho 0) (lt $zoho 3) }}
{{- fail "secrets.zohoClientId, secrets.zohoClientSecret and secrets.zohoRefreshToken must be set together" }}
{{- end }}
{{- with $s.hmacSecrets }}
hmac-secrets: {{ join "\n" . | b64enc }}
{{- end }}
{{- with $s.adminToken }}
admin-token: {{ . | b64enc }}
{{- end }}
{{- with $s.zohoClientId }}
zoho-client-id: {{ . | b64enc }}
{{- end }}
{{- with $s.zohoClientSecret }}
zoho-client-secret: {{ . | b64enc }}
{{- end }}
{{- with $s.zohoRefreshToken }}
zoho-refresh-token: {{ . | b64enc }}
{{- end }}
{{- with $s.llmApiKey }}
llm-api-key: {{ . | b64enc }}
{{- end }}
{{- end }}
{{- end }}

{{/* Label matchers selecting this release's series in alerts. */}}
{{- define "deskhook.ruleSelector" -}}
{{- .Values.prometheusRule.selector | default (printf "namespace=%q,job=%q" (include "deskhook.namespace" .) (include "deskhook.fullname" .)) }}
{{- end }}
