{{- define "kcm.name" -}}kilo-clustermesh-operator{{- end -}}

{{- define "kcm.namespace" -}}{{ .Values.watchNamespace | default .Release.Namespace }}{{- end -}}

{{- define "kcm.labels" -}}
app.kubernetes.io/name: {{ include "kcm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "kcm.selector" -}}
app.kubernetes.io/name: {{ include "kcm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
