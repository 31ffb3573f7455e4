{{/* Names and labels: every object of a deployable carries app.kubernetes.io/name = the deployable. */}}
{{- define "mmrag.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mmrag.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "mmrag.labels" -}}
{{ include "mmrag.selectorLabels" . }}
app.kubernetes.io/part-of: kafka-mmrag
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* A topic's full name: <prefix><base>[.<space>].v1 (mmrag.topics.Topics.name). */}}
{{- define "mmrag.topicName" -}}
{{- if and .space .spaceOwned -}}
{{- printf "%s%s.%s.v1" .prefix .base .space -}}
{{- else -}}
{{- printf "%s%s.v1" .prefix .base -}}
{{- end -}}
{{- end -}}

{{- define "mmrag.topics" -}}
{{- .Files.Get "generated/topics.yaml" -}}
{{- end -}}

{{- define "mmrag.groups" -}}
{{- .Files.Get "generated/groups.yaml" -}}
{{- end -}}

{{/* The Kafka principal a deployable authenticates as (mmrag/access.py declarations, Kubernetes spelling). */}}
{{- define "mmrag.principal" -}}
{{- $worker := ternary "faiss-worker" "retrieval-worker" (eq .root.Values.indexBackend "faiss") -}}
{{- $name := ternary "retrieval-shard" .name (hasPrefix "retrieval-shard-" .name) -}}
{{- $map := dict "text-embedder-heavy" "text-embedder" "retrieval-shard" $worker -}}
{{- .principalName | default (get $map $name) | default $name -}}
{{- end -}}

{{- define "mmrag.kafkaUser" -}}
{{- printf "%s-%s" .root.Release.Name (include "mmrag.principal" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The container's environment: the shared ConfigMap, then per-deployable settings, then secrets by reference.
Args: root, name (deployable), env (map), user (Kafka user name).
*/}}
{{- define "mmrag.env" -}}
{{- $v := .root.Values -}}
{{- if .inline }}
env:
  {{- range $k, $val := include "mmrag.settings" .root | fromYaml }}
  - {name: {{ $k }}, value: {{ $val | quote }}}
  {{- end }}
{{- else }}
envFrom:
  - configMapRef: {name: {{ printf "%s-settings" .root.Release.Name }}}
env:
{{- end }}
  {{- range $k, $val := .env }}
  - {name: {{ $k }}, value: {{ $val | quote }}}
  {{- end }}
  - name: MMRAG_INSTANCE_ID
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  {{- if $v.kafka.security.enabled }}
  - {name: MMRAG_KAFKA_SECURITY_PROTOCOL, value: SASL_SSL}
  - {name: MMRAG_KAFKA_SASL_MECHANISM, value: {{ $v.kafka.security.mechanism | quote }}}
  - {name: MMRAG_KAFKA_SASL_USERNAME, value: {{ .user | quote }}}
  - name: MMRAG_KAFKA_SASL_PASSWORD
    valueFrom: {secretKeyRef: {name: {{ printf "%s%s" $v.kafka.security.passwordSecretPrefix .user | quote }}, key: password}}
  - {name: MMRAG_KAFKA_SSL_CA_LOCATION, value: /etc/mmrag/kafka-ca/{{ $v.kafka.security.caSecret.key }}}
  {{- end }}
  {{- with $v.s3.credentialsSecret }}
  {{- if .name }}
  - name: MMRAG_S3_ACCESS_KEY_ID
    valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ .accessKeyIdKey | quote }}}}
  - name: MMRAG_S3_SECRET_ACCESS_KEY
    valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ .secretAccessKeyKey | quote }}}}
  {{- end }}
  {{- end }}
  {{- with .extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $v.milvus.tokenSecret }}
  {{- if .name }}
  - name: MMRAG_MILVUS_TOKEN
    valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ .key | quote }}}}
  {{- end }}
  {{- end }}
{{- end -}}

{{/* Volumes every pod mounts: writable /tmp and state (the root filesystem is read-only), models (not in Jobs:
noModels), CAs. */}}
{{- define "mmrag.volumes" -}}
{{- $v := .root.Values -}}
- {name: tmp, emptyDir: {sizeLimit: {{ $v.ephemeralStorage.limit }}}}
- {name: state, emptyDir: {}}
{{- if not .noModels }}
- name: models
  {{- toYaml $v.models.volume | nindent 2 }}
{{- end }}
{{- if $v.kafka.security.enabled }}
- name: kafka-ca
  secret: {secretName: {{ $v.kafka.security.caSecret.name | quote }}}
{{- end }}
{{- if and (eq .name "query-service") $v.grpc.tls.secretName }}
- name: grpc-tls
  secret: {secretName: {{ $v.grpc.tls.secretName | quote }}}
{{- end }}
{{- if and (eq .name "query-service") $v.auth.apiKeysSecret.name }}
- name: api-keys
  secret: {secretName: {{ $v.auth.apiKeysSecret.name | quote }}}
{{- end }}
{{- end -}}

{{- define "mmrag.volumeMounts" -}}
{{- $v := .root.Values -}}
- {name: tmp, mountPath: /tmp}
- {name: state, mountPath: /var/lib/mmrag}
{{- if not .noModels }}
- {name: models, mountPath: /models, readOnly: true}
{{- end }}
{{- if $v.kafka.security.enabled }}
- {name: kafka-ca, mountPath: /etc/mmrag/kafka-ca, readOnly: true}
{{- end }}
{{- if and (eq .name "query-service") $v.grpc.tls.secretName }}
- {name: grpc-tls, mountPath: /etc/mmrag/grpc-tls, readOnly: true}
{{- end }}
{{- if and (eq .name "query-service") $v.auth.apiKeysSecret.name }}
- {name: api-keys, mountPath: /etc/mmrag/api-keys, readOnly: true}
{{- end }}
{{- end -}}

{{/*
A pod template of a deployable. Args: root, name, cfg (its values), args (the mmrag command and flags), env (map),
probes (bool), extraPorts (list), restartPolicy, extraVolumes/extraMounts (lists).
*/}}
{{- define "mmrag.podTemplate" -}}
{{- $v := .root.Values -}}
{{- $cfg := .cfg -}}
{{- $gpu := int ($cfg.gpu | default 0) -}}
metadata:
  labels:
    {{- include "mmrag.labels" . | nindent 4 }}
  annotations:
    checksum/settings: {{ include "mmrag.settings" .root | sha256sum }}
spec:
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $cfg.terminationGracePeriodSeconds | default 60 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets: {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext: {{- toYaml ($cfg.podSecurityContext | default $v.podSecurityContext) | nindent 4 }}
  {{- with ($cfg.nodeSelector | default $v.nodeSelector) }}
  nodeSelector: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with ($cfg.tolerations | default $v.tolerations) }}
  tolerations: {{- toYaml . | nindent 4 }}
  {{- end }}
  affinity:
    {{- with ($cfg.affinity | default $v.affinity) }}
    {{- toYaml . | nindent 4 }}
    {{- else }}
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "mmrag.selectorLabels" . | nindent 16 }}
    {{- end }}
  {{- with .topologySpread }}
  topologySpreadConstraints: {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .container | default .name }}
      image: {{ printf "%s:%s" $v.image.repository (ternary $v.image.gpuTag $v.image.tag (gt $gpu 0)) | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: {{- toYaml .args | nindent 8 }}
      {{- include "mmrag.env" (dict "root" .root "env" .env "extraEnv" .extraEnv "inline" .inlineSettings "user" (include "mmrag.kafkaUser" .)) | nindent 6 }}
      ports:
        - {name: metrics, containerPort: {{ $v.probes.port }}, protocol: TCP}
        {{- range .extraPorts }}
        - {{ toYaml . | indent 10 | trim }}
        {{- end }}
      {{- if .probes }}
      {{- $startup := $cfg.startup | default dict }}
      startupProbe:
        httpGet: {path: /healthz, port: metrics}
        periodSeconds: 5
        failureThreshold: {{ $startup.failureThreshold | default 24 }}
      livenessProbe:
        httpGet: {path: /healthz, port: metrics}
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      readinessProbe:
        httpGet: {path: /readyz, port: metrics}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      {{- end }}
      resources:
        {{- $resources := deepCopy ($cfg.resources | default dict) }}
        {{- $_ := set $resources "requests" (merge ($resources.requests | default dict) (dict "ephemeral-storage" $v.ephemeralStorage.request)) }}
        {{- $_ := set $resources "limits" (merge ($resources.limits | default dict) (dict "ephemeral-storage" $v.ephemeralStorage.limit)) }}
        {{- if gt $gpu 0 }}
        {{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $gpu) ($resources.limits | default dict)) }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      securityContext: {{- toYaml ($cfg.securityContext | default $v.securityContext) | nindent 8 }}
      volumeMounts:
        {{- include "mmrag.volumeMounts" . | nindent 8 }}
        {{- with .extraMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "mmrag.volumes" . | nindent 4 }}
{{- end -}}

{{/* The shared settings (the ConfigMap's data): no secret ever goes here. */}}
{{- define "mmrag.settings" -}}
{{- $v := .Values -}}
MMRAG_BOOTSTRAP_SERVERS: {{ $v.kafka.bootstrapServers | quote }}
MMRAG_TOPIC_PREFIX: {{ $v.topicPrefix | quote }}
MMRAG_SHARDS: {{ $v.shards | quote }}
MMRAG_INDEX_BACKEND: {{ $v.indexBackend | quote }}
MMRAG_S3_ENDPOINT_URL: {{ $v.s3.endpointUrl | quote }}
MMRAG_S3_REGION: {{ $v.s3.region | quote }}
MMRAG_MILVUS_URI: {{ $v.milvus.uri | quote }}
MMRAG_CLIP_MODEL_DIR: {{ $v.models.clipDir | quote }}
MMRAG_PROBE_HOST: "0.0.0.0"
MMRAG_PROBE_PORT: {{ $v.probes.port | quote }}
MMRAG_STATE_DIR: /var/lib/mmrag
MMRAG_CACHE_DIR: /tmp/cache
HF_HUB_OFFLINE: "1"
{{- with $v.otlp.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ $v.otlp.protocol | quote }}
{{- end }}
{{- range $k, $val := $v.settings }}
{{ $k }}: {{ $val | quote }}
{{- end }}
{{- end -}}

{{/* "true" when something else owns the replica count: KEDA on the deployable's group lag, or the HPA. */}}
{{- define "mmrag.autoscaled" -}}
{{- $groups := (include "mmrag.groups" .root | fromYaml).groups -}}
{{- if and .root.Values.keda.enabled (hasKey $groups .name) .cfg.autoscaling -}}
true
{{- else if and .cfg.hpa .cfg.hpa.enabled -}}
true
{{- end -}}
{{- end -}}

{{/*
kube-score's deployment-replicas check wants 2+ replicas. Justified where it does not hold: KEDA owns the count
(the ScaledObject's minReplicaCount, which kube-score does not read), a source off until configured (0), or a
consumer group member run once: a Kafka consumer takes no request traffic, its partitions wait while it restarts
(lag, not errors), and the LLM worker's absence degrades Ask to extractive answers (docs "Degradation").
Args: autoscaled, replicas.
*/}}
{{- define "mmrag.replicasJustified" -}}
{{- if or .autoscaled (lt (int .replicas) 2) }}
annotations:
  kube-score/ignore: deployment-replicas
{{- end }}
{{- end -}}
