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

{{/*
Labels as one map: commonLabels, then the chart's own over them, so each key appears once
(kustomize, Argo CD and yamllint refuse a duplicate key).
*/}}
{{- define "deskhook.ownLabels" -}}
{{- $own := dict "helm.sh/chart" (include "deskhook.chart" .) "app.kubernetes.io/version" (.Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-") "app.kubernetes.io/managed-by" .Release.Service "app.kubernetes.io/part-of" "deskhook" }}
{{- toYaml (merge $own (include "deskhook.selectorLabels" . | fromYaml)) }}
{{- end }}

{{- define "deskhook.labels" -}}
{{- toYaml (merge (include "deskhook.ownLabels" . | fromYaml) (deepCopy (.Values.commonLabels | default dict))) }}
{{- end }}

{{/* The labels with `.extra` over them (still one key each): `dict "root" $ "extra" (dict ...)`. */}}
{{- define "deskhook.labelsWith" -}}
{{- toYaml (merge (deepCopy .extra) (include "deskhook.labels" .root | fromYaml)) }}
{{- end }}

{{/* The pods' labels: podLabels over commonLabels, the chart's own (and the selector) over both. */}}
{{- define "deskhook.podLabels" -}}
{{- $extra := merge (deepCopy (.Values.podLabels | default dict)) (deepCopy (.Values.commonLabels | default dict)) }}
{{- toYaml (merge (include "deskhook.ownLabels" . | fromYaml) $extra) }}
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
{{- $_ := required "image.repository is required: no public deskhook image is published. Build it from the repository's Dockerfile, push it to a registry the cluster pulls from, and set image.repository (and image.tag)" .Values.image.repository }}
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

{{/* Whether Redis is configured: the chart's own or an external one named by a Secret. */}}
{{- define "deskhook.redisConfigured" -}}
{{- if or .Values.redis.enabled .Values.redis.urlSecret.name }}true{{ end }}
{{- end }}

{{/*
The queue backend the pods will run: the live resource's when the chart does not render it
(an upgrade with owner install: `lookup` reads it; offline rendering finds nothing), else
spec.queue.backend, else redis when Redis is configured, else memory.
*/}}
{{- define "deskhook.queueBackend" -}}
{{- $queue := .Values.webhookAutomation.spec.queue | default dict }}
{{- $backend := $queue.backend | default (ternary "redis" "memory" (eq (include "deskhook.redisConfigured" .) "true")) }}
{{- if not (include "deskhook.rendersResource" .) }}
{{- $live := lookup "deskhook.dev/v1alpha1" "WebhookAutomation" (include "deskhook.namespace" .) (include "deskhook.resourceName" .) }}
{{- if $live }}
{{- $backend = dig "spec" "queue" "backend" "memory" $live }}
{{- end }}
{{- end }}
{{- $backend }}
{{- end }}

{{/*
The checks that keep several pods safe: more than one pod needs the shared queue, and the
shared queue needs a Redis URL.
*/}}
{{- define "deskhook.checkQueue" -}}
{{- $backend := include "deskhook.queueBackend" . }}
{{- $redis := include "deskhook.redisConfigured" . }}
{{- if and .Values.redis.enabled .Values.redis.urlSecret.name }}
{{- fail "redis.enabled (the chart runs Redis) and redis.urlSecret.name (your Redis) are exclusive: choose one" }}
{{- end }}
{{- if and .Values.redis.cluster (not .Values.redis.urlSecret.name) }}
{{- fail "redis.cluster says your Redis is a Redis Cluster: give its URL with redis.urlSecret.name (the chart's own Redis is a single server)" }}
{{- end }}
{{- if and (eq $backend "redis") (not $redis) }}
{{- fail "the Redis queue backend needs a Redis: set redis.enabled=true (the chart runs one) or redis.urlSecret.name (a Secret holding your Redis URL)" }}
{{- end }}
{{- if and (eq $backend "memory") (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- $pods := ternary "autoscaling" (printf "replicaCount=%v" .Values.replicaCount) .Values.autoscaling.enabled }}
{{- if $redis }}
{{- fail (printf "%s needs the Redis queue, but spec.queue.backend is memory: drop it from the values, or switch the installed WebhookAutomation %s (which upgrades read): kubectl -n %s patch webhookautomation %s --type merge -p '{\"spec\":{\"queue\":{\"backend\":\"redis\"}}}'" $pods (include "deskhook.resourceName" .) (include "deskhook.namespace" .) (include "deskhook.resourceName" .)) }}
{{- end }}
{{- fail (printf "%s on the in-memory queue loses and duplicates events (each pod holds its own queue). Either set redis.enabled=true (the chart runs Redis) or redis.urlSecret.name (your Redis), which switches the queue to Redis; or run one pod (replicaCount=1, autoscaling.enabled=false)" $pods) }}
{{- end }}
{{- end }}

{{/*
Whether this rendering includes the WebhookAutomation: always with owner values; with owner
install only on the first install, and not when one of that name already exists (a release
installed again after an uninstall that kept it).
*/}}
{{- define "deskhook.rendersResource" -}}
{{- if .Values.webhookAutomation.create }}
{{- if eq .Values.webhookAutomation.owner "values" }}true
{{- else if .Release.IsInstall }}
{{- if not (lookup "deskhook.dev/v1alpha1" "WebhookAutomation" (include "deskhook.namespace" .) (include "deskhook.resourceName" .)) }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding the Redis URL and the key in it, or nothing without Redis. */}}
{{- define "deskhook.redisUrlRef" -}}
{{- if .Values.redis.enabled }}
name: {{ include "deskhook.fullname" . }}-redis
key: redis-url
{{- else if .Values.redis.urlSecret.name }}
name: {{ .Values.redis.urlSecret.name }}
key: {{ .Values.redis.urlSecret.key }}
{{- end }}
{{- end }}

{{- define "deskhook.redisName" -}}
{{- printf "%s-redis" (include "deskhook.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "deskhook.redisSelectorLabels" -}}
app.kubernetes.io/name: redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: queue
{{- end }}

{{/*
The Secret holding the generated admin token, or "" when the token comes from values or an
existing Secret.
*/}}
{{- define "deskhook.adminSecretName" -}}
{{- if not (include "deskhook.secretKey" (dict "root" . "key" "adminToken")) }}
{{- printf "%s-admin" (include "deskhook.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The admin Service's DNS names: what a port-forward or a scraper sends as Host. */}}
{{- define "deskhook.adminHosts" -}}
{{- $name := printf "%s-admin" (include "deskhook.fullname" .) }}
{{- $ns := include "deskhook.namespace" . }}
{{- $hosts := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) }}
{{- join "," (concat $hosts .Values.admin.allowedHosts | uniq) }}
{{- end }}

{{/* The port a URL connects to (from the scheme when it names none), for egress rules. */}}
{{- define "deskhook.urlPort" -}}
{{- $u := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $u.host | trimPrefix ":" }}
{{- $port | default (ternary "443" "80" (eq $u.scheme "https")) }}
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
{{- .Values.prometheusRule.selector | default (printf "namespace=%q,job=\"%s-admin\"" (include "deskhook.namespace" .) (include "deskhook.fullname" .)) }}
{{- end }}

{{/* Whether ServiceMonitor and PrometheusRule can be applied: the Prometheus Operator's API is served. */}}
{{- define "deskhook.monitoringApi" -}}
{{- if or (not .Values.monitoringCapabilityCheck) (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}
