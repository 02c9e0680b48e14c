{{/*
Shared templates. Every service is rendered by the same deployment/service/pdb/hpa/networkpolicy
templates below, called once per enabled service from the files next to this one; what differs
between services is only its values block and its "memos.env.<service>" list.

Most templates take a context dict: {root: $, name: "<service>", svc: .Values.<service>}.
*/}}

{{/* The services, in the order objects are rendered. */}}
{{- define "memos.services" -}}
gateway ingest textmem actmem scheduler
{{- end -}}

{{- define "memos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memos.fullname" -}}
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

{{/* Name of one service's objects; 53 characters leave room for suffixes Kubernetes adds. */}}
{{- define "memos.componentName" -}}
{{- printf "%s-%s" (include "memos.fullname" .root | trunc 53 | trimSuffix "-") .name -}}
{{- end -}}

{{- define "memos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every pod of the release carries; internal NetworkPolicies admit exactly these. */}}
{{- define "memos.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "memos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "memos.labels" -}}
helm.sh/chart: {{ include "memos.chart" . }}
{{ include "memos.releaseSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: memos
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ctx: {root, name} */}}
{{- define "memos.selectorLabels" -}}
{{ include "memos.releaseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* ctx: {root, name} */}}
{{- define "memos.componentLabels" -}}
{{ include "memos.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "memos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "memos.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ctx: {root, image}; the tag defaults to the chart's appVersion. */}}
{{- define "memos.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Address another service of the release listens on (its Service), for MEMOS_*_ADDR. */}}
{{- define "memos.addr" -}}
{{- $svc := index .root.Values .name -}}
{{- printf "%s:%d" (include "memos.componentName" .) (int $svc.port) -}}
{{- end -}}

{{/*
"true" when a service keeps no state in its pod, so that replicas are interchangeable and
PDBs/HPAs make sense: gateway and ingest always; textmem when both Milvus and Neo4j are
external; the scheduler when its queue is in Redis; actmem never (caches live in the pod).
*/}}
{{- define "memos.stateless" -}}
{{- $e := .root.Values.engines -}}
{{- if or (eq .name "gateway") (eq .name "ingest") -}}
true
{{- else if eq .name "textmem" -}}
{{- if and $e.milvus.enabled $e.neo4j.enabled -}}true{{- end -}}
{{- else if eq .name "scheduler" -}}
{{- if $e.redis.enabled -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"true" when a service's listener serves TLS (tls.enabled): every service but the gateway, whose
public port stays plaintext (GatewaySettings.tls_serve is false). Its probes then use the
plaintext health-only port. ctx: {root, name}
*/}}
{{- define "memos.servesTls" -}}
{{- if and .root.Values.tls.enabled (ne .name "gateway") -}}true{{- end -}}
{{- end -}}

{{/* Name of the Secret the chart creates for engine credentials given as values. */}}
{{- define "memos.secretName" -}}
{{- printf "%s-engines" (include "memos.fullname" .) -}}
{{- end -}}

{{/*
Whether the chart's Secret holds an engine's credential: the engine is on, no existingSecret
names another Secret, and the value is set. ctx: {root, engine, field}
*/}}
{{- define "memos.inChartSecret" -}}
{{- $e := index .root.Values.engines .engine -}}
{{- if and $e.enabled (not $e.existingSecret) (index $e .field) -}}true{{- end -}}
{{- end -}}

{{/*
One env entry reading an engine's credential from its Secret (existingSecret or the chart's),
or nothing when the engine has neither. ctx: {root, engine, field, env}
*/}}
{{- define "memos.secretEnv" -}}
{{- $e := index .root.Values.engines .engine -}}
{{- if $e.existingSecret }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ $e.existingSecret }}
      key: {{ $e.existingSecretKey }}
{{- else if include "memos.inChartSecret" . }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "memos.secretName" .root }}
      key: {{ $e.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* Settings every service reads (shared/settings.py ServerSettings), plus tracing. */}}
{{- define "memos.env.common" -}}
{{- $c := .root.Values.common -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: MEMOS_LISTEN_ADDR
  value: {{ printf "0.0.0.0:%d" (int .svc.port) | quote }}
- name: MEMOS_LOG_LEVEL
  value: {{ $c.logLevel | quote }}
- name: MEMOS_LOG_FORMAT
  value: {{ $c.logFormat | quote }}
- name: MEMOS_ENABLE_REFLECTION
  value: {{ $c.enableReflection | quote }}
- name: MEMOS_DRAIN_DELAY_S
  value: {{ $c.drainDelaySeconds | quote }}
- name: MEMOS_GRACE_PERIOD_S
  value: {{ $c.gracePeriodSeconds | quote }}
{{- if .root.Values.metrics.enabled }}
- name: MEMOS_METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int .root.Values.metrics.port) | quote }}
{{- end }}
{{- if $c.maxRequestBytes }}
- name: MEMOS_MAX_REQUEST_BYTES
  value: {{ $c.maxRequestBytes | int64 | quote }}
{{- end }}
{{- if $c.serviceTokenSecret }}
- name: MEMOS_SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $c.serviceTokenSecret }}
      key: token
{{- end }}
{{- with .root.Values.tls }}
{{- if .enabled }}
{{- $dir := .mountPath | trimSuffix "/" }}
- name: MEMOS_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: MEMOS_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
- name: MEMOS_TLS_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
{{- end }}
{{- if include "memos.servesTls" . }}
- name: MEMOS_HEALTH_LISTEN_ADDR
  value: {{ printf "0.0.0.0:%d" (int .root.Values.tls.healthPort) | quote }}
{{- end }}
{{- /* Libraries that write caches under $HOME (Hugging Face, torch) get the /tmp emptyDir. */}}
- name: HOME
  value: /tmp
{{- with .root.Values.otel }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_INSECURE
  value: {{ .insecure | quote }}
{{- end }}
{{- $attrs := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" }}
{{- range $k, $v := .resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end }}
{{- end -}}

{{/* services/gateway/settings.py */}}
{{- define "memos.env.gateway" -}}
{{- $v := .root.Values -}}
- name: MEMOS_TEXTMEM_ADDR
  value: {{ include "memos.addr" (dict "root" .root "name" "textmem") | quote }}
{{- if $v.ingest.enabled }}
- name: MEMOS_INGEST_ADDR
  value: {{ include "memos.addr" (dict "root" .root "name" "ingest") | quote }}
{{- end }}
{{- if $v.scheduler.enabled }}
- name: MEMOS_SCHEDULER_ADDR
  value: {{ include "memos.addr" (dict "root" .root "name" "scheduler") | quote }}
{{- end }}
{{- if $v.actmem.enabled }}
{{- /* Erasure deletes the cubes' KV caches; exports list them. */}}
- name: MEMOS_ACTMEM_ADDR
  value: {{ include "memos.addr" (dict "root" .root "name" "actmem") | quote }}
{{- end }}
{{- with .root.Values.engines.llm }}
{{- if .enabled }}
- name: MEMOS_CHAT_LLM_BASE_URL
  value: {{ .baseUrl | quote }}
- name: MEMOS_CHAT_LLM_MODEL
  value: {{ default .model .chatModel | quote }}
{{- end }}
{{- end }}
{{- include "memos.secretEnv" (dict "root" .root "engine" "llm" "field" "apiKey" "env" "MEMOS_CHAT_LLM_API_KEY") }}
- name: MEMOS_SEARCH_TIMEOUT_S
  value: {{ .svc.searchTimeoutSeconds | quote }}
- name: MEMOS_MAX_CUBES_PER_REQUEST
  value: {{ .svc.maxCubesPerRequest | quote }}
- name: MEMOS_CUBE_CACHE_TTL_S
  value: {{ .svc.cubeCacheTtlSeconds | quote }}
{{- if .svc.apiKeysSecret }}
- name: MEMOS_API_KEYS_FILE
  value: /etc/memos/api-keys/keys.json
{{- end }}
{{- with .svc.jwt }}
{{- if or .jwksUrl .jwksConfigMap }}
- name: MEMOS_JWT_ISSUER
  value: {{ .issuer | quote }}
- name: MEMOS_JWT_AUDIENCE
  value: {{ .audience | quote }}
{{- if .jwksUrl }}
- name: MEMOS_JWT_JWKS_URL
  value: {{ .jwksUrl | quote }}
{{- end }}
{{- if .jwksConfigMap }}
- name: MEMOS_JWT_JWKS_FILE
  value: /etc/memos/jwks/jwks.json
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* services/ingest/settings.py */}}
{{- define "memos.env.ingest" -}}
{{- $llm := .root.Values.engines.llm -}}
- name: MEMOS_TEXTMEM_ADDR
  value: {{ include "memos.addr" (dict "root" .root "name" "textmem") | quote }}
- name: MEMOS_WINDOW_SIZE
  value: {{ .root.Values.memory.windowSize | quote }}
- name: MEMOS_WINDOW_OVERLAP
  value: {{ .root.Values.memory.windowOverlap | quote }}
{{- if .svc.fetchAllowHosts }}
- name: MEMOS_FETCH_ALLOW_HOSTS
  value: {{ .svc.fetchAllowHosts | quote }}
{{- end }}
{{- if .svc.uploadDir }}
- name: MEMOS_UPLOAD_DIR
  value: {{ .svc.uploadDir | quote }}
{{- end }}
{{- if $llm.enabled }}
- name: MEMOS_LLM_BASE_URL
  value: {{ $llm.baseUrl | quote }}
- name: MEMOS_LLM_MODEL
  value: {{ $llm.model | quote }}
{{- include "memos.secretEnv" (dict "root" .root "engine" "llm" "field" "apiKey" "env" "MEMOS_LLM_API_KEY") }}
{{- if $llm.visionBaseUrl }}
- name: MEMOS_VISION_BASE_URL
  value: {{ $llm.visionBaseUrl | quote }}
{{- end }}
{{- if $llm.visionModel }}
- name: MEMOS_VISION_MODEL
  value: {{ $llm.visionModel | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* services/textmem/settings.py */}}
{{- define "memos.env.textmem" -}}
{{- $e := .root.Values.engines -}}
- name: MEMOS_DATA_DIR
  value: /data
- name: MEMOS_WINDOW_SIZE
  value: {{ .root.Values.memory.windowSize | quote }}
- name: MEMOS_WINDOW_OVERLAP
  value: {{ .root.Values.memory.windowOverlap | quote }}
- name: MEMOS_EMBEDDING_THREADS
  value: {{ .svc.embeddingThreads | quote }}
- name: MEMOS_MAX_MEMORIES_PER_CUBE
  value: {{ .svc.maxMemoriesPerCube | int64 | quote }}
- name: MEMOS_MAX_BYTES_PER_CUBE
  value: {{ .svc.maxBytesPerCube | int64 | quote }}
{{- if $e.milvus.enabled }}
- name: MEMOS_MILVUS_URI
  value: {{ $e.milvus.uri | quote }}
- name: MEMOS_MILVUS_COLLECTION
  value: {{ $e.milvus.collection | quote }}
{{- if $e.milvus.indexType }}
- name: MEMOS_MILVUS_INDEX_TYPE
  value: {{ $e.milvus.indexType | quote }}
{{- end }}
{{- include "memos.secretEnv" (dict "root" .root "engine" "milvus" "field" "token" "env" "MEMOS_MILVUS_TOKEN") }}
{{- end }}
{{- if $e.neo4j.enabled }}
- name: MEMOS_GRAPH_STORE
  value: neo4j
- name: MEMOS_NEO4J_URI
  value: {{ $e.neo4j.uri | quote }}
- name: MEMOS_NEO4J_USER
  value: {{ $e.neo4j.user | quote }}
- name: MEMOS_NEO4J_DATABASE
  value: {{ $e.neo4j.database | quote }}
{{- include "memos.secretEnv" (dict "root" .root "engine" "neo4j" "field" "password" "env" "MEMOS_NEO4J_PASSWORD") }}
{{- else }}
- name: MEMOS_GRAPH_STORE
  value: sqlite
{{- end }}
{{- if $e.embedding.enabled }}
- name: MEMOS_EMBEDDER
  value: openai
- name: MEMOS_EMBEDDING_URL
  value: {{ $e.embedding.url | quote }}
- name: MEMOS_EMBEDDING_MODEL
  value: {{ $e.embedding.model | quote }}
- name: MEMOS_EMBEDDING_DIM
  value: {{ $e.embedding.dim | quote }}
{{- include "memos.secretEnv" (dict "root" .root "engine" "embedding" "field" "apiKey" "env" "MEMOS_EMBEDDING_API_KEY") }}
{{- else }}
- name: MEMOS_EMBEDDER
  value: local
{{- end }}
{{- end -}}

{{/* services/actmem/settings.py */}}
{{- define "memos.env.actmem" -}}
{{- $m := .svc.model -}}
- name: MEMOS_DATA_DIR
  value: /data
- name: MEMOS_BACKEND
  value: {{ .svc.backend | quote }}
- name: MEMOS_MODEL_PATH
  value: {{ ternary (printf "%s/%s" ($m.mountPath | trimSuffix "/") ($m.path | trimPrefix "/")) $m.path (not (empty $m.volume)) | quote }}
- name: MEMOS_DEVICE
  value: {{ ternary "cuda" "cpu" (gt (int .svc.gpu) 0) | quote }}
- name: MEMOS_DTYPE
  value: {{ .svc.dtype | quote }}
- name: MEMOS_MAX_CACHE_BYTES
  value: {{ .svc.maxCacheBytes | int64 | quote }}
- name: MEMOS_MAX_KV_BYTES_PER_CUBE
  value: {{ .svc.maxKvBytesPerCube | int64 | quote }}
- name: MEMOS_MAX_KV_BYTES_PER_USER
  value: {{ .svc.maxKvBytesPerUser | int64 | quote }}
{{- if .svc.vllm.enabled }}
- name: MEMOS_VLLM_URL
  value: {{ printf "http://127.0.0.1:%d/v1" (int .svc.vllm.port) | quote }}
- name: MEMOS_VLLM_MODEL
  value: {{ default .svc.vllm.model .svc.vllm.servedModelName | quote }}
{{- end }}
{{- end -}}

{{/* services/scheduler/settings.py */}}
{{- define "memos.env.scheduler" -}}
{{- $r := .root.Values.engines.redis -}}
- name: MEMOS_DATA_DIR
  value: /data
{{- /* The built-in handlers (working memory, mem_read) call textmem and ingest. */}}
{{- if .root.Values.textmem.enabled }}
- name: MEMOS_TEXTMEM_ADDR
  value: {{ include "memos.addr" (dict "root" .root "name" "textmem") | quote }}
{{- end }}
{{- if .root.Values.ingest.enabled }}
- name: MEMOS_INGEST_ADDR
  value: {{ include "memos.addr" (dict "root" .root "name" "ingest") | quote }}
{{- end }}
{{- if $r.enabled }}
{{- include "memos.secretEnv" (dict "root" .root "engine" "redis" "field" "url" "env" "MEMOS_REDIS_URL") }}
- name: MEMOS_REDIS_PREFIX
  value: {{ $r.prefix | quote }}
{{- end }}
{{- end -}}

{{/*
The container env: the chart's entries, except those the values' env map overrides, then that
map, then extraEnv. Order is kept because $(VAR) references need earlier definitions.
*/}}
{{- define "memos.containerEnv" -}}
{{- $chart := concat (include "memos.env.common" . | fromYamlArray) (include (printf "memos.env.%s" .name) . | fromYamlArray) -}}
{{- $out := list -}}
{{- range $chart -}}
{{- if not (hasKey $.svc.env .name) -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := .svc.env -}}
{{- $out = append $out (dict "name" $k "value" (toString $v)) -}}
{{- end -}}
{{- $out = concat $out (.svc.extraEnv | default list) -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Native gRPC probes (grpc.health.v1, service ""): on the service's port, or on the plaintext
health-only port when the service serves TLS, which the kubelet's gRPC probes cannot speak.
ctx: {svc, kind, port}
*/}}
{{- define "memos.grpcProbe" -}}
{{- $p := index .svc.probes .kind -}}
grpc:
  port: {{ .port }}
periodSeconds: {{ $p.periodSeconds }}
failureThreshold: {{ $p.failureThreshold }}
timeoutSeconds: {{ $p.timeoutSeconds | default 2 }}
{{- end -}}

{{/* ctx: {root, name, svc} */}}
{{- define "memos.deployment" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $stateless := include "memos.stateless" . -}}
{{- $hpa := and $stateless $svc.hpa $svc.hpa.enabled -}}
{{- $persistent := and $svc.persistence $svc.persistence.enabled -}}
{{- $tlsListener := include "memos.servesTls" . -}}
{{- $probePort := ternary $root.Values.tls.healthPort $svc.port (not (empty $tlsListener)) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "memos.componentName" . }}
  labels:
    {{- include "memos.componentLabels" . | nindent 4 }}
spec:
  {{- if not $hpa }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if $stateless }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  {{- else }}
  # State lives in this pod (or its ReadWriteOnce volume): never two pods at once.
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "memos.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "memos.selectorLabels" . | nindent 8 }}
        {{- with $svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- /* Roll the pods when engine credentials set through values change. */}}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- if and $root.Values.metrics.enabled $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $root.Values.metrics.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "memos.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ add (int $root.Values.common.drainDelaySeconds) (int $root.Values.common.gracePeriodSeconds) 15 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .name }}
          image: {{ include "memos.image" (dict "root" $root "image" $svc.image) }}
          imagePullPolicy: {{ $svc.image.pullPolicy }}
          args: ["-m", "services.{{ .name }}"]
          ports:
            - name: grpc
              containerPort: {{ $svc.port }}
              protocol: TCP
            {{- if $root.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- end }}
            {{- if $tlsListener }}
            - name: health
              containerPort: {{ $root.Values.tls.healthPort }}
              protocol: TCP
            {{- end }}
          env:
            {{- include "memos.containerEnv" . | nindent 12 }}
          startupProbe:
            {{- include "memos.grpcProbe" (dict "svc" $svc "kind" "startup" "port" $probePort) | nindent 12 }}
          livenessProbe:
            {{- include "memos.grpcProbe" (dict "svc" $svc "kind" "liveness" "port" $probePort) | nindent 12 }}
          readinessProbe:
            {{- include "memos.grpcProbe" (dict "svc" $svc "kind" "readiness" "port" $probePort) | nindent 12 }}
          resources:
            {{- $res := deepCopy ($svc.resources | default dict) }}
            {{- if gt (int ($svc.gpu | default 0)) 0 }}
            {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int $svc.gpu)) ($res.limits | default dict)) }}
            {{- end }}
            {{- toYaml $res | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if has .name (list "textmem" "actmem" "scheduler") }}
            - name: data
              mountPath: /data
            {{- end }}
            {{- if and (eq .name "actmem") (not (empty $svc.model.volume)) }}
            - name: models
              mountPath: {{ $svc.model.mountPath }}
              readOnly: true
            {{- end }}
            {{- if and (eq .name "gateway") $svc.apiKeysSecret }}
            - name: api-keys
              mountPath: /etc/memos/api-keys
              readOnly: true
            {{- end }}
            {{- if and (eq .name "gateway") $svc.jwt.jwksConfigMap }}
            - name: jwks
              mountPath: /etc/memos/jwks
              readOnly: true
            {{- end }}
            {{- if $root.Values.tls.enabled }}
            - name: tls
              mountPath: {{ $root.Values.tls.mountPath }}
              readOnly: true
            {{- end }}
            {{- with $svc.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        {{- if and (eq .name "actmem") $svc.vllm.enabled }}
        {{- include "memos.vllmContainer" . | nindent 8 }}
        {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if has .name (list "textmem" "actmem" "scheduler") }}
        - name: data
          {{- if $persistent }}
          persistentVolumeClaim:
            claimName: {{ $svc.persistence.existingClaim | default (include "memos.componentName" .) }}
          {{- else if eq .name "actmem" }}
          emptyDir:
            sizeLimit: {{ $svc.dataVolume.sizeLimit }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        {{- end }}
        {{- if eq .name "actmem" }}
        {{- with $svc.model.volume }}
        - name: models
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- if $svc.vllm.enabled }}
        - name: vllm-cache
          emptyDir: {}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $svc.vllm.shmSizeLimit }}
        {{- end }}
        {{- end }}
        {{- if and (eq .name "gateway") $svc.apiKeysSecret }}
        # No subPath: a mounted Secret's updates reach the file only without one.
        - name: api-keys
          secret:
            secretName: {{ $svc.apiKeysSecret }}
            defaultMode: 0440
        {{- end }}
        {{- if and (eq .name "gateway") $svc.jwt.jwksConfigMap }}
        # No subPath: the provider's rotated keys must reach the file the gateway re-reads.
        - name: jwks
          configMap:
            name: {{ $svc.jwt.jwksConfigMap }}
        {{- end }}
        {{- if $root.Values.tls.enabled }}
        # No subPath either: renewed certificates must reach the listeners, which reload them.
        - name: tls
          secret:
            secretName: {{ $root.Values.tls.secretName }}
            defaultMode: 0440
        {{- end }}
        {{- with $svc.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/*
The vLLM server beside actmem in the same pod: it listens on 127.0.0.1 only, so nothing but
actmem (MEMOS_VLLM_URL) reaches it. ctx: {root, name, svc}
*/}}
{{- define "memos.vllmContainer" -}}
{{- $v := .svc.vllm -}}
- name: vllm
  image: {{ include "memos.image" (dict "root" .root "image" $v.image) }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command: ["vllm", "serve"]
  args:
    - {{ $v.model | quote }}
    - --host
    - 127.0.0.1
    - --port
    - {{ $v.port | quote }}
    {{- with $v.servedModelName }}
    - --served-model-name
    - {{ . | quote }}
    {{- end }}
    # actmem keeps caches as warmed prefixes: prefix caching is what it relies on, and the
    # cached-token count in each answer's usage is how it checks a hit.
    - --enable-prefix-caching
    - --enable-prompt-tokens-details
    {{- range $v.args }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: vllm-http
      containerPort: {{ $v.port }}
      protocol: TCP
  env:
    - name: HOME
      value: /tmp
    - name: HF_HOME
      value: /cache/huggingface
    - name: XDG_CACHE_HOME
      value: /cache
    - name: VLLM_CACHE_ROOT
      value: /cache/vllm
    {{- range $k, $val := $v.env }}
    - name: {{ $k }}
      value: {{ $val | toString | quote }}
    {{- end }}
  # vLLM binds 127.0.0.1, which kubelet probes cannot reach: the startup and liveness checks run
  # inside the container instead.
  startupProbe:
    exec:
      command: ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{{ $v.port }}/health', timeout=2)"]
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 120
  livenessProbe:
    exec:
      command: ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{{ $v.port }}/health', timeout=2)"]
    periodSeconds: 15
    timeoutSeconds: 5
    failureThreshold: 4
  resources:
    {{- $res := deepCopy ($v.resources | default dict) }}
    {{- if gt (int $v.gpu) 0 }}
    {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int $v.gpu)) ($res.limits | default dict)) }}
    {{- end }}
    {{- toYaml $res | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: vllm-cache
      mountPath: /cache
    - name: dshm
      mountPath: /dev/shm
    {{- if not (empty .svc.model.volume) }}
    - name: models
      mountPath: {{ .svc.model.mountPath }}
      readOnly: true
    {{- end }}
{{- end -}}

{{/* ctx: {root, name, svc} */}}
{{- define "memos.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "memos.componentName" . }}
  labels:
    {{- include "memos.componentLabels" . | nindent 4 }}
  {{- with .svc.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .svc.service.type | default "ClusterIP" }}
  selector:
    {{- include "memos.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .svc.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- if .root.Values.metrics.enabled }}
    # For a Prometheus Operator ServiceMonitor (port: metrics) selecting the component labels.
    - name: metrics
      port: {{ .root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end -}}

{{/* Only for stateless services with pdb.enabled. ctx: {root, name, svc} */}}
{{- define "memos.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "memos.componentName" . }}
  labels:
    {{- include "memos.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .svc.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "memos.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* Only for stateless services with hpa.enabled. ctx: {root, name, svc} */}}
{{- define "memos.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "memos.componentName" . }}
  labels:
    {{- include "memos.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "memos.componentName" . }}
  minReplicas: {{ .svc.hpa.minReplicas }}
  maxReplicas: {{ .svc.hpa.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .svc.hpa.targetCPUUtilizationPercentage }}
{{- end -}}

{{/*
Ingress policy of one service: the gateway admits networkPolicy.gatewayFrom (everyone when
empty); every other service admits only pods of this release, plus its allowFrom peers.
ctx: {root, name, svc}
*/}}
{{- define "memos.networkPolicy" -}}
{{- $gatewayFrom := .root.Values.networkPolicy.gatewayFrom -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "memos.componentName" . }}
  labels:
    {{- include "memos.componentLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "memos.selectorLabels" . | nindent 6 }}
  policyTypes: ["Ingress"]
  ingress:
    - ports:
        - port: grpc
          protocol: TCP
      {{- if eq .name "gateway" }}
      {{- if $gatewayFrom }}
      from:
        {{- toYaml (concat $gatewayFrom (.svc.allowFrom | default list)) | nindent 8 }}
      {{- end }}
      {{- else }}
      from:
        - podSelector:
            matchLabels:
              {{- include "memos.releaseSelectorLabels" .root | nindent 14 }}
        {{- with .svc.allowFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
    {{- if and .root.Values.metrics.enabled .root.Values.metrics.from }}
    # Scrapers (metrics.from) reach /metrics and nothing else.
    - ports:
        - port: metrics
          protocol: TCP
      from:
        {{- toYaml .root.Values.metrics.from | nindent 8 }}
    {{- end }}
{{- end -}}

{{/* Refuses values that would render but not work; schema checks cannot see across blocks. */}}
{{- define "memos.validate" -}}
{{- $v := .Values -}}
{{- $e := $v.engines -}}
{{- if and $v.gateway.enabled (not $v.textmem.enabled) -}}
{{- fail "gateway.enabled needs textmem.enabled: the gateway stores and searches through textmem" -}}
{{- end -}}
{{- if and $v.ingest.enabled (not $v.textmem.enabled) -}}
{{- fail "ingest.enabled needs textmem.enabled: ingest writes its candidates to textmem" -}}
{{- end -}}
{{- if and $v.textmem.enabled (gt (int $v.textmem.replicas) 1) (not (include "memos.stateless" (dict "root" . "name" "textmem"))) -}}
{{- fail "textmem.replicas > 1 needs engines.milvus.enabled and engines.neo4j.enabled: the embedded stores are files in one pod" -}}
{{- end -}}
{{- if and $v.scheduler.enabled (gt (int $v.scheduler.replicas) 1) (not $e.redis.enabled) -}}
{{- fail "scheduler.replicas > 1 needs engines.redis.enabled: the SQLite queue is a file in one pod" -}}
{{- end -}}
{{- if and $v.memory.windowOverlap (ge (int $v.memory.windowOverlap) (int $v.memory.windowSize)) -}}
{{- fail "memory.windowOverlap must be smaller than memory.windowSize" -}}
{{- end -}}
{{- range $name, $cfg := dict "milvus" "uri" "neo4j" "uri" "redis" "url" "llm" "baseUrl" "embedding" "url" -}}
{{- $eng := index $e $name -}}
{{- if and $eng.enabled (not (index $eng $cfg)) (or (ne $name "redis") (not $eng.existingSecret)) -}}
{{- fail (printf "engines.%s.enabled needs engines.%s.%s" $name $name $cfg) -}}
{{- end -}}
{{- end -}}
{{- if and $e.llm.enabled (not $e.llm.model) -}}
{{- fail "engines.llm.enabled needs engines.llm.model (MEMOS_LLM_MODEL)" -}}
{{- end -}}
{{- if $v.metrics.enabled -}}
{{- range $name := splitList " " (include "memos.services" .) -}}
{{- if eq (int (index $v $name).port) (int $v.metrics.port) -}}
{{- fail (printf "metrics.port %d is %s.port too: the gRPC and metrics listeners need ports of their own" (int $v.metrics.port) $name) -}}
{{- end -}}
{{- end -}}
{{- if and $v.actmem.vllm.enabled (eq (int $v.actmem.vllm.port) (int $v.metrics.port)) -}}
{{- fail (printf "metrics.port %d is actmem.vllm.port too: both listen in the actmem pod" (int $v.metrics.port)) -}}
{{- end -}}
{{- end -}}
{{- with $v.gateway.jwt -}}
{{- if and $v.gateway.enabled (or .jwksUrl .jwksConfigMap) (not (and .issuer .audience)) -}}
{{- fail "gateway.jwt needs issuer and audience with jwksUrl or jwksConfigMap: tokens of other issuers or applications would pass" -}}
{{- end -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- if not $v.tls.secretName -}}
{{- fail "tls.enabled needs tls.secretName (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- $hp := int $v.tls.healthPort -}}
{{- range $name := splitList " " (include "memos.services" .) -}}
{{- if eq (int (index $v $name).port) $hp -}}
{{- fail (printf "tls.healthPort %d is %s.port too: the health-only listener needs a port of its own" $hp $name) -}}
{{- end -}}
{{- end -}}
{{- if and $v.metrics.enabled (eq (int $v.metrics.port) $hp) -}}
{{- fail (printf "tls.healthPort %d is metrics.port too" $hp) -}}
{{- end -}}
{{- if and $v.actmem.vllm.enabled (eq (int $v.actmem.vllm.port) $hp) -}}
{{- fail (printf "tls.healthPort %d is actmem.vllm.port too: both listen in the actmem pod" $hp) -}}
{{- end -}}
{{- end -}}
{{- if $v.actmem.enabled -}}
{{- if not $v.actmem.model.path -}}
{{- fail "actmem.enabled needs actmem.model.path (MEMOS_MODEL_PATH): actmem never downloads a model" -}}
{{- end -}}
{{- if and (eq $v.actmem.backend "vllm") (not $v.actmem.vllm.enabled) -}}
{{- fail "actmem.backend=vllm needs actmem.vllm.enabled (the vLLM container in the actmem pod)" -}}
{{- end -}}
{{- if and $v.actmem.vllm.enabled (not $v.actmem.vllm.model) -}}
{{- fail "actmem.vllm.enabled needs actmem.vllm.model" -}}
{{- end -}}
{{- end -}}
{{- end -}}
