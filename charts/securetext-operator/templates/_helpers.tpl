{{- define "securetext.name" -}}securetext-operator{{- end -}}
{{- define "securetext.labels" -}}
app.kubernetes.io/name: {{ include "securetext.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "securetext.selector" -}}
app.kubernetes.io/name: {{ include "securetext.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

