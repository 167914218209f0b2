{{/* Names, labels and shared values of the pkgfleet chart. */}}

{{- define "pkgfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release alone when it already holds the chart name. */}}
{{- define "pkgfleet.fullname" -}}
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

{{/* A component's resource name: pkgfleet.component (dict "ctx" $ "component" "api"). */}}
{{- define "pkgfleet.component" -}}
{{- printf "%s-%s" (include "pkgfleet.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "pkgfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pkgfleet.labels" -}}
helm.sh/chart: {{ include "pkgfleet.chart" . }}
{{ include "pkgfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pkgfleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "pkgfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pkgfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: pkgfleet.componentLabels (dict "ctx" $ "component" "worker"). */}}
{{- define "pkgfleet.componentLabels" -}}
{{ include "pkgfleet.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pkgfleet.componentSelectorLabels" -}}
{{ include "pkgfleet.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pkgfleet.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Paths inside the API and worker containers; docker/*.Dockerfile use the same. */}}
{{- define "pkgfleet.configDir" -}}/etc/pkgfleet{{- end }}
{{- define "pkgfleet.dataDir" -}}/var/lib/pkgfleet{{- end }}
{{- define "pkgfleet.artifactDir" -}}/srv/pkgfleet/packages{{- end }}
{{- define "pkgfleet.sockDir" -}}/var/run/pkgfleet{{- end }}

{{- define "pkgfleet.redisAddress" -}}
{{- if .Values.redis.external.enabled }}
{{- .Values.redis.external.address }}
{{- else }}
{{- printf "%s:6379" (include "pkgfleet.component" (dict "ctx" . "component" "redis")) }}
{{- end }}
{{- end }}

{{/* Redis through Sentinel: the chart's (redis.mode sentinel) or an external set. */}}
{{- define "pkgfleet.redisSentinel" -}}
{{- if .Values.redis.external.enabled }}
{{- if .Values.redis.external.sentinelAddresses }}true{{ end }}
{{- else if eq .Values.redis.mode "sentinel" }}true
{{- end }}
{{- end }}

{{/* The DNS name of pod i of the chart's Redis StatefulSet, through its
headless Service: pkgfleet.redisPodHost (dict "ctx" $ "i" 0). */}}
{{- define "pkgfleet.redisPodHost" -}}
{{- $name := include "pkgfleet.component" (dict "ctx" .ctx "component" "redis") }}
{{- printf "%s-%d.%s.%s.svc" $name (int .i) $name .ctx.Release.Namespace }}
{{- end }}

{{/* Every pod's DNS name, the first pod first, space-separated. */}}
{{- define "pkgfleet.redisPeers" -}}
{{- $hosts := list }}
{{- range $i := until (int .Values.redis.sentinel.replicas) }}
{{- $hosts = append $hosts (include "pkgfleet.redisPodHost" (dict "ctx" $ "i" $i)) }}
{{- end }}
{{- join " " $hosts }}
{{- end }}

{{/* Redis.SentinelAddresses: the external set's, or each pod's sentinel. */}}
{{- define "pkgfleet.sentinelAddresses" -}}
{{- if .Values.redis.external.enabled }}
{{- join "," .Values.redis.external.sentinelAddresses }}
{{- else }}
{{- $addrs := list }}
{{- range $host := splitList " " (include "pkgfleet.redisPeers" .) }}
{{- $addrs = append $addrs (printf "%s:26379" $host) }}
{{- end }}
{{- join "," $addrs }}
{{- end }}
{{- end }}

{{- define "pkgfleet.sentinelPasswordSecret" -}}
{{- if .Values.redis.sentinel.existingSecret }}{{ .Values.redis.sentinel.existingSecret }}{{ else if .Values.redis.sentinel.password }}{{ include "pkgfleet.component" (dict "ctx" . "component" "redis-sentinel") }}{{ end }}
{{- end }}

{{- define "pkgfleet.sentinelPasswordKey" -}}
{{- if .Values.redis.sentinel.existingSecret }}{{ .Values.redis.sentinel.existingSecretKey }}{{ else }}sentinel-password{{ end }}
{{- end }}

{{- define "pkgfleet.redisPasswordSecret" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}{{ else if .Values.redis.password }}{{ include "pkgfleet.component" (dict "ctx" . "component" "redis") }}{{ end }}
{{- end }}

{{- define "pkgfleet.redisPasswordKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{- define "pkgfleet.tokensSecret" -}}
{{- default (include "pkgfleet.component" (dict "ctx" . "component" "tokens")) .Values.api.tokens.existingSecret }}
{{- end }}

{{- define "pkgfleet.tokensKey" -}}
{{- if .Values.api.tokens.existingSecret }}{{ .Values.api.tokens.existingSecretKey }}{{ else }}tokens{{ end }}
{{- end }}

{{- define "pkgfleet.credentialKeySecret" -}}
{{- if .Values.credentialKey.existingSecret }}{{ .Values.credentialKey.existingSecret }}{{ else if .Values.credentialKey.generate }}{{ include "pkgfleet.component" (dict "ctx" . "component" "credential-key") }}{{ end }}
{{- end }}

{{- define "pkgfleet.credentialKeyKey" -}}
{{- if .Values.credentialKey.existingSecret }}{{ .Values.credentialKey.existingSecretKey }}{{ else }}credential.key{{ end }}
{{- end }}

{{/* Artifacts on the shared PVC (storage.type file), not in a bucket. */}}
{{- define "pkgfleet.fileStorage" -}}
{{- if eq .Values.storage.type "file" }}true{{ end }}
{{- end }}

{{/* The ServiceAccount of the API and worker pods; "" is the namespace's default. */}}
{{- define "pkgfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pkgfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pkgfleet.artifactClaim" -}}
{{- default (include "pkgfleet.component" (dict "ctx" . "component" "artifacts")) .Values.artifacts.existingClaim }}
{{- end }}

{{/* Environment shared by API and workers: the config file, the Redis
password and, with an S3 bucket, its static credentials for the AWS
default chain (never in the ConfigMap). */}}
{{- define "pkgfleet.env" -}}
- name: PKGFLEET_CONFIG
  value: {{ include "pkgfleet.configDir" . }}/pkgfleet.gcfg
- name: HOME
  value: {{ include "pkgfleet.dataDir" . }}
{{- if include "pkgfleet.redisPasswordSecret" . }}
- name: PKGFLEET_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pkgfleet.redisPasswordSecret" . }}
      key: {{ include "pkgfleet.redisPasswordKey" . }}
{{- end }}
{{- if and (include "pkgfleet.redisSentinel" .) (include "pkgfleet.sentinelPasswordSecret" .) }}
- name: PKGFLEET_REDIS_SENTINELPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pkgfleet.sentinelPasswordSecret" . }}
      key: {{ include "pkgfleet.sentinelPasswordKey" . }}
{{- end }}
{{- with .Values.storage.s3.credentials }}
{{- if and (eq $.Values.storage.type "s3") .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The workers' package index URLs from worker.indexSecret: they may carry
credentials, which belong in a Secret, never in the ConfigMap. Only the
workers get them (their doors use them; the API does not).
*/}}
{{- define "pkgfleet.indexEnv" -}}
{{- with .Values.worker.indexSecret }}
{{- if .name }}
{{- if .pythonIndexURLKey }}
- name: PKGFLEET_GIT_PYTHONINDEXURL
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .pythonIndexURLKey }}
{{- end }}
{{- if .rRepositoryURLKey }}
- name: PKGFLEET_GIT_RREPOSITORYURL
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .rRepositoryURLKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The /etc/pkgfleet volume: the config plus, for the API, the tokens file, and
the credential key. One projected directory, so the sandbox masks all of it.
pkgfleet.configVolume (dict "ctx" $ "tokens" true)
*/}}
{{- define "pkgfleet.configVolume" -}}
- name: config
  projected:
    defaultMode: 0440
    sources:
      - configMap:
          name: {{ include "pkgfleet.fullname" .ctx }}
          items:
            - key: pkgfleet.gcfg
              path: pkgfleet.gcfg
      {{- if .tokens }}
      - secret:
          name: {{ include "pkgfleet.tokensSecret" .ctx }}
          items:
            - key: {{ include "pkgfleet.tokensKey" .ctx }}
              path: tokens
      {{- end }}
      {{- if include "pkgfleet.credentialKeySecret" .ctx }}
      - secret:
          name: {{ include "pkgfleet.credentialKeySecret" .ctx }}
          items:
            - key: {{ include "pkgfleet.credentialKeyKey" .ctx }}
              path: credential.key
      {{- end }}
{{- end }}

{{/* Container securityContext of API and workers: nothing beyond an ordinary user. */}}
{{- define "pkgfleet.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podUser.uid }}
runAsGroup: {{ .Values.podUser.gid }}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Checks of values that the schema cannot express. */}}
{{- define "pkgfleet.validate" -}}
{{- $managed := dict
  "Server" (list "DataDir" "TempDir" "SockFileDir")
  "Git" (list "CredentialKeyFile")
  "Worker" (list "Concurrency" "ShutdownGrace" "MetricsListen")
  "Redis" (list "Address" "URL" "Password" "DB" "SentinelAddresses" "SentinelMaster" "SentinelPassword")
  "HTTP" (list "Listen" "TokensFile")
  "FileStorage" (list "Location")
  "Storage" (list "Default")
  "S3Storage" (list "Bucket" "Region" "Prefix" "Endpoint" "EnablePathStyle") }}
{{- range $section, $keys := .Values.config }}
{{- range $key, $_ := $keys }}
{{- if has $key (default (list) (get $managed $section)) }}
{{- fail (printf "config.%s.%s is set by the chart; use its own value instead (see values.yaml)" $section $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* A ConfigMap is readable by anyone who may read the namespace's
config: index URLs with user:password go through worker.indexSecret.
The message never repeats the URL. */}}
{{- $ix := .Values.worker.indexSecret }}
{{- range $key, $env := dict "PythonIndexURL" "PKGFLEET_GIT_PYTHONINDEXURL" "RRepositoryURL" "PKGFLEET_GIT_RREPOSITORYURL" }}
{{- $url := dig "Git" $key "" $.Values.config }}
{{- $secretKey := get $ix (printf "%sKey" (untitle $key)) }}
{{- if and (kindIs "string" $url) (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" $url) }}
{{- fail (printf "config.Git.%s carries credentials, and values.config lands in a ConfigMap: put the URL in a Secret and set worker.indexSecret.name (its key worker.indexSecret.%sKey); the workers get it as %s" $key (untitle $key) $env) }}
{{- end }}
{{- if and $url $ix.name $secretKey }}
{{- fail (printf "config.Git.%s and worker.indexSecret (key %s) both set Git.%s; keep one" $key $secretKey $key) }}
{{- end }}
{{- end }}
{{- if and $ix.name (not (or $ix.pythonIndexURLKey $ix.rRepositoryURLKey)) }}
{{- fail "worker.indexSecret.name is set but neither worker.indexSecret.pythonIndexURLKey nor worker.indexSecret.rRepositoryURLKey" }}
{{- end }}
{{- if and .Values.redis.external.enabled (not (or .Values.redis.external.address .Values.redis.external.url .Values.redis.external.sentinelAddresses)) }}
{{- fail "redis.external.enabled needs redis.external.address, redis.external.url or redis.external.sentinelAddresses" }}
{{- end }}
{{- with .Values.redis.sentinel }}
{{- if and (eq $.Values.redis.mode "sentinel") (not $.Values.redis.external.enabled) }}
{{- if gt (int .quorum) (int .replicas) }}
{{- fail (printf "redis.sentinel.quorum %d is more than the %d sentinels (redis.sentinel.replicas): no failover could ever happen" (int .quorum) (int .replicas)) }}
{{- end }}
{{- if ge (int .minReplicasToWrite) (int .replicas) }}
{{- fail (printf "redis.sentinel.minReplicasToWrite %d needs more replicas than the %d pods leave the master (redis.sentinel.replicas - 1): it would refuse every write" (int .minReplicasToWrite) (int .replicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq .Values.storage.type "s3") (not .Values.storage.s3.bucket) }}
{{- fail "storage.type s3 needs storage.s3.bucket" }}
{{- end }}
{{- if and (not .Values.api.tokens.existingSecret) (not .Values.api.tokens.lines) (not .Values.api.tokens.generateAdminToken) }}
{{- fail "the API listens on the pod network and needs tokens: set api.tokens.existingSecret, api.tokens.lines or api.tokens.generateAdminToken" }}
{{- end }}
{{- end }}

{{/* Worker container securityContext: an ordinary user with no capabilities
and no_new_privs; user namespaces need neither privileges nor capabilities. */}}
{{- define "pkgfleet.workerContainerSecurityContext" -}}
{{ include "pkgfleet.containerSecurityContext" . }}
{{- if .Values.worker.userNamespacedPod }}
procMount: Unmasked
{{- end }}
{{- end }}

{{- define "pkgfleet.workerMounts" -}}
- name: config
  mountPath: {{ include "pkgfleet.configDir" . }}
  readOnly: true
- name: data
  mountPath: {{ include "pkgfleet.dataDir" . }}
- name: run
  mountPath: {{ include "pkgfleet.sockDir" . }}
- name: tmp
  mountPath: /tmp
{{- if include "pkgfleet.fileStorage" . }}
- name: artifacts
  mountPath: {{ include "pkgfleet.artifactDir" . }}
{{- end }}
{{- end }}

{{- define "pkgfleet.appArmorAnnotationValue" -}}
{{- if eq .Values.worker.appArmorProfile.type "Localhost" }}localhost/{{ .Values.worker.appArmorProfile.localhostProfile }}{{ else }}unconfined{{ end }}
{{- end }}

{{/*
The Pod Security level the worker pods need with these values: privileged
while seccomp or AppArmor is Unconfined; baseline with both profiles
Localhost and worker.userNamespacedPod (restricted refuses procMount:
Unmasked); restricted with both Localhost. The API and Redis pods pass
restricted. deploy/apiserver_test.go holds this to what a real
kube-apiserver admits, row by row of the chart README's table.
*/}}
{{- define "pkgfleet.workerPodSecurityLevel" -}}
{{- $w := .Values.worker }}
{{- if or (eq $w.seccompProfile.type "Unconfined") (eq $w.appArmorProfile.type "Unconfined") }}privileged
{{- else if $w.userNamespacedPod }}baseline
{{- else }}restricted
{{- end }}
{{- end }}

{{/* Why the worker pods need that level, in the words of the values. */}}
{{- define "pkgfleet.workerPodSecurityReason" -}}
{{- $w := .Values.worker }}
{{- $unconfined := list }}
{{- if eq $w.seccompProfile.type "Unconfined" }}{{ $unconfined = append $unconfined "seccomp" }}{{ end }}
{{- if eq $w.appArmorProfile.type "Unconfined" }}{{ $unconfined = append $unconfined "AppArmor" }}{{ end }}
{{- if $unconfined }}{{ join " and " $unconfined }} Unconfined
{{- else if $w.userNamespacedPod }}procMount: Unmasked of worker.userNamespacedPod
{{- else if eq $w.appArmorProfile.type "None" }}seccomp Localhost, no AppArmor
{{- else }}seccomp and AppArmor Localhost
{{- end }}
{{- end }}

{{/*
Pod Security enforces on Pods only: a Deployment whose pods the namespace
refuses installs fine, then its ReplicaSet creates no pod. So at install and
upgrade (lookup answers; under helm template it is empty and this passes),
a namespace whose enforce label is stricter than the workers need fails the
install with the way out.
*/}}
{{- define "pkgfleet.checkPodSecurity" -}}
{{- $enforce := "" }}
{{- with lookup "v1" "Namespace" "" .Release.Namespace }}
{{- $enforce = get (.metadata.labels | default dict) "pod-security.kubernetes.io/enforce" }}
{{- end }}
{{- $need := include "pkgfleet.workerPodSecurityLevel" . }}
{{- $rank := dict "privileged" 0 "baseline" 1 "restricted" 2 }}
{{- if and (hasKey $rank $enforce) (gt (get $rank $enforce) (get $rank $need)) }}
{{- $label := printf "kubectl label namespace %s pod-security.kubernetes.io/enforce=%s --overwrite" .Release.Namespace $need }}
{{- $other := "" }}
{{- if eq $need "privileged" }}
{{- $other = "use pkgfleet's seccomp and AppArmor profiles, which pass restricted: put them on the nodes (nodeProfiles.enabled=true, or by hand) and set worker.seccompProfile and worker.appArmorProfile to Localhost as in the chart's ci/restricted-values.yaml" }}
{{- else }}
{{- $other = "set worker.userNamespacedPod=false and keep the Localhost profiles (the masked-proc sandbox tier), which pass restricted" }}
{{- end }}
{{- fail (printf "namespace %s enforces Pod Security %q, but the worker pods with these values need %q (%s): Kubernetes would accept the Deployment and then refuse every worker pod. Either label the namespace (%s), or %s." .Release.Namespace $enforce $need (include "pkgfleet.workerPodSecurityReason" .) $label $other) }}
{{- end }}
{{- end }}
