{{/* Names and labels shared by the templates. */}}
{{- define "oyez.operatorName" -}}
{{- printf "%s-oyez-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oyez.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "oyez.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "oyez.selectorLabels" -}}
app.kubernetes.io/name: oyez-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "oyez.labels" -}}
{{ include "oyez.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oyez
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app: oyez-operator
{{- end -}}

{{- define "oyez.licenseSecretName" -}}
{{- if .Values.speechDeployment.license.existingSecret -}}
{{- .Values.speechDeployment.license.existingSecret -}}
{{- else -}}
{{- printf "%s-license" .Values.speechDeployment.name -}}
{{- end -}}
{{- end -}}
