{{/*
deskhook's alerts, one entry each: name, PromQL, how long the condition must hold (`for`),
severity and text. Each has a section of the same name in docs/runbooks.md.

Why these `for` values: an alert on "any such event in the last N minutes" keeps its condition
true for N minutes after a single event, so its short `for` (1m) only rides over a scrape gap
and never hides an event: each of those events is a delivery or a run lost or refused. Ratios,
gauges and backlogs get a `for` as long as a transient (a rollout, a burst, a Zoho hiccup) lasts.
*/}}
{{- define "deskhook.alerts" -}}
{{- $s := include "deskhook.ruleSelector" . }}
{{- $t := .Values.prometheusRule.thresholds }}
# Deliveries.
- alert: DeskhookSignatureFailures
  expr: sum by (namespace, scheme) (increase(deskhook_signature_failures_total{ {{- $s -}} }[10m])) > {{ $t.signatureFailures }}
  for: 5m
  severity: warning
  summary: Webhook signature verification is failing
  description: {{`'{{ $value | humanize }} deliveries to deskhook in {{ $labels.namespace }} failed {{ $labels.scheme }} verification in 10 minutes: a rotated key, a wrong webhook id or org id, or someone probing the endpoint.'`}}
- alert: DeskhookPayloadParseErrors
  expr: sum by (namespace) (increase(deskhook_payload_parse_errors_total{ {{- $s -}} }[10m])) > 0
  for: 1m
  severity: warning
  summary: Verified webhook payloads are not valid JSON
  description: {{`'{{ $value | humanize }} verified deliveries in {{ $labels.namespace }} could not be parsed in 10 minutes; the payload format may have changed.'`}}
- alert: DeskhookMissingTicketId
  expr: sum by (namespace) (increase(deskhook_missing_ticket_id_total{ {{- $s -}} }[10m])) > 0
  for: 1m
  severity: warning
  summary: Ticket events arrive without a ticket id
  description: {{`'{{ $value | humanize }} ticket events in {{ $labels.namespace }} carried no usable ticket id in 10 minutes.'`}}
- alert: DeskhookDeliveriesRefused
  expr: sum by (namespace) (increase(deskhook_webhook_requests_total{ {{- $s -}} ,outcome="unavailable"}[5m])) > 0
  for: 1m
  severity: critical
  summary: Deliveries are refused with 503
  description: {{`'{{ $value | humanize }} deliveries in {{ $labels.namespace }} were answered 503 (queue full, Redis unreachable or draining) in 5 minutes. Zoho Desk does not retry: those events are lost.'`}}
# Automation runs.
- alert: DeskhookWorkflowFailing
  expr: |-
    sum by (namespace) (rate(deskhook_workflow_runs_total{ {{- $s -}} ,result="failed"}[15m]))
      / sum by (namespace) (rate(deskhook_workflow_runs_total{ {{- $s -}} }[15m]))
      > {{ $t.workflowFailureRatio }}
  for: 10m
  severity: warning
  summary: Errors processing webhooks
  description: {{`'{{ $value | humanizePercentage }} of automation runs in {{ $labels.namespace }} failed over 15 minutes; see deskhook_workflow_errors_total by step and the console.'`}}
- alert: DeskhookWorkflowStepErrors
  expr: sum by (namespace, step) (increase(deskhook_workflow_errors_total{ {{- $s -}} }[15m])) > 0
  for: 1m
  severity: info
  summary: An automation step is failing
  description: {{`'The {{ $labels.step }} step failed {{ $value | humanize }} times in 15 minutes in {{ $labels.namespace }}.'`}}
# Settings.
- alert: DeskhookSettingsNotApplied
  expr: |-
    max by (namespace) (deskhook_config_generation{ {{- $s -}} })
      != min by (namespace) (deskhook_config_generation{ {{- $s -}} })
  for: 10m
  severity: warning
  summary: Not every pod runs the latest settings
  description: {{`'deskhook pods in {{ $labels.namespace }} have run different settings generations for 10 minutes; compare deskhook_config_generation by pod and the resource status.'`}}
- alert: DeskhookSettingsRejected
  expr: sum by (namespace, pod) (increase(deskhook_config_reload_errors_total{ {{- $s -}} }[10m])) > 0
  for: 1m
  severity: warning
  summary: A settings edit was refused
  description: {{`'{{ $labels.pod }} refused an invalid WebhookAutomation edit; the last good settings stay in force until it is fixed.'`}}
- alert: DeskhookVerificationDisabled
  expr: max by (namespace, pod) (deskhook_verification_disabled{ {{- $s -}} }) == 1
  for: 1m
  severity: critical
  summary: deskhook accepts unverified deliveries
  description: {{`'{{ $labels.pod }} runs with --insecure-no-verification.'`}}
- alert: DeskhookMetricsAbsent
  expr: absent(deskhook_config_generation{ {{- $s -}} })
  for: 10m
  severity: critical
  summary: No deskhook pod is scraped
  description: No deskhook pod has reported metrics for 10 minutes; webhooks are probably not received.
# Queue. With Redis every pod reports the shared queue, hence max by namespace.
- alert: DeskhookQueueBacklog
  expr: max by (namespace) (deskhook_queue_depth{ {{- $s -}} }) > {{ $t.queueDepth }}
  for: 10m
  severity: warning
  summary: Events are piling up in the queue
  description: {{`'More than {{ $value | humanize }} events have waited in {{ $labels.namespace }} for 10 minutes.'`}}
- alert: DeskhookQueueNearlyFull
  expr: |-
    max by (namespace, pod) (deskhook_queue_depth{ {{- $s -}} } / deskhook_queue_capacity{ {{- $s -}} })
      > {{ $t.queueFullRatio }}
  for: 5m
  severity: critical
  summary: The queue is nearly full
  description: {{`'The queue of {{ $labels.pod }} is {{ $value | humanizePercentage }} full; a full queue answers 503 and Zoho Desk drops those events.'`}}
- alert: DeskhookDeadLetters
  expr: max by (namespace) (deskhook_queue_dead_letters{ {{- $s -}} }) > 0
  for: 1m
  severity: warning
  summary: Jobs failed for good and wait in the dead-letter stream
  description: {{`'{{ $value | humanize }} jobs in {{ $labels.namespace }} ran out of attempts; list them with deskhook queue dead-letters, fix the cause, then replay them with deskhook queue replay.'`}}
- alert: DeskhookRedisUnreachable
  expr: min by (namespace, pod) (deskhook_queue_redis_up{ {{- $s -}} }) == 0
  for: 1m
  severity: critical
  summary: A pod cannot reach Redis
  description: {{`'{{ $labels.pod }} failed its last Redis command; it answers deliveries with 503 until Redis is back.'`}}
- alert: DeskhookLeasesLost
  expr: sum by (namespace, pod) (increase(deskhook_queue_lost_leases_total{ {{- $s -}} }[15m])) > 0
  for: 1m
  severity: warning
  summary: Jobs were taken over from a pod that still ran them
  description: {{`'{{ $labels.pod }} lost {{ $value | humanize }} jobs to another pod in 15 minutes: it renewed them too late (CPU starvation, long pauses, Redis latency).'`}}
# Zoho APIs.
- alert: DeskhookZohoApiErrors
  expr: |-
    sum by (namespace, api) (rate(deskhook_zoho_request_failures_total{ {{- $s -}} ,kind=~"server_error|no_answer"}[10m]))
      / sum by (namespace, api) (rate(deskhook_zoho_requests_total{ {{- $s -}} }[10m]))
      > {{ $t.zohoErrorRatio }}
  for: 10m
  severity: warning
  summary: Zoho API requests are failing
  description: {{`'{{ $value | humanizePercentage }} of Zoho {{ $labels.api }} requests from {{ $labels.namespace }} failed (5xx or no answer) over 10 minutes.'`}}
- alert: DeskhookZohoThrottled
  expr: sum by (namespace, api) (increase(deskhook_zoho_request_failures_total{ {{- $s -}} ,kind="throttled"}[10m])) > 0
  for: 5m
  severity: warning
  summary: Zoho throttles deskhook's API calls
  description: {{`'Zoho answered 429 to {{ $value | humanize }} {{ $labels.api }} requests in 10 minutes; lower spec.zoho.maxConcurrency or check the portal''s API credits.'`}}
- alert: DeskhookZohoTokenRefreshThrottled
  expr: sum by (namespace) (increase(deskhook_zoho_token_refreshes_total{ {{- $s -}} ,result=~"throttled|limited"}[10m])) > 0
  for: 1m
  severity: warning
  summary: Zoho access token refreshes are throttled
  description: {{`'Access token refreshes in {{ $labels.namespace }} were throttled or held back {{ $value | humanize }} times in 10 minutes.'`}}
- alert: DeskhookZohoCredentialsRejected
  expr: sum by (namespace) (increase(deskhook_zoho_token_refreshes_total{ {{- $s -}} ,result="rejected"}[15m])) > 0
  for: 1m
  severity: critical
  summary: Zoho refuses deskhook's OAuth credentials
  description: {{`'Zoho refused the refresh token or client credentials in {{ $labels.namespace }}; no ticket can be read or written until the Secret is fixed.'`}}
# Guarded rollout.
- alert: DeskhookRolloutAborted
  expr: sum by (namespace, action, reason) (increase(deskhook_rollout_aborts_total{ {{- $s -}} }[15m])) > 0
  for: 1m
  severity: warning
  summary: A guarded rollout was pulled back to 0 %
  description: {{`'The {{ $labels.action }} rollout in {{ $labels.namespace }} breached its {{ $labels.reason }} guard and is at 0 % on every pod until spec.rollout.{{ $labels.action }} changes.'`}}
{{- end }}
