{{- define "operon.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "operon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "operon.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "operon.labels" -}}
app.kubernetes.io/name: operon
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "operon.selector" -}}
app.kubernetes.io/name: operon
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "operon.tlsEnabled" -}}
{{- if and .Values.handler.enabled (eq .Values.topology "separate") .Values.tls.enabled -}}true{{- end -}}
{{- end -}}

{{/* The handler container: shared by both topologies. */}}
{{- define "operon.handlerContainer" -}}
- name: handler
  image: "{{ .Values.handler.image.repository }}:{{ .Values.handler.image.tag }}"
  imagePullPolicy: {{ .Values.handler.image.pullPolicy }}
  args:
  {{- range .Values.handler.args }}
  - {{ . | quote }}
  {{- end }}
  {{- if eq .Values.topology "separate" }}
  - --listen=0.0.0.0:{{ .Values.handler.port }}
  {{- else }}
  - --listen=127.0.0.1:{{ .Values.handler.port }}
  {{- end }}
  - --liveness=http://0.0.0.0:{{ .Values.handler.healthPort }}/healthz
  {{- if include "operon.tlsEnabled" . }}
  - --tls-cert=/etc/operon/tls/tls.crt
  - --tls-key=/etc/operon/tls/tls.key
  - --tls-client-ca=/etc/operon/tls/ca.crt
  {{- end }}
  env:
  - {name: PYTHONDONTWRITEBYTECODE, value: "1"}
  ports:
  - {name: grpc, containerPort: {{ .Values.handler.port }}}
  - {name: handler-health, containerPort: {{ .Values.handler.healthPort }}}
  livenessProbe:
    httpGet: {path: /healthz, port: handler-health}
    periodSeconds: 10
  readinessProbe:
    tcpSocket: {port: grpc}
    periodSeconds: 5
  resources:
    {{- toYaml .Values.handler.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
  - {name: tmp, mountPath: /tmp}
  {{- if include "operon.tlsEnabled" . }}
  - {name: grpc-tls, mountPath: /etc/operon/tls, readOnly: true}
  {{- end }}
{{- end -}}

{{/* "true" when the core elects a leader: leaderElection.enabled, or by default replicas > 1. */}}
{{- define "operon.leaderElection" -}}
{{- if kindIs "invalid" .Values.leaderElection.enabled -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end -}}
{{- else if .Values.leaderElection.enabled -}}true{{- end -}}
{{- end -}}

{{- define "operon.leaseName" -}}
{{- default (include "operon.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Values that cannot work together: refused with the reason, before anything renders. */}}
{{- define "operon.validate" -}}
{{- if and (not .Values.watch.allNamespaces) (empty .Values.watch.namespaces) }}
{{- fail "set watch.allNamespaces=true or list watch.namespaces" }}
{{- end }}
{{- if not (has .Values.topology (list "sidecar" "separate")) }}
{{- fail "topology must be sidecar or separate" }}
{{- end }}
{{- $replicas := .Values.replicas }}
{{- if or (not (or (kindIs "int64" $replicas) (kindIs "float64" $replicas) (kindIs "int" $replicas))) (lt (float64 $replicas) 0.0) (ne (float64 $replicas) (float64 (int $replicas))) }}
{{- fail (printf "replicas must be a whole number ≥ 0, not %v" $replicas) }}
{{- end }}
{{- if and (gt (int $replicas) 1) (not (include "operon.leaderElection" .)) }}
{{- fail (printf "replicas=%d with leaderElection.enabled=false: every replica would handle every object (each change handled %d times, their writes conflicting). Turn leader election on (one replica handles, the others stand by) or set replicas=1." (int $replicas) (int $replicas)) }}
{{- end }}
{{- if include "operon.leaderElection" . }}
{{- $le := .Values.leaderElection }}
{{- range $key := list "leaseDuration" "renewDeadline" "retryPeriod" }}
{{- $v := index $le $key }}
{{- if not (and (or (kindIs "int64" $v) (kindIs "float64" $v) (kindIs "int" $v)) (gt (float64 $v) 0.0) (eq (float64 $v) (float64 (int $v)))) }}
{{- fail (printf "leaderElection.%s must be a whole number of seconds > 0, not %v" $key $v) }}
{{- end }}
{{- end }}
{{- if not (gt (float64 $le.leaseDuration) (float64 $le.renewDeadline)) }}
{{- fail (printf "leaderElection.leaseDuration (%v) must be greater than leaderElection.renewDeadline (%v): a leader that cannot renew must give up before a standby may take the Lease" $le.leaseDuration $le.renewDeadline) }}
{{- end }}
{{- if not (gt (float64 $le.renewDeadline) (float64 $le.retryPeriod)) }}
{{- fail (printf "leaderElection.renewDeadline (%v) must be greater than leaderElection.retryPeriod (%v): the leader must get more than one try to renew" $le.renewDeadline $le.retryPeriod) }}
{{- end }}
{{- end }}
{{- if and (not .Values.peering.name) (or .Values.peering.mandatory .Values.peering.priority) }}
{{- fail "peering.priority and peering.mandatory need peering.name (e.g. default, Kopf's default peering)" }}
{{- end }}
{{- end -}}
