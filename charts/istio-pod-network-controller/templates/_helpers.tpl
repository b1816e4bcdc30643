{{/* The chart name, overridable. */}}
{{- define "ipnc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object name. */}}
{{- define "ipnc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "ipnc.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "ipnc.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ipnc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ipnc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ipnc.labels" -}}
{{ include "ipnc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "ipnc.serviceAccountName" -}}
{{- default (include "ipnc.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The user name the API server gives the controller's ServiceAccount. */}}
{{- define "ipnc.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "ipnc.serviceAccountName" .) }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to the appVersion. */}}
{{- define "ipnc.image" -}}
{{- $img := index . 0 }}{{- $chart := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The discovery strategies, validated, as the --discovery flag value (the controller's names, see
     docs/design.md "Threat model and discovery"). At least one of them must prove whose a namespace
     is (cni-cache or proc-uid): the controller refuses a list without evidence. */}}
{{- define "ipnc.discovery" -}}
{{- $known := list "named" "cni-cache" "proc-uid" "proc-ip" }}
{{- if not .Values.controller.discovery }}
{{- fail "controller.discovery is empty: list at least one of named, cni-cache, proc-uid, proc-ip" }}
{{- end }}
{{- range .Values.controller.discovery }}
{{- if not (has . $known) }}
{{- fail (printf "controller.discovery: unknown strategy %q (want named, cni-cache, proc-uid or proc-ip)" (toString .)) }}
{{- end }}
{{- end }}
{{- if not (or (has "cni-cache" .Values.controller.discovery) (has "proc-uid" .Values.controller.discovery)) }}
{{- fail (printf "controller.discovery %v: none proves whose a namespace is (an IP is only a hint): add cni-cache or proc-uid" .Values.controller.discovery) }}
{{- end }}
{{- join "," .Values.controller.discovery }}
{{- end }}

{{/* "true" when a /proc discovery strategy (proc-uid, proc-ip) is on: the controller then needs
     CAP_SYS_PTRACE to open other users' /proc/<pid>/ns/net and read their cgroups. */}}
{{- define "ipnc.needsPtrace" -}}
{{- if or (has "proc-uid" .Values.controller.discovery) (has "proc-ip" .Values.controller.discovery) }}true{{ end }}
{{- end }}

{{/* "true" when the cni-cache strategy is on: the CNI result records are mounted. */}}
{{- define "ipnc.needsCNIResults" -}}
{{- if has "cni-cache" .Values.controller.discovery }}true{{ end }}
{{- end }}

{{/* Refusals of configurations that would weaken the node's isolation; each names the value. */}}
{{- define "ipnc.checkSafety" -}}
{{- if and (not .Values.admissionPolicy.enabled) (not .Values.admissionPolicy.acknowledgeUnconfined) }}
{{- fail "admissionPolicy.enabled=false: the ClusterRole grants pods/status patch cluster-wide and the admission policy is what confines each controller to its own node's pods and to the annotations; to install without it anyway (e.g. an equivalent policy of your own), also set admissionPolicy.acknowledgeUnconfined=true (docs/install.md)" }}
{{- end }}
{{- with .Values.updateStrategy }}{{ with .rollingUpdate }}
{{- if and (hasKey . "maxSurge") (not (has (toString .maxSurge) (list "0" "0%" ""))) }}
{{- fail (printf "updateStrategy.rollingUpdate.maxSurge=%v: a surge would run two controllers on one node (host ports, per-pod locks in each pod's own emptyDir); leave it unset, use maxUnavailable" .maxSurge) }}
{{- end }}
{{- end }}{{ end }}
{{- end }}

{{/* The name of the wait init container: the injection template's, and the controller's
     --wait-container-name default. */}}
{{- define "ipnc.waitContainerName" -}}istio-pod-network-wait{{- end }}

{{/* The istiod chart values that enable the injection template, with the wait image filled in. */}}
{{- define "ipnc.istiodValues" -}}
{{- $image := include "ipnc.image" (list .Values.waitImage .Chart) }}
{{- $tpl := regexReplaceAllLiteral `\$waitImage := "[^"]*"` (.Files.Get "files/injection-template.yaml") (printf "$waitImage := %q" $image) }}
{{- $tpl = regexReplaceAllLiteral `\$releaseRecord := true` $tpl (printf "$releaseRecord := %t" .Values.releaseRecord) }}
# Values for Istio's istiod chart that enable the istio-pod-network-controller injection template
# (chart {{ .Chart.Name }} {{ .Chart.Version }}, wait image {{ $image }}). Apply them with
#   helm upgrade istiod istio/istiod -n istio-system --reuse-values -f istiod-values.yaml
# then restart the mesh workloads so they are injected again. If you already list other default
# templates, keep them: "sidecar" first, then {{ .Values.injection.templateName }}.
global:
  # The same rules backend as the controller's (chart value nativeNftables): the parts of Istio that read it
  # (the sidecar template's istio-init, istio-cni) then expect the rules the controller installs.
  nativeNftables: {{ .Values.nativeNftables }}
  proxy:
    # istio-proxy must satisfy Pod Security "restricted" too, also in pods that set no seccomp profile.
    seccompProfile:
      type: RuntimeDefault
pilot:
  cni:
    # The controller replaces istio-cni for sidecars. Istio's OpenShift profile turns this on, which
    # would make Multus attach an istio-cni network that no longer exists.
    enabled: false
sidecarInjectorWebhook:
  defaultTemplates:
    - sidecar
    - {{ .Values.injection.templateName }}
  templates:
    {{ .Values.injection.templateName }}: |
      {{- $tpl | trim | nindent 6 }}
{{- end }}
