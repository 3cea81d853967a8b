{{/*
Names and labels.
*/}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.fullname" -}}
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

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels shared by every pod of the release. */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of one component: {root, c}. `switchboard.dev/track` is part of the selector so a
second Deployment of the same agent on another track (a canary) never overlaps the stable one.
*/}}
{{- define "switchboard.componentSelectorLabels" -}}
{{ include "switchboard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .c.kind }}
{{- if ne .c.kind "edge" }}
switchboard.dev/agent: {{ .c.name }}
{{- end }}
switchboard.dev/track: {{ .c.track }}
{{- end }}

{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" .root }}
app.kubernetes.io/component: {{ .c.kind }}
{{- if ne .c.kind "edge" }}
switchboard.dev/agent: {{ .c.name }}
{{- end }}
switchboard.dev/track: {{ .c.track }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchboard.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* {root, image: {repository, tag}} -> the image of one agent's track: its own repository/tag, else the release's. */}}
{{- define "switchboard.agentImage" -}}
{{- if or .image.repository .image.tag }}
{{- printf "%s:%s" (default .root.Values.image.repository .image.repository) (default (default .root.Chart.AppVersion .root.Values.image.tag) .image.tag) }}
{{- else }}
{{- include "switchboard.image" .root }}
{{- end }}
{{- end }}

{{- define "switchboard.edgeServiceName" -}}
{{- printf "%s-edge" (include "switchboard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "switchboard.fullname" .)) .Values.edge.apiKeys.existingSecret }}
{{- end }}

{{/* "true" when the edge gets plain API keys from a Secret (existingSecret, or the chart's generated key). */}}
{{- define "switchboard.plainApiKeys" -}}
{{- $k := .Values.edge.apiKeys }}
{{- if and (not $k.existingSecret) (not $k.generated) (not $k.fileSecret) }}
{{- fail "edge.apiKeys.generated: false, with neither fileSecret nor existingSecret: the edge would accept no key; name the Secret of your key file in fileSecret" }}
{{- end }}
{{- if or $k.existingSecret $k.generated }}true{{ end }}
{{- end }}

{{/* A component's bus identity (bus_access.identity_name): edge, agent-<name> or supervisor-<name>. */}}
{{- define "switchboard.busIdentity" -}}
{{- if eq .kind "edge" }}edge{{ else }}{{ printf "%s-%s" .kind .name }}{{ end }}
{{- end }}

{{/* {root, identity} -> the Secret holding that identity's NKey seed (key seed.nk). */}}
{{- define "switchboard.busSecretName" -}}
{{- printf "%s-bus-%s" (include "switchboard.fullname" .root) .identity | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.scenarioConfigMapName" -}}
{{- printf "%s-scenario" (include "switchboard.fullname" .) }}
{{- end }}

{{/* Where the scenario ConfigMap is mounted (SWITCHBOARD_SCENARIO). */}}
{{- define "switchboard.scenarioMountPath" -}}
/etc/switchboard/scenario
{{- end }}

{{/*
NATS: the URL every process connects to. nats.url wins; with nats.enabled the bundled chart's
Service (named like the NATS chart names it).
*/}}
{{- define "switchboard.natsUrl" -}}
{{- if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else if .Values.nats.enabled }}
{{- /* every KV bucket and stream asks for jetstreamReplicas copies: more than the bundled NATS has nodes
and JetStream refuses to create them, so no service would start */}}
{{- $cluster := dig "config" "cluster" dict .Values.nats }}
{{- $nodes := 1 }}
{{- if $cluster.enabled }}{{ $nodes = int (default 3 $cluster.replicas) }}{{ end }}
{{- if gt (int .Values.nats.jetstreamReplicas) $nodes }}
{{- fail (printf "nats.jetstreamReplicas: %d copies of every KV bucket and stream need %d JetStream nodes, but the bundled NATS runs %d (nats.config.cluster.enabled: %v, replicas: %v); set nats.config.cluster.enabled=true and nats.config.cluster.replicas to at least %d, or lower jetstreamReplicas" (int .Values.nats.jetstreamReplicas) (int .Values.nats.jetstreamReplicas) $nodes (default false $cluster.enabled) (default "-" $cluster.replicas) (int .Values.nats.jetstreamReplicas)) }}
{{- end }}
{{- $name := "nats" }}
{{- $svc := "" }}
{{- if .Values.nats.fullnameOverride }}
{{- $svc = .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name = default "nats" .Values.nats.nameOverride }}
{{- if contains $name .Release.Name }}
{{- $svc = .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $svc = printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- printf "nats://%s:4222" $svc }}
{{- else }}
{{- fail "nats.url: set the URL of an existing NATS with JetStream (nats://host:4222), or nats.enabled=true to install the bundled one" }}
{{- end }}
{{- end }}

{{/* The TCP ports of nats.url's servers, as a YAML list (default 4222). */}}
{{- define "switchboard.natsPorts" -}}
{{- $ports := list }}
{{- range $url := splitList "," (include "switchboard.natsUrl" .) }}
{{- $host := (urlParse (trim $url)).host }}
{{- $parts := splitList ":" $host }}
{{- $port := "4222" }}
{{- if gt (len $parts) 1 }}{{ $port = last $parts }}{{ end }}
{{- if not (regexMatch "^[0-9]+$" $port) }}
{{- fail (printf "nats.url: cannot read a port from %q" $url) }}
{{- end }}
{{- $ports = append $ports (atoi $port) }}
{{- end }}
{{- toYaml (uniq $ports) }}
{{- end }}

{{/*
The scenario as a map: scenario.config, or the chart's copy of scenario.name. Its tools_module is
rewritten to the image's copy (/app/scenarios/<name>/tools.py), since only the YAML is mounted.
*/}}
{{- define "switchboard.scenario" -}}
{{- $cfg := dict }}
{{- if .Values.scenario.config }}
{{- $cfg = deepCopy .Values.scenario.config }}
{{- else }}
{{- $raw := .Files.Get (printf "files/scenarios/%s/scenario.yaml" .Values.scenario.name) }}
{{- if not $raw }}
{{- $shipped := list }}
{{- range $path, $_ := .Files.Glob "files/scenarios/*/scenario.yaml" }}
{{- $shipped = append $shipped (base (dir $path)) }}
{{- end }}
{{- fail (printf "scenario.name: the chart has no copy of scenario %q (it ships: %s); set scenario.config to its YAML" .Values.scenario.name (join ", " $shipped)) }}
{{- end }}
{{- $cfg = fromYaml $raw }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "scenario.name: the chart's copy of scenario %q is not valid YAML: %s" .Values.scenario.name $cfg.Error) }}
{{- end }}
{{- end }}
{{- include "switchboard.withTools" (dict "root" . "config" $cfg) }}
{{- end }}

{{/*
{root, config} -> the scenario map as YAML, its relative tools_module rewritten to the image's copy.
*/}}
{{- define "switchboard.withTools" -}}
{{- $cfg := deepCopy .config }}
{{- $tools := "tools.py" }}
{{- if hasKey $cfg "tools_module" }}{{ $tools = $cfg.tools_module }}{{ end }}
{{- if and $tools (not (isAbs $tools)) }}
{{- $_ := set $cfg "tools_module" (printf "%s/%s/%s" (trimSuffix "/" .root.Values.image.scenariosDir) .root.Values.scenario.name $tools) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Every workload of the release, checked: {components: [{name, kind, track, fullname, args, values,
image, [weight, scenario, scenarioConfigMap]}]}. kind is edge, agent or supervisor (an agent whose
scenario role is supervisor); an agent with canary.enabled adds a second component on track canary
(its own image, replicas, no autoscaler, optionally its own scenario). Fails, naming the
field, on what the schema cannot express: an agent listed twice, an agent the scenario does not
define, a scenario agent with no entry (but one on openai-realtime, which runs in the edge), a name taken
twice, HPA and KEDA both on, a Deployment for an openai-realtime agent, a canary of a supervisor.
*/}}
{{- define "switchboard.components" -}}
{{- $root := . }}
{{- $fullname := include "switchboard.fullname" . }}
{{- $scenario := include "switchboard.scenario" . | fromYaml }}
{{- $roles := dict }}
{{- $inEdge := dict }}
{{- range $i, $a := ($scenario.agents | default list) }}
{{- $_ := set $roles (toString $a.name) (default "agent" $a.role) }}
{{- if eq (dig "model" "provider" "" $a) "openai-realtime" }}{{ $_ := set $inEdge (toString $a.name) true }}{{ end }}
{{- end }}
{{- $scenarioName := default .Values.scenario.name $scenario.name }}
{{- $known := keys $roles | sortAlpha | join ", " }}
{{- $components := list }}
{{- $edge := deepCopy .Values.edge }}
{{- $components = append $components (dict "name" "edge" "kind" "edge" "track" "stable" "fullname" (include "switchboard.edgeServiceName" .) "args" (list "edge") "field" "edge" "values" $edge) }}
{{- $seen := dict }}
{{- range $i, $entry := .Values.agents }}
{{- $field := printf "agents[%d]" $i }}
{{- $name := toString $entry.name }}
{{- if hasKey $seen $name }}
{{- fail (printf "%s.name: agent %q is listed twice (also %s); list each agent once" $field $name (get $seen $name)) }}
{{- end }}
{{- $_ := set $seen $name $field }}
{{- if not (hasKey $roles $name) }}
{{- fail (printf "%s.name: %q has no configuration: scenario %q has no agent of that name (its agents: %s)" $field $name $scenarioName $known) }}
{{- end }}
{{- if eq $name "edge" }}
{{- fail (printf "%s.name: the name \"edge\" is taken by the realtime edge; rename the agent in the scenario" $field) }}
{{- end }}
{{- $values := include "switchboard.deepMerge" (dict "base" $root.Values.agentDefaults "over" $entry) | fromYaml }}
{{- $_ := unset $values "name" }}
{{- $kind := get $roles $name }}
{{- $deployment := printf "%s-%s" $fullname $name }}
{{- if gt (len $deployment) 63 }}
{{- fail (printf "%s.name: Deployment name %q is longer than 63 characters; shorten the release name or set fullnameOverride" $field $deployment) }}
{{- end }}
{{- $canary := $values.canary | default dict }}
{{- $_ := unset $values "canary" }}
{{- $image := include "switchboard.agentImage" (dict "root" $root "image" ($values.image | default dict)) }}
{{- if and $values.enabled (hasKey $inEdge $name) }}
{{- fail (printf "%s: agent %q runs on the OpenAI Realtime API inside the edge (model.provider openai-realtime), not in a Deployment of its own; set enabled: false or leave it out of agents" $field $name) }}
{{- end }}
{{- if and $values.enabled $canary.enabled (eq $kind "supervisor") }}
{{- fail (printf "%s.canary: %q is a supervisor: consults are not routed by track (every replica shares one queue group), so a canary would take an unweighted share of them; roll a supervisor out with a new release" $field $name) }}
{{- end }}
{{- if $values.enabled }}
{{- $components = append $components (dict "name" $name "kind" $kind "track" "stable" "fullname" $deployment "args" (list $kind "--name" $name) "field" $field "values" $values "image" $image) }}
{{- end }}
{{- if and $values.enabled $canary.enabled }}
{{- $cfield := printf "%s.canary" $field }}
{{- $cname := printf "%s-canary" $deployment }}
{{- if gt (len $cname) 63 }}
{{- fail (printf "%s: canary Deployment name %q is longer than 63 characters; shorten the release name or set fullnameOverride" $cfield $cname) }}
{{- end }}
{{- $cvalues := deepCopy $values }}
{{- $_ := set $cvalues "replicas" 1 }}
{{- if hasKey $canary "replicas" }}{{ $_ := set $cvalues "replicas" $canary.replicas }}{{ end }}
{{- if and (gt (int ($canary.weight | default 0)) 0) (eq (int $cvalues.replicas) 0) }}
{{- fail (printf "%s: weight %d with replicas 0 would pin %d%% of new sessions to a canary no replica serves (every turn of theirs would go to the fallback agent); give it replicas, or set weight 0 (the weight only seeds a new rollout)" $cfield (int $canary.weight) (int $canary.weight)) }}
{{- end }}
{{- $_ := set $cvalues "autoscaling" (dict "hpa" (dict "enabled" false) "keda" (dict "enabled" false)) }}
{{- $cimage := include "switchboard.agentImage" (dict "root" $root "image" (include "switchboard.deepMerge" (dict "base" ($values.image | default dict) "over" ($canary.image | default dict)) | fromYaml)) }}
{{- $c := dict "name" $name "kind" $kind "track" "canary" "fullname" $cname "args" (list $kind "--name" $name) "field" $cfield "values" $cvalues "image" $cimage "weight" (int ($canary.weight | default 0)) }}
{{- with $canary.scenario }}
{{- $agentsOf := list }}
{{- range $a := (.agents | default list) }}{{ $agentsOf = append $agentsOf (toString $a.name) }}{{ end }}
{{- if not (has $name $agentsOf) }}
{{- fail (printf "%s.scenario: has no agent %q (its agents: %s): the canary's configuration would not load" $cfield $name (join ", " $agentsOf)) }}
{{- end }}
{{- $_ := set $c "scenario" (include "switchboard.withTools" (dict "root" $root "config" .)) }}
{{- $_ := set $c "scenarioConfigMap" (printf "%s-scenario" $cname) }}
{{- end }}
{{- $components = append $components $c }}
{{- end }}
{{- end }}
{{- $taken := dict }}
{{- range $c := $components }}
{{- /* agent "x-canary" and the canary of agent "x" are both Deployment <fullname>-x-canary: one would replace the other */}}
{{- if hasKey $taken $c.fullname }}
{{- fail (printf "%s: its Deployment name %q is also the one of %s; rename the agent in the scenario" $c.field $c.fullname (get $taken $c.fullname)) }}
{{- end }}
{{- $_ := set $taken $c.fullname $c.field }}
{{- end }}
{{- range $name := keys $roles | sortAlpha }}
{{- if not (or (hasKey $seen $name) (hasKey $inEdge $name)) }}
{{- fail (printf "agents: scenario %q defines agent %q but agents has no entry for it; add {name: %s} (enabled: false to leave it out)" $scenarioName $name $name) }}
{{- end }}
{{- end }}
{{- /* settings the chart derives from values and wires ports, probes, policies or the drain budget to */}}
{{- $wired := dict
  "SWITCHBOARD_NATS_URL" "nats.url" "SWITCHBOARD_JS_REPLICAS" "nats.jetstreamReplicas"
  "SWITCHBOARD_NATS_SEED_FILE" "busAuth" "SWITCHBOARD_NATS_INBOX_PREFIX" "busAuth"
  "SWITCHBOARD_SCENARIO" "scenario" "SWITCHBOARD_TRACK" "canary" "SWITCHBOARD_CANARY_WEIGHTS" "canary.weight"
  "SWITCHBOARD_EDGE_PORT" "edge.port" "SWITCHBOARD_DRAIN_GRACE_S" "edge.drainGraceSeconds"
  "SWITCHBOARD_METRICS_PORT" "metricsPort"
}}
{{- range $c := $components }}
{{- range $k := keys ($c.values.env | default dict) | sortAlpha }}
{{- if hasKey $wired $k }}
{{- fail (printf "%s.env.%s: the chart sets it from %s, and ports, probes, network policies and the shutdown budget follow that value; set %s instead" $c.field $k (get $wired $k) (get $wired $k)) }}
{{- end }}
{{- end }}
{{- $as := $c.values.autoscaling }}
{{- if and $as.hpa.enabled $as.keda.enabled }}
{{- fail (printf "%s.autoscaling: hpa and keda are both enabled; KEDA makes its own HPA, enable one of them" $c.field) }}
{{- end }}
{{- if and $as.hpa.enabled (gt (int $as.hpa.minReplicas) (int $as.hpa.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.hpa: minReplicas (%v) is above maxReplicas (%v)" $c.field $as.hpa.minReplicas $as.hpa.maxReplicas) }}
{{- end }}
{{- if and $as.keda.enabled (gt (int $as.keda.minReplicas) (int $as.keda.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.keda: minReplicas (%v) is above maxReplicas (%v)" $c.field $as.keda.minReplicas $as.keda.maxReplicas) }}
{{- end }}
{{- if and $c.values.pdb.enabled (regexMatch "^0+%?$" (toString $c.values.pdb.maxUnavailable)) }}
{{- fail (printf "%s.pdb.maxUnavailable: %v lets no pod of %s be evicted, so every node drain waits on it forever; set 1 (or a percentage above 0), or pdb.enabled: false for no budget" $c.field $c.values.pdb.maxUnavailable $c.fullname) }}
{{- end }}
{{- if and $as.hpa.enabled (not (dig "requests" "cpu" "" $c.values.resources)) }}
{{- fail (printf "%s.resources.requests.cpu: the CPU HPA needs a CPU request to compute utilization" $c.field) }}
{{- end }}
{{- end }}
{{- toYaml (dict "components" $components) }}
{{- end }}

{{/*
{base, over} -> YAML of base with over merged in, maps recursively, every value of over winning
(`enabled: false`, `replicas: 0` too), whichever sprig the Helm client carries: mergeOverwrite has
skipped empty values in some versions.
*/}}
{{- define "switchboard.deepMerge" -}}
{{- $out := deepCopy .base }}
{{- range $k, $v := .over }}
{{- if and (kindIs "map" $v) (kindIs "map" (get $out $k)) }}
{{- $_ := set $out $k (include "switchboard.deepMerge" (dict "base" (get $out $k) "over" $v) | fromYaml) }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Whether a component's replica count is owned by an autoscaler (HPA or KEDA). */}}
{{- define "switchboard.autoscaled" -}}
{{- if or .values.autoscaling.hpa.enabled .values.autoscaling.keda.enabled }}true{{ end }}
{{- end }}

{{/*
Seconds the pod gets after SIGTERM: preStop sleep + the process's drain + what may follow it at worst.
The edge drains for drainGraceSeconds (rounded up) + 1 s (EdgeDeps.drain), then closes (uvicorn's
graceful shutdown: 5 s), writes its queued turn records (5 s), audit appends (10 s) and agent
configuration records (5 s), drains NATS (5 s) and exports its last spans (5 s): 36 s, 40 with slack.
An agent finishes its turns in flight within 10 s (QueueService.stop), then NATS (5 s), its health
server (1 s) and spans (5 s): 21 s, 25 with slack.
*/}}
{{- define "switchboard.terminationGrace" -}}
{{- if eq .kind "edge" }}
{{- add .values.preStopSleepSeconds (ceil .values.drainGraceSeconds) 40 }}
{{- else }}
{{- add .values.preStopSleepSeconds 25 }}
{{- end }}
{{- end }}

{{/* Egress every Switchboard pod needs: DNS, NATS, and networkPolicy.extraEgress. */}}
{{- define "switchboard.egressRules" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
- ports:
    {{- range $port := include "switchboard.natsPorts" . | fromYamlArray }}
    - port: {{ $port }}
      protocol: TCP
    {{- end }}
  {{- if and .Values.nats.enabled (not .Values.nats.url) }}
  to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/name: {{ default "nats" .Values.nats.nameOverride }}
          app.kubernetes.io/instance: {{ .Release.Name }}
          app.kubernetes.io/component: nats
  {{- else if .Values.networkPolicy.natsTo }}
  to:
    {{- toYaml .Values.networkPolicy.natsTo | nindent 4 }}
  {{- end }}
{{- with .Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- /* Egress to model APIs over HTTPS (networkPolicy.modelApiEgress): empty when it is off. */ -}}
{{- define "switchboard.modelApiEgress" -}}
{{- if .Values.networkPolicy.modelApiEgress }}
- ports:
    - port: 443
      protocol: TCP
{{- end }}
{{- end }}
