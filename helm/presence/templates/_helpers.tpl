{{/* Names, labels and the values every workload shares. */}}

{{- define "presence.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "presence.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway") */}}
{{- define "presence.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "presence.labels" -}}
{{ include "presence.selectorLabels" . }}
helm.sh/chart: {{ include "presence.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: presence
presence/region: {{ .ctx.Values.region.nodeId | quote }}
{{- end -}}

{{- define "presence.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "presence.isCenter" -}}
{{- if eq .Values.region.type "center" -}}true{{- end -}}
{{- end -}}

{{- define "presence.secretName" -}}
{{- default (printf "%s-secrets" (include "presence.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Fully qualified name of a Service of this release: (dict "ctx" $ "name" "store") */}}
{{- define "presence.svcHost" -}}
{{- printf "%s-%s.%s.svc.%s" (include "presence.fullname" .ctx) .name .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{/* The store the region's cache-nodes and gateways use: the store-node (center) or the relay
     (leaf). Prints "tcp://host:cmdport tcp://host:pubport"; a replicated center: each member's
     pod through the headless Service, comma-separated in member order (the clients follow the
     leader among them). */}}
{{- define "presence.storeEndpoints" -}}
{{- if include "presence.isCenter" . -}}
{{- $h := include "presence.svcHost" (dict "ctx" . "name" "store") -}}
{{- if gt (int .Values.store.replicas) 1 -}}
{{- $cmd := list -}}
{{- $pub := list -}}
{{- range $i := until (int .Values.store.replicas) -}}
{{- $pod := printf "%s-store-%d.%s" (include "presence.fullname" $) $i $h -}}
{{- $cmd = append $cmd (printf "tcp://%s:%d" $pod (int $.Values.store.ports.cmd)) -}}
{{- $pub = append $pub (printf "tcp://%s:%d" $pod (int $.Values.store.ports.pub)) -}}
{{- end -}}
{{- printf "%s %s" (join "," $cmd) (join "," $pub) -}}
{{- else -}}
{{- printf "tcp://%s:%d tcp://%s:%d" $h (int .Values.store.ports.cmd) $h (int .Values.store.ports.pub) -}}
{{- end -}}
{{- else -}}
{{- $h := include "presence.svcHost" (dict "ctx" . "name" "relay") -}}
{{- printf "tcp://%s:%d tcp://%s:%d" $h (int .Values.relay.ports.cmd) $h (int .Values.relay.ports.pub) -}}
{{- end -}}
{{- end -}}

{{/* STORE_REPLICAS: every member's raft address, its pod through the headless Service. */}}
{{- define "presence.storeMembers" -}}
{{- $h := include "presence.svcHost" (dict "ctx" . "name" "store") -}}
{{- $m := list -}}
{{- range $i := until (int .Values.store.replicas) -}}
{{- $m = append $m (printf "tcp://%s-store-%d.%s:%d" (include "presence.fullname" $) $i $h (int $.Values.store.ports.raft)) -}}
{{- end -}}
{{- join "," $m -}}
{{- end -}}

{{/* The gateway uses at most 16 cache-nodes: the cache tier may not grow beyond that. */}}
{{- define "presence.cacheMax" -}}
{{- $n := int (ternary .Values.cache.autoscaling.maxReplicas .Values.cache.replicas .Values.cache.autoscaling.enabled) -}}
{{- if or (lt $n 1) (gt $n 16) -}}
{{- fail (printf "cache: %d cache pods; the gateway takes 1 to 16 (cache.autoscaling.maxReplicas, or cache.replicas without autoscaling)" $n) -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/* CACHE_DNS: the cache tier's headless Service and port. */}}
{{- define "presence.cacheDns" -}}
{{- $n := include "presence.cacheMax" . -}}
{{- printf "%s:%d" (include "presence.svcHost" (dict "ctx" . "name" "cache")) (int .Values.cache.port) -}}
{{- end -}}

{{- define "presence.commonEnv" -}}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: REQUEST_TIMEOUT_MS
  value: {{ .Values.requestTimeoutMs | quote }}
- name: DATA_DIR
  value: /var/lib/presence
{{- end -}}

{{/* An env entry from the release's Secret: (dict "ctx" $ "name" "JWT_SECRET") */}}
{{- define "presence.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "presence.secretName" .ctx }}
      key: {{ .name }}
{{- end -}}

{{/* A ZeroMQ health probe run inside the container: (dict "endpoint" "tcp://..." "period" 10 ...) */}}
{{- define "presence.zmqProbe" -}}
exec:
  command: ["presence-probe", "-t", "2000", {{ .endpoint | quote }}]
periodSeconds: {{ .period | default 10 }}
timeoutSeconds: 3
failureThreshold: {{ .failures | default 3 }}
{{- end -}}

{{- define "presence.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
