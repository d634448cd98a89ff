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
  - --listen={{ .Values.listenAddress }}:{{ .Values.handler.port }}
  {{- else }}
  - --listen=127.0.0.1:{{ .Values.handler.port }}
  {{- end }}
  - --health-listen={{ .Values.listenAddress }}:{{ .Values.handler.probes.port }}
  - --liveness=http://{{ .Values.listenAddress }}:{{ .Values.handler.healthPort }}/healthz
  {{- if include "operon.tlsEnabled" . }}
  - --tls-cert=/etc/operon/tls/tls.crt
  - --tls-key=/etc/operon/tls/tls.key
  - --tls-client-ca=/etc/operon/tls/ca.crt
  {{- end }}
  env:
  - {name: PYTHONDONTWRITEBYTECODE, value: "1"}
  ports:
  - {name: grpc, containerPort: {{ .Values.handler.port }}}
  - {name: grpc-health, containerPort: {{ .Values.handler.probes.port }}}
  - {name: handler-health, containerPort: {{ .Values.handler.healthPort }}}
  {{- with include "operon.handlerProbes" . | trim }}
  {{- . | nindent 2 }}
  {{- end }}
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

{{/* The handler container's gRPC probes (handler.probes): each enabled one asks the health
     service on probes.port (a number: Kubernetes' grpc probes take no port names). */}}
{{- define "operon.handlerProbes" -}}
{{- $probes := .Values.handler.probes }}
{{- range $kind := list "startup" "liveness" "readiness" }}
{{- $probe := index $probes $kind }}
{{- if $probe.enabled }}
{{ $kind }}Probe:
  grpc: {port: {{ int $probes.port }}, service: {{ $probes.service | default "" | quote }}}
  {{- with omit $probe "enabled" }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "true" when the core shards: sharding.ring is set. */}}
{{- define "operon.sharding" -}}
{{- if .Values.sharding.ring -}}true{{- end -}}
{{- end -}}

{{/* "true" when the core elects a leader: leaderElection.enabled, or by default replicas > 1
     (unless sharded: then every replica handles). */}}
{{- define "operon.leaderElection" -}}
{{- if kindIs "invalid" .Values.leaderElection.enabled -}}
{{- if and (gt (int .Values.replicas) 1) (not (include "operon.sharding" .)) }}true{{ end -}}
{{- else if .Values.leaderElection.enabled -}}true{{- end -}}
{{- end -}}

{{/* "true" when several replicas may handle at once or hand over: a rollout starts a new pod
     before it stops an old one (RollingUpdate) instead of Recreate. */}}
{{- define "operon.rolling" -}}
{{- if or (include "operon.leaderElection" .) (include "operon.sharding" .) -}}true{{- end -}}
{{- end -}}

{{/* The lease timings of `what` (leaderElection or sharding) are whole seconds with
     leaseDuration > renewDeadline > retryPeriod; `why` and `retries` say why the two orders. */}}
{{- define "operon.validateLeaseTimings" -}}
{{- $what := .what }}
{{- $le := .timings }}
{{- range $key := list "leaseDuration" "renewDeadline" "retryPeriod" }}
{{- $v := index $le $key }}
{{- if not (and (or (kindIs "int64" $v) (kindIs "float64" $v) (kindIs "int" $v)) (gt (float64 $v) 0.0) (eq (float64 $v) (float64 (int $v)))) }}
{{- fail (printf "%s.%s must be a whole number of seconds > 0, not %v" $what $key $v) }}
{{- end }}
{{- end }}
{{- if not (gt (float64 $le.leaseDuration) (float64 $le.renewDeadline)) }}
{{- fail (printf "%s.leaseDuration (%v) must be greater than %s.renewDeadline (%v): %s" $what $le.leaseDuration $what $le.renewDeadline .why) }}
{{- end }}
{{- if not (gt (float64 $le.renewDeadline) (float64 $le.retryPeriod)) }}
{{- fail (printf "%s.renewDeadline (%v) must be greater than %s.retryPeriod (%v): %s" $what $le.renewDeadline $what $le.retryPeriod .retries) }}
{{- end }}
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
{{- $sharding := .Values.sharding }}
{{- if include "operon.sharding" . }}
{{- $ring := $sharding.ring }}
{{- if not (and (kindIs "string" $ring) (le (len $ring) 63) (regexMatch "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$" $ring)) }}
{{- fail (printf "sharding.ring must be a label value (1-63 letters, digits, '-', '_' or '.', alphanumeric at both ends: it labels the shards' Leases and ends the objects' label key shard.alpha.sharding.timebertt.dev/<ring>), not %q" (toString $ring)) }}
{{- end }}
{{- if not (has $sharding.assignment (list "own" "sharder")) }}
{{- fail (printf "sharding.assignment must be own (the shards assign the objects among themselves) or sharder (timebertt's sharder assigns them), not %v" $sharding.assignment) }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
{{- fail (printf "sharding.ring=%s with leaderElection.enabled=true: with sharding every replica handles a share of the objects, with leader election one replica handles them all (operon run refuses --shards-ring with --leader-election). Unset one: sharding.ring=\"\" or leaderElection.enabled=null." $ring) }}
{{- end }}
{{- if .Values.peering.name }}
{{- fail (printf "sharding.ring=%s with peering.name=%s: every shard would take part in Kopf's peering under its own identity, and peers of the same priority pause one another, so every shard would pause. Unset one: sharding.ring=\"\" or peering.name=\"\"." $ring .Values.peering.name) }}
{{- end }}
{{- include "operon.validateLeaseTimings" (dict "what" "sharding" "timings" $sharding "why" "a shard that cannot renew must let go of its objects before the others take them over" "retries" "a shard must get more than one try to renew its Lease") }}
{{- end }}
{{- if and (gt (int $replicas) 1) (not (include "operon.leaderElection" .)) (not (include "operon.sharding" .)) }}
{{- fail (printf "replicas=%d with leaderElection.enabled=false: every replica would handle every object (each change handled %d times, their writes conflicting). Turn leader election on (one replica handles, the others stand by), shard (sharding.ring: each replica handles a share) or set replicas=1." (int $replicas) (int $replicas)) }}
{{- end }}
{{- if include "operon.leaderElection" . }}
{{- include "operon.validateLeaseTimings" (dict "what" "leaderElection" "timings" .Values.leaderElection "why" "a leader that cannot renew must give up before a standby may take the Lease" "retries" "the leader must get more than one try to renew") }}
{{- end }}
{{- if .Values.handler.enabled }}
{{- $port := .Values.handler.probes.port }}
{{- if not (and (or (kindIs "int64" $port) (kindIs "float64" $port) (kindIs "int" $port)) (eq (float64 $port) (float64 (int $port))) (ge (int $port) 1) (le (int $port) 65535)) }}
{{- fail (printf "handler.probes.port must be a port number (1-65535: the kubelet's grpc probes take no port names), not %v" $port) }}
{{- end }}
{{- if or (eq (int $port) (int .Values.handler.port)) (eq (int $port) (int .Values.handler.healthPort)) }}
{{- fail (printf "handler.probes.port (%d) must differ from handler.port and handler.healthPort: the health service listens on a port of its own" (int $port)) }}
{{- end }}
{{- end }}
{{- if and (not .Values.peering.name) (or .Values.peering.mandatory .Values.peering.priority) }}
{{- fail "peering.priority and peering.mandatory need peering.name (e.g. default, Kopf's default peering)" }}
{{- end }}
{{- end -}}

{{/* The pod's network: the node's (hostNetwork, see values.yaml) and extra /etc/hosts entries. */}}
{{- define "operon.podNetwork" -}}
{{- if .Values.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with .Values.hostAliases }}
hostAliases:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
