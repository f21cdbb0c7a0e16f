{{- /*
Helpers of the darwin-cri chart.

The templates use only these template functions: and, or, not, len, print, printf, eq, ne, lt,
le, include, toYaml, nindent, indent, quote, default, fail, trunc, trimSuffix, lower, replace,
hasKey, and `.Files.Get`. No other Sprig function (no dict, list, regexMatch, kindIs,
tpl, upper), so the chart also renders with minimal Go-template engines. They never rely on
`and`/`or` short-circuiting, never reassign a variable, never range over a value that may be
null, and compare only strings with strings (or lengths with numbers): see the numbers below.
*/ -}}

{{- /* Chart name, or nameOverride. */ -}}
{{- define "darwin-cri.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* Full name of the objects: fullnameOverride, else "<release>-<name>" (or just the release
name when it already is the chart name). */ -}}
{{- define "darwin-cri.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "darwin-cri.name" . -}}
{{- if eq .Release.Name $name -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* "<chart>-<version>" for the helm.sh/chart label. */ -}}
{{- define "darwin-cri.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* Selector labels. */ -}}
{{- define "darwin-cri.selectorLabels" -}}
app.kubernetes.io/name: {{ include "darwin-cri.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{- /* Labels of every object. */ -}}
{{- define "darwin-cri.labels" -}}
helm.sh/chart: {{ include "darwin-cri.chart" . | quote }}
{{ include "darwin-cri.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | print | quote }}
app.kubernetes.io/managed-by: Helm
app.kubernetes.io/part-of: darwin-cri
{{- with .Values.commonLabels }}
{{ include "darwin-cri.stringMap" . | trimSuffix "\n" }}
{{- end }}
{{- end -}}

{{- /* A map rendered as YAML lines, each ending in a newline, with every key and value a quoted
string (label values such as "1" or "true" stay strings). The context is the map; call it only
on a non-empty map. */ -}}
{{- define "darwin-cri.stringMap" -}}
{{- range $k, $v := . -}}
{{ $k | print | quote }}: {{ $v | print | quote }}
{{ end -}}
{{- end -}}

{{- /* Scheme for the ScrapeConfig: HTTP or HTTPS (the operator's enum). */ -}}
{{- define "darwin-cri.scrapeScheme" -}}
{{- if eq (lower (print .Values.metrics.scheme)) "https" -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{- /* A Kubernetes label name as Prometheus' kubernetes_sd exposes it (every character that is
not a letter, digit or underscore becomes an underscore). The context is the label name. */ -}}
{{- define "darwin-cri.promLabelName" -}}
{{- print . | replace "." "_" | replace "/" "_" | replace "-" "_" -}}
{{- end -}}

{{- /* The node label that marks the Macs with the example pod's Xcode
("darwin-cri.io/xcode-16.1"), or "" when no version is asked for. The context is examplePod. */ -}}
{{- define "darwin-cri.xcodeLabel" -}}
{{- if .xcodeVersion -}}
{{- printf "darwin-cri.io/xcode-%s" (print .xcodeVersion) -}}
{{- end -}}
{{- end -}}

{{- /* Names of the alerts switched off in prometheusRule.disabled, as ",A,B,". */ -}}
{{- define "darwin-cri.disabledAlerts" -}}
,
{{- with .Values.prometheusRule.disabled -}}
{{- range $name, $off := . -}}
{{- if $off -}}{{ $name }},{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* Labels added to every alert (prometheusRule.additionalAlertLabels), one per line. */ -}}
{{- define "darwin-cri.alertLabels" -}}
{{- with .Values.prometheusRule.additionalAlertLabels -}}
{{ include "darwin-cri.stringMap" . }}
{{- end -}}
{{- end -}}

{{- /* The string with every lower-case letter and digit removed. */ -}}
{{- define "darwin-cri.stripLowerAlnum" -}}
{{- print . | replace "a" "" | replace "b" "" | replace "c" "" | replace "d" "" | replace "e" "" | replace "f" "" | replace "g" "" | replace "h" "" | replace "i" "" | replace "j" "" | replace "k" "" | replace "l" "" | replace "m" "" | replace "n" "" | replace "o" "" | replace "p" "" | replace "q" "" | replace "r" "" | replace "s" "" | replace "t" "" | replace "u" "" | replace "v" "" | replace "w" "" | replace "x" "" | replace "y" "" | replace "z" "" | replace "0" "" | replace "1" "" | replace "2" "" | replace "3" "" | replace "4" "" | replace "5" "" | replace "6" "" | replace "7" "" | replace "8" "" | replace "9" "" -}}
{{- end -}}

{{- /* The string with every digit removed. */ -}}
{{- define "darwin-cri.stripDigits" -}}
{{- print . | replace "0" "" | replace "1" "" | replace "2" "" | replace "3" "" | replace "4" "" | replace "5" "" | replace "6" "" | replace "7" "" | replace "8" "" | replace "9" "" -}}
{{- end -}}

{{- /*
Numbers are checked on their printed form, never with lt/gt/eq against a number: Helm reads the
numbers of values files as float64 and `--set` ones as int64 (and `--set x=0.05` as a string),
and Go's comparison functions refuse to compare different kinds. So a threshold may be given as
a number or as a string holding one.
*/ -}}

{{- /* "true" when the value, printed, is a decimal number (1, 0.05, 1e-05, -3), else "". */ -}}
{{- define "darwin-cri.isNumber" -}}
{{- $s := print . -}}
{{- $rest := include "darwin-cri.stripDigits" $s | replace "." "" | replace "-" "" | replace "+" "" | replace "e" "" -}}
{{- if and (ne $s "") (eq $rest "") (ne (include "darwin-cri.stripDigits" $s) $s) -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a number 0 or more, else "". */ -}}
{{- define "darwin-cri.isNonNegative" -}}
{{- if and (include "darwin-cri.isNumber" .) (ne (trunc 1 (print .)) "-") -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a number more than 0, else "". */ -}}
{{- define "darwin-cri.isPositive" -}}
{{- $s := print . -}}
{{- $significant := $s | replace "0" "" | replace "." "" | replace "-" "" | replace "+" "" -}}
{{- if and (include "darwin-cri.isNonNegative" .) (ne $significant "") -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a whole number 0 or more (no fraction, no exponent), else "". */ -}}
{{- define "darwin-cri.isCount" -}}
{{- $s := print . -}}
{{- if and (include "darwin-cri.isNonNegative" .) (eq (replace "." "" $s) $s) (eq (replace "e" "" $s) $s) (eq (replace "+" "" $s) $s) -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a TCP port: a whole number from 1 to 65535, else "". */ -}}
{{- define "darwin-cri.isPort" -}}
{{- $s := print . -}}
{{- if and (include "darwin-cri.isCount" .) (ne (trunc 1 $s) "0") (le (len $s) 5) (or (lt (len $s) 5) (le $s "65535")) -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a ratio more than 0 and at most 1 (0.05, 1, 1e-05), else "". */ -}}
{{- define "darwin-cri.isRatio" -}}
{{- $s := print . -}}
{{- $two := trunc 2 $s -}}
{{- $one := or (eq $s "1") (and (eq $two "1.") (eq (replace "0" "" $s) "1.")) -}}
{{- $fraction := and (eq $two "0.") (eq (replace "e" "" $s) $s) -}}
{{- $tiny := ne (replace "e-" "" $s) $s -}}
{{- if and (include "darwin-cri.isPositive" .) (or $one $fraction $tiny) -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a percentage more than 0 and less than 100, else "". */ -}}
{{- define "darwin-cri.isPercent" -}}
{{- $s := print . -}}
{{- $three := trunc 3 $s -}}
{{- $plain := eq (replace "e" "" $s) $s -}}
{{- $belowHundred := or (and (eq (replace "." "" $s) $s) (le (len $s) 2)) (ne (replace "." "" $three) $three) -}}
{{- $tiny := ne (replace "e-" "" $s) $s -}}
{{- if and (include "darwin-cri.isPositive" .) (or (and $plain $belowHundred) $tiny) -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a DNS-1123 label (lower-case letters, digits and "-", starting
and ending with a letter or digit, at most 63 characters), else "". */ -}}
{{- define "darwin-cri.isDNSLabel" -}}
{{- $s := print . -}}
{{- $rest := include "darwin-cri.stripLowerAlnum" $s | replace "-" "" -}}
{{- if and (ne $s "") (le (len $s) 63) (eq $rest "") (ne (trunc 1 $s) "-") (eq (trimSuffix "-" $s) $s) -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a DNS-1123 subdomain (lower-case letters, digits, "-" and ".",
starting and ending with a letter or digit, at most 253 characters), else "". */ -}}
{{- define "darwin-cri.isDNSSubdomain" -}}
{{- $s := print . -}}
{{- $rest := include "darwin-cri.stripLowerAlnum" $s | replace "-" "" | replace "." "" -}}
{{- $first := trunc 1 $s -}}
{{- if and (ne $s "") (le (len $s) 253) (eq $rest "") (ne $first "-") (ne $first ".") (eq (trimSuffix "-" $s) $s) (eq (trimSuffix "." $s) $s) -}}true{{- end -}}
{{- end -}}

{{- /* "true" when the value is a Prometheus duration such as 30s, 5m, 1h30m or 0 (digits
followed by the units y, w, d, h, m, s, ms), else "". */ -}}
{{- define "darwin-cri.isDuration" -}}
{{- $s := print . -}}
{{- $units := include "darwin-cri.stripDigits" $s -}}
{{- $rest := $units | replace "ms" "" | replace "y" "" | replace "w" "" | replace "d" "" | replace "h" "" | replace "m" "" | replace "s" "" -}}
{{- $noTrailingDigit := eq $s (include "darwin-cri.stripTrailingDigit" $s) -}}
{{- $startsWithDigit := eq (include "darwin-cri.stripDigits" (trunc 1 $s)) "" -}}
{{- if eq $s "0" -}}true
{{- else if and (ne $s "") (ne $units "") (eq $rest "") $noTrailingDigit $startsWithDigit -}}true
{{- end -}}
{{- end -}}

{{- /* The string without its last character when that is a digit. */ -}}
{{- define "darwin-cri.stripTrailingDigit" -}}
{{- print . | trimSuffix "0" | trimSuffix "1" | trimSuffix "2" | trimSuffix "3" | trimSuffix "4" | trimSuffix "5" | trimSuffix "6" | trimSuffix "7" | trimSuffix "8" | trimSuffix "9" -}}
{{- end -}}

{{- /*
Checks of the values. It renders nothing when they are valid and fails the render with a
message naming the value otherwise. Every template includes it first, and validate.yaml
on its own, so a bad value stops `helm install` and `helm template` whichever objects are on.
*/ -}}
{{- define "darwin-cri.validate" -}}
{{- $v := .Values -}}

{{- /* metrics */ -}}
{{- if not (include "darwin-cri.isPort" $v.metrics.port) -}}
{{- fail (printf "metrics.port must be a whole number from 1 to 65535 (the port of darwin-cri's metrics endpoint), got %q" (print $v.metrics.port)) -}}
{{- end -}}
{{- if ne (trunc 1 (print $v.metrics.path)) "/" -}}
{{- fail (printf "metrics.path must be an HTTP path starting with /, got %q" (print $v.metrics.path)) -}}
{{- end -}}
{{- $scheme := lower (print $v.metrics.scheme) -}}
{{- if not (or (eq $scheme "http") (eq $scheme "https")) -}}
{{- fail (printf "metrics.scheme must be http or https, got %q" (print $v.metrics.scheme)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isDuration" $v.metrics.scrapeInterval) -}}
{{- fail (printf "metrics.scrapeInterval must be a Prometheus duration such as 30s or 1m, got %q" (print $v.metrics.scrapeInterval)) -}}
{{- end -}}
{{- if $v.metrics.scrapeTimeout -}}
{{- if not (include "darwin-cri.isDuration" $v.metrics.scrapeTimeout) -}}
{{- fail (printf "metrics.scrapeTimeout must be empty or a Prometheus duration such as 10s, got %q" (print $v.metrics.scrapeTimeout)) -}}
{{- end -}}
{{- end -}}
{{- if or (not $v.metrics.jobName) (ne (replace "\"" "" (print $v.metrics.jobName)) (print $v.metrics.jobName)) -}}
{{- fail "metrics.jobName must be a non-empty string without double quotes (the job label of darwin-cri's series)" -}}
{{- end -}}

{{- /* runtimeClass */ -}}
{{- if not (include "darwin-cri.isDNSSubdomain" $v.runtimeClass.name) -}}
{{- fail (printf "runtimeClass.name must be a DNS subdomain (lower-case letters, digits, - and ., at most 253 characters), got %q" (print $v.runtimeClass.name)) -}}
{{- end -}}
{{- if $v.runtimeClass.create -}}
{{- if not (include "darwin-cri.isDNSLabel" $v.runtimeClass.handler) -}}
{{- fail (printf "runtimeClass.handler must be a DNS label (lower-case letters, digits and -, starting and ending with a letter or digit, at most 63 characters) naming a handler darwin-cri serves, got %q" (print $v.runtimeClass.handler)) -}}
{{- end -}}
{{- end -}}

{{- /* scrapeConfig */ -}}
{{- if $v.scrapeConfig.create -}}
{{- if not $v.scrapeConfig.nodeSelectorLabel.name -}}
{{- fail "scrapeConfig.nodeSelectorLabel.name must name the node label that marks the Macs (kubernetes.io/os)" -}}
{{- end -}}
{{- if not $v.scrapeConfig.nodeSelectorLabel.value -}}
{{- fail "scrapeConfig.nodeSelectorLabel.value must be the value of that label on the Macs (darwin)" -}}
{{- end -}}
{{- end -}}

{{- /* prometheusRule */ -}}
{{- if $v.prometheusRule.create -}}
{{- $r := $v.prometheusRule.rules -}}
{{- if not (include "darwin-cri.isNonNegative" $r.pullFailureRatePerMinute) -}}
{{- fail (printf "prometheusRule.rules.pullFailureRatePerMinute must be a number, 0 or more (failed pulls a minute), got %q" (print $r.pullFailureRatePerMinute)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isRatio" $r.grpcErrorRatio) -}}
{{- fail (printf "prometheusRule.rules.grpcErrorRatio must be a number more than 0 and at most 1 (a ratio; 0.05: 5 in 100 CRI calls failing), got %q" (print $r.grpcErrorRatio)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isPercent" $r.imageFsAvailablePercent) -}}
{{- fail (printf "prometheusRule.rules.imageFsAvailablePercent must be a number more than 0 and less than 100 (a percentage of the filesystem), got %q" (print $r.imageFsAvailablePercent)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isDuration" $r.for.down) -}}
{{- fail (printf "prometheusRule.rules.for.down must be a Prometheus duration such as 5m or 0s, got %q" (print $r.for.down)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isDuration" $r.for.imagePullFailures) -}}
{{- fail (printf "prometheusRule.rules.for.imagePullFailures must be a Prometheus duration such as 15m or 0s, got %q" (print $r.for.imagePullFailures)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isDuration" $r.for.oomKills) -}}
{{- fail (printf "prometheusRule.rules.for.oomKills must be a Prometheus duration such as 0s or 5m, got %q" (print $r.for.oomKills)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isDuration" $r.for.grpcErrors) -}}
{{- fail (printf "prometheusRule.rules.for.grpcErrors must be a Prometheus duration such as 15m or 0s, got %q" (print $r.for.grpcErrors)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isDuration" $r.for.imageFilesystem) -}}
{{- fail (printf "prometheusRule.rules.for.imageFilesystem must be a Prometheus duration such as 15m or 0s, got %q" (print $r.for.imageFilesystem)) -}}
{{- end -}}
{{- if not (include "darwin-cri.isDuration" $r.for.monitorDeaths) -}}
{{- fail (printf "prometheusRule.rules.for.monitorDeaths must be a Prometheus duration such as 0s or 5m, got %q" (print $r.for.monitorDeaths)) -}}
{{- end -}}
{{- if not (and $r.severity.down $r.severity.imagePullFailures $r.severity.oomKills $r.severity.grpcErrors $r.severity.imageFilesystem $r.severity.monitorDeaths) -}}
{{- fail "prometheusRule.rules.severity must give a severity (critical, warning, info) for each of down, imagePullFailures, oomKills, grpcErrors, imageFilesystem and monitorDeaths" -}}
{{- end -}}
{{- end -}}

{{- /* examplePod */ -}}
{{- if $v.examplePod.create -}}
{{- $p := $v.examplePod -}}
{{- if not $p.image -}}
{{- fail "examplePod.image is required when examplePod.create is true: a darwin/arm64 image to run on the Macs (e.g. --set examplePod.image=registry.farm.local:5000/xcode-tools:16.1)" -}}
{{- end -}}
{{- if not (include "darwin-cri.isDNSSubdomain" $p.name) -}}
{{- fail (printf "examplePod.name must be a DNS subdomain (lower-case letters, digits, - and .), got %q" (print $p.name)) -}}
{{- end -}}
{{- if $p.xcodeVersion -}}
{{- $xv := print $p.xcodeVersion -}}
{{- $digitsOnly := eq (include "darwin-cri.stripDigits" $xv | replace "." "") "" -}}
{{- $startsWithDigit := eq (include "darwin-cri.stripDigits" (trunc 1 $xv)) "" -}}
{{- $endsWithDigit := ne (include "darwin-cri.stripTrailingDigit" $xv) $xv -}}
{{- if not (and $digitsOnly $startsWithDigit $endsWithDigit (le (len $xv) 57)) -}}
{{- fail (printf "examplePod.xcodeVersion must be an Xcode version such as 16.1 (digits and dots, as in the node label darwin-cri.io/xcode-16.1), got %q" $xv) -}}
{{- end -}}
{{- end -}}
{{- if not (include "darwin-cri.isCount" $p.buildSlots) -}}
{{- fail (printf "examplePod.buildSlots must be a whole number, 0 or more (darwin-cri.io/build-slots to take; 0 for none), got %q" (print $p.buildSlots)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
