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
