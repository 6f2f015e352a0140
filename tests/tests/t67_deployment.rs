//! The deployment files against the binary they deploy: every rendered Kubernetes overlay, the
//! compose files and the Dockerfile are read, and each fact they state about shardgate is
//! checked against what the binary says of itself (`--help`) or does (a live cluster answers
//! the probe paths). Fails on: a container not locked down (uid 1000, read-only root, no
//! capabilities), gateways that roll otherwise than one surge pod at a time or run fewer than
//! three in production, an environment variable no subcommand reads, a listener's port
//! that is not the container port or Service port it should be, a probe path the admin
//! listener does not serve, a StatefulSet whose `serviceName` is not its headless Service, seeds
//! that are not the nodes' internal listeners, a drain hook with a flag `shardgate drain` does
//! not take or a grace period shorter than its wait, an autoscaler metric missing from the
//! metrics catalog, an image that does not expose or health-check what the manifests use, a
//! pipeline whose Jenkins stages and workflow jobs disagree, a key of the shipped node
//! configuration the node does not take, and an environment variable missing from
//! docs/deploy.md.

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shardgate_tests::{Cluster, peers, shardgate_bin};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Variables the binary reads besides its flags' (`[env: …]` in `--help`), each a string the
/// sources must still contain.
const READ_BESIDES_FLAGS: &[&str] = &[
    "SHARDGATE_CLUSTER_SECRET",
    "SHARDGATE_STATE_SECRET",
    "RATE_LIMIT_REQUESTS_PER_MINUTE",
    "POD_NAME",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "JAEGER_HOST",
    "JAEGER_PORT",
];
/// Variables manifests may set for their own use (`$(POD_NAMESPACE)` in other values).
const FOR_THE_MANIFESTS: &[&str] = &["POD_NAMESPACE"];
/// The subcommands deployments run.
const ROLES: &[&str] = &[
    "gateway", "node", "migrate", "drain", "health", "smoke", "up",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// What `shardgate <role> --help` says: its environment variables and its long flags.
#[derive(Default)]
struct Role {
    env: BTreeSet<String>,
    flags: BTreeSet<String>,
}

struct Binary {
    roles: BTreeMap<String, Role>,
}

impl Binary {
    fn read() -> anyhow::Result<Binary> {
        let mut roles = BTreeMap::new();
        for role in ROLES {
            let out = std::process::Command::new(shardgate_bin()?)
                .args([role, "--help"])
                .output()?;
            ensure!(out.status.success(), "shardgate {role} --help failed");
            let text = String::from_utf8(out.stdout)?;
            let mut r = Role::default();
            for (at, _) in text.match_indices("[env: ") {
                let name: String = text[at + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                r.env.insert(name);
            }
            for word in text.split_whitespace() {
                if let Some(flag) = word.strip_prefix("--") {
                    let flag: String = flag
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                        .collect();
                    r.flags.insert(format!("--{flag}"));
                }
            }
            roles.insert(role.to_string(), r);
        }
        Ok(Binary { roles })
    }

    fn role(&self, role: &str) -> anyhow::Result<&Role> {
        self.roles
            .get(role)
            .with_context(|| format!("'{role}' is not a subcommand deployments run"))
    }

    /// Fails unless `role` reads `name`.
    fn check_env(&self, role: &str, name: &str, whose: &str) -> anyhow::Result<()> {
        let known = self.role(role)?.env.contains(name)
            || READ_BESIDES_FLAGS.contains(&name)
            || FOR_THE_MANIFESTS.contains(&name);
        ensure!(
            known,
            "{whose} sets {name}, which `shardgate {role}` does not read"
        );
        Ok(())
    }
}

/// Parses every YAML document of `text` into JSON values.
fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn kustomize(dir: &str) -> anyhow::Result<Vec<Value>> {
    let kubectl = peers::dir()?.join("deploy-venv/bin/kubectl");
    ensure!(
        kubectl.exists(),
        "{} is missing: run scripts/install-test-peers",
        kubectl.display()
    );
    let out = std::process::Command::new(kubectl)
        .args(["kustomize"])
        .arg(root().join(dir))
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout)?)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The port of a listen address, `0.0.0.0:8080` → 8080; it must bind every address.
fn listen_port(value: &str, whose: &str) -> anyhow::Result<u64> {
    let (host, port) = value
        .rsplit_once(':')
        .with_context(|| format!("{whose}: '{value}' is not host:port"))?;
    ensure!(
        host == "0.0.0.0" || host == "[::]",
        "{whose}: '{value}' does not listen on every address: other pods cannot reach it"
    );
    Ok(port.parse()?)
}

/// The listeners each role must be given in a container, and the container port name each
/// one is.
fn listeners(role: &str) -> &'static [(&'static str, &'static str)] {
    match role {
        "gateway" => &[
            ("SHARDGATE_LISTEN", "http"),
            ("SHARDGATE_ADMIN_LISTEN", "admin"),
        ],
        "node" => &[
            ("SHARDGATE_NODE_LISTEN", "session"),
            ("SHARDGATE_INTERNAL_LISTEN", "internal"),
            ("SHARDGATE_ADMIN_LISTEN", "admin"),
        ],
        _ => &[],
    }
}

/// One container of a rendered workload, with its environment resolved.
struct Container {
    whose: String,
    role: String,
    env: BTreeMap<String, String>,
    /// Port name → (number, protocol).
    ports: BTreeMap<String, (u64, String)>,
    spec: Value,
}

/// The rendered objects of one overlay, and what the checks found in them.
struct Rendered {
    name: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| s(o, "kind") == kind)
    }

    fn config_value(&self, map: &str, key: &str) -> Option<String> {
        self.of_kind("ConfigMap")
            .find(|c| s(&c["metadata"], "name") == map)
            .and_then(|c| c["data"][key].as_str().map(str::to_owned))
    }

    /// Every shardgate container of the Deployments and StatefulSets, init containers too.
    fn containers(&self) -> anyhow::Result<Vec<(Container, &Value)>> {
        let mut all = Vec::new();
        for workload in self
            .objects
            .iter()
            .filter(|o| matches!(s(o, "kind"), "Deployment" | "StatefulSet"))
        {
            let pod = &workload["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for c in items(&pod[list]) {
                    let whose = format!(
                        "{}: {} {}/{}",
                        self.name,
                        s(workload, "kind"),
                        s(&workload["metadata"], "name"),
                        s(c, "name")
                    );
                    let role = items(&c["args"])
                        .first()
                        .and_then(Value::as_str)
                        .with_context(|| format!("{whose}: no subcommand in args"))?
                        .to_owned();
                    let mut env = BTreeMap::new();
                    for e in items(&c["env"]) {
                        let name = s(e, "name").to_owned();
                        let value = if let Some(v) = e["value"].as_str() {
                            v.to_owned()
                        } else if let Some(r) = e["valueFrom"].get("configMapKeyRef") {
                            match self.config_value(s(r, "name"), s(r, "key")) {
                                Some(v) => v,
                                None if r["optional"] == Value::Bool(true) => continue,
                                None => bail!("{whose}: {name} refers to a missing ConfigMap key"),
                            }
                        } else {
                            "(from elsewhere)".to_owned()
                        };
                        env.insert(name, value);
                    }
                    for from in items(&c["envFrom"]) {
                        let map = s(&from["configMapRef"], "name");
                        let data = self
                            .of_kind("ConfigMap")
                            .find(|c| s(&c["metadata"], "name") == map)
                            .with_context(|| format!("{whose}: envFrom a missing ConfigMap"))?;
                        for (k, v) in data["data"].as_object().into_iter().flatten() {
                            env.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
                        }
                    }
                    let ports = items(&c["ports"])
                        .iter()
                        .map(|p| {
                            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_owned();
                            let number = p["containerPort"].as_u64().unwrap_or_default();
                            (s(p, "name").to_owned(), (number, protocol))
                        })
                        .collect();
                    all.push((
                        Container {
                            whose,
                            role,
                            env,
                            ports,
                            spec: c.clone(),
                        },
                        workload,
                    ));
                }
            }
        }
        Ok(all)
    }
}

/// Seeds must be the nodes' internal listeners: `<statefulset>-<i>.<service>…:<internal>`.
fn check_seeds(seeds: &str, prefix: &str, internal: u64, whose: &str) -> anyhow::Result<()> {
    let seeds: Vec<&str> = seeds
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    ensure!(!seeds.is_empty(), "{whose}: no seeds");
    for (i, seed) in seeds.iter().enumerate() {
        let (host, port) = seed
            .rsplit_once(':')
            .with_context(|| format!("{whose}: seed '{seed}' has no port"))?;
        ensure!(
            host.starts_with(&format!("{prefix}{i}")),
            "{whose}: seed '{seed}' is not the node of ordinal {i} ({prefix}{i}…)"
        );
        ensure!(
            port.parse::<u64>()? == internal,
            "{whose}: seed '{seed}' is not the nodes' internal port {internal}"
        );
    }
    Ok(())
}

/// The metric names of the catalog that are gauges.
fn catalog_gauges() -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("docs/metrics.md"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            (cells.next()? == "gauge").then(|| name.to_owned())
        })
        .collect())
}

/// The probe paths the manifests use, by role, for the live check.
type Probes = BTreeSet<(String, String)>;

fn check_overlay(dir: &str, binary: &Binary, probes: &mut Probes) -> anyhow::Result<()> {
    let rendered = Rendered {
        name: dir.to_owned(),
        objects: kustomize(dir)?,
    };
    let containers = rendered.containers()?;
    let mut internal_port = None;
    for (c, _) in &containers {
        for name in c.env.keys() {
            binary.check_env(&c.role, name, &c.whose)?;
        }
        for (var, port_name) in listeners(&c.role) {
            let value = c
                .env
                .get(*var)
                .with_context(|| format!("{}: {var} is not set", c.whose))?;
            let port = listen_port(value, &format!("{}: {var}", c.whose))?;
            let declared = c.ports.get(*port_name).map(|p| p.0);
            ensure!(
                declared == Some(port),
                "{}: {var} listens on {port}, the container port '{port_name}' is {declared:?}",
                c.whose
            );
            if *var == "SHARDGATE_INTERNAL_LISTEN" {
                internal_port = Some(port);
            }
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let Some(get) = c.spec[probe].get("httpGet") else {
                continue;
            };
            let port = match &get["port"] {
                Value::String(name) => c.ports.get(name).map(|p| p.0),
                other => other.as_u64(),
            };
            ensure!(
                port == c.ports.get("admin").map(|p| p.0),
                "{}: {probe} asks port {:?}, not the admin listener",
                c.whose,
                get["port"]
            );
            probes.insert((c.role.clone(), s(get, "path").to_owned()));
        }
    }
    let internal = internal_port.context("no node container")?;

    // Every container locked down: non-root, read-only root, no capabilities, no escalation.
    for (c, workload) in &containers {
        let pod = &workload["spec"]["template"]["spec"]["securityContext"];
        let sc = &c.spec["securityContext"];
        let either = |key: &str| sc.get(key).or_else(|| pod.get(key)).cloned();
        ensure!(
            either("runAsNonRoot") == Some(Value::Bool(true))
                && either("runAsUser") == Some(Value::from(1000)),
            "{}: does not run as the non-root uid 1000",
            c.whose
        );
        ensure!(
            sc["readOnlyRootFilesystem"] == true && sc["allowPrivilegeEscalation"] == false,
            "{}: a writable root or privilege escalation",
            c.whose
        );
        ensure!(
            items(&sc["capabilities"]["drop"]).contains(&Value::from("ALL")),
            "{}: capabilities not all dropped",
            c.whose
        );
    }
    // Gateways roll one new pod at a time with none taken down first, and run at least three
    // in production (the autoscaler's minimum: a fixed `replicas` would fight it).
    for deployment in rendered.of_kind("Deployment") {
        let name = s(&deployment["metadata"], "name");
        let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
        ensure!(
            rolling["maxSurge"] == 1 && rolling["maxUnavailable"] == 0,
            "{dir}: Deployment {name} rolls with {rolling}"
        );
        if dir.ends_with("production") {
            let least = rendered
                .of_kind("HorizontalPodAutoscaler")
                .find(|h| s(&h["spec"]["scaleTargetRef"], "name") == name)
                .and_then(|h| h["spec"]["minReplicas"].as_u64())
                .or_else(|| deployment["spec"]["replicas"].as_u64())
                .unwrap_or(1);
            ensure!(least >= 3, "{dir}: Deployment {name} may run {least} pods");
        }
    }

    // Every Service reaches ports its pods have, by name or number and protocol.
    let pods: Vec<(&Value, &Container)> = containers
        .iter()
        .map(|(c, w)| (&w["spec"]["template"]["metadata"]["labels"], c))
        .collect();
    let selects = |selector: &Value, labels: &Value| {
        selector
            .as_object()
            .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    for svc in rendered.of_kind("Service") {
        let name = s(&svc["metadata"], "name");
        let backends: Vec<&Container> = pods
            .iter()
            .filter(|(labels, _)| selects(&svc["spec"]["selector"], labels))
            .map(|(_, c)| *c)
            .collect();
        ensure!(
            !backends.is_empty(),
            "{dir}: Service {name} selects no shardgate pod"
        );
        for port in items(&svc["spec"]["ports"]) {
            let protocol = port["protocol"].as_str().unwrap_or("TCP");
            let target = &port["targetPort"];
            let found = backends.iter().any(|c| {
                c.ports.iter().any(|(pname, (number, proto))| {
                    proto == protocol
                        && match target {
                            Value::String(t) => t == pname,
                            Value::Number(n) => n.as_u64() == Some(*number),
                            _ => port["port"].as_u64() == Some(*number),
                        }
                })
            });
            ensure!(
                found,
                "{dir}: Service {name} port {port} reaches no container port"
            );
        }
    }

    // The StatefulSet's headless Service, seeds, drain hook and grace period.
    for sts in rendered.of_kind("StatefulSet") {
        let name = s(&sts["metadata"], "name");
        let service = s(&sts["spec"], "serviceName");
        let headless = rendered
            .of_kind("Service")
            .find(|svc| s(&svc["metadata"], "name") == service)
            .with_context(|| format!("{dir}: serviceName {service} names no Service"))?;
        ensure!(
            s(&headless["spec"], "clusterIP") == "None",
            "{dir}: Service {service} is not headless"
        );
        ensure!(
            selects(
                &headless["spec"]["selector"],
                &sts["spec"]["template"]["metadata"]["labels"]
            ),
            "{dir}: Service {service} does not select the pods of {name}"
        );
        let prefix = format!("{name}-");
        for (c, _) in &containers {
            if let Some(seeds) = c.env.get("SHARDGATE_SEEDS") {
                check_seeds(seeds, &prefix, internal, &c.whose)?;
                ensure!(
                    seeds.contains(&format!(".{service}.")),
                    "{}: seeds are not names in the headless Service {service}",
                    c.whose
                );
            }
        }
        let grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        for (c, _) in containers.iter().filter(|(c, _)| c.role == "node") {
            let hook = &c.spec["lifecycle"]["preStop"]["exec"]["command"];
            let command = items(hook)
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            let Some(at) = command.find("shardgate drain") else {
                bail!("{}: no preStop drain ({command:?})", c.whose);
            };
            let drain = binary.role("drain")?;
            let words: Vec<&str> = command[at..].split_whitespace().collect();
            for (i, word) in words.iter().enumerate() {
                if word.starts_with("--") {
                    ensure!(
                        drain.flags.contains(*word),
                        "{}: the drain hook gives {word}, which `shardgate drain` does not take",
                        c.whose
                    );
                }
                let next = words.get(i + 1).copied().unwrap_or_default();
                if *word == "--seeds" {
                    let port = next.rsplit_once(':').map(|(_, p)| p.parse::<u64>());
                    ensure!(
                        matches!(port, Some(Ok(p)) if p == internal),
                        "{}: the drain hook asks {next}, not this node's internal listener",
                        c.whose
                    );
                }
                if *word == "--timeout-secs" {
                    let wait: u64 = next.parse()?;
                    ensure!(
                        wait < grace,
                        "{}: the drain waits up to {wait} s, the grace period is {grace} s",
                        c.whose
                    );
                }
            }
        }
    }

    // The autoscalers' metrics exist, and the node's is exposed by the adapter.
    let gauges = catalog_gauges()?;
    let adapter =
        std::fs::read_to_string(root().join("deploy/k8s/monitoring/prometheus-adapter.yaml"))?;
    for hpa in rendered.of_kind("HorizontalPodAutoscaler") {
        for m in items(&hpa["spec"]["metrics"]) {
            if let Some(pods) = m.get("pods") {
                let metric = s(&pods["metric"], "name");
                ensure!(
                    gauges.contains(metric),
                    "{dir}: an autoscaler scales on {metric}, which is no gauge of docs/metrics.md"
                );
                ensure!(
                    adapter.contains(metric),
                    "{dir}: {metric} is not exposed by the prometheus-adapter rule"
                );
            }
        }
    }
    Ok(())
}

/// `${NAME:-default}` → default, `${NAME:?…}` and `${NAME}` → a stand-in: compose's
/// interpolation, enough to read the values the checks need.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            break;
        };
        let inner = &rest[at + 2..at + end];
        match inner.split_once(":-") {
            Some((_, default)) => out.push_str(default),
            None => out.push_str("set"),
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

fn check_compose(file: &str, binary: &Binary) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(root().join(file))?;
    // The files share settings through anchors and merge keys (`<<: *node-environment`).
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    yaml.apply_merge()?;
    let compose = serde_json::to_value(yaml)?;
    let services = compose["services"]
        .as_object()
        .with_context(|| format!("{file}: no services"))?;
    // A service's subcommand and the words after it: the command's first word, or the first
    // after `--` (`cargo run … -- up …`).
    let command_of = |svc: &Value| -> Option<(String, Vec<String>)> {
        let words: Vec<String> = match &svc["command"] {
            Value::Array(words) => words
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Value::String(line) => line.split_whitespace().map(str::to_owned).collect(),
            _ => return None,
        };
        let at = words
            .iter()
            .position(|w| w == "--")
            .map_or(0, |dash| dash + 1);
        let role = words.get(at).filter(|r| ROLES.contains(&r.as_str()))?;
        Some((role.clone(), words[at + 1..].to_vec()))
    };
    let role_of = |svc: &Value| command_of(svc).map(|(role, _)| role);
    let env_of = |svc: &Value| -> BTreeMap<String, String> {
        match &svc["environment"] {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), interpolate(&v))
                })
                .collect(),
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), interpolate(v)),
                    None => (kv.to_owned(), String::new()),
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    };
    let mut ours = 0;
    // The node services' internal ports, by service name.
    let mut internal = BTreeMap::new();
    for (name, svc) in services {
        if role_of(svc).as_deref() == Some("node") {
            let env = env_of(svc);
            let listen = env
                .get("SHARDGATE_INTERNAL_LISTEN")
                .with_context(|| format!("{file}: {name} has no SHARDGATE_INTERNAL_LISTEN"))?;
            internal.insert(
                name.clone(),
                listen_port(listen, &format!("{file}: {name}"))?,
            );
        }
    }
    for (name, svc) in services {
        let Some(role) = role_of(svc) else {
            continue;
        };
        ours += 1;
        let whose = format!("{file}: {name}");
        let words = command_of(svc).map(|(_, words)| words).unwrap_or_default();
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            ensure!(
                binary.role(&role)?.flags.contains(flag),
                "{whose}: `shardgate {role}` takes no {flag}"
            );
        }
        // `up` runs under cargo in the development file: its environment is cargo's too.
        let env = env_of(svc);
        for var in env.keys().filter(|_| role != "up") {
            binary.check_env(&role, var, &whose)?;
        }
        for (var, _) in listeners(&role) {
            let value = env
                .get(*var)
                .with_context(|| format!("{whose}: {var} is not set"))?;
            listen_port(value, &format!("{whose}: {var}"))?;
        }
        if let Some(seeds) = env.get("SHARDGATE_SEEDS") {
            for seed in seeds.split(',') {
                let (host, port) = seed
                    .rsplit_once(':')
                    .with_context(|| format!("{whose}: seed '{seed}' has no port"))?;
                let expected = internal
                    .get(host)
                    .with_context(|| format!("{whose}: seed '{seed}' is no node service"))?;
                ensure!(
                    port.parse::<u64>()? == *expected,
                    "{whose}: seed '{seed}' is not {host}'s internal port {expected}"
                );
            }
        }
        if role == "gateway" {
            let admin = listen_port(&env["SHARDGATE_ADMIN_LISTEN"], &whose)?;
            let mcp = listen_port(&env["SHARDGATE_LISTEN"], &whose)?;
            let published: Vec<String> = items(&svc["ports"])
                .iter()
                .filter_map(|p| p.as_str().map(interpolate))
                .collect();
            for port in [mcp, admin] {
                ensure!(
                    published
                        .iter()
                        .any(|p| p.trim_end_matches("/tcp").ends_with(&format!(":{port}"))),
                    "{whose}: port {port} is not published ({published:?})"
                );
            }
        }
    }
    Ok(ours)
}

fn check_dockerfile(binary: &Binary, k8s_ports: &BTreeSet<String>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root().join("deploy/docker/Dockerfile"))?;
    let lines: Vec<String> = text
        .replace("\\\n", " ")
        .lines()
        .map(str::to_owned)
        .collect();
    let exposed: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(str::to_owned))
        .collect();
    for port in k8s_ports {
        ensure!(
            exposed.contains(port),
            "the Dockerfile does not EXPOSE {port}, which the manifests use ({exposed:?})"
        );
    }
    let healthcheck = lines
        .iter()
        .find(|l| l.trim_start().starts_with("HEALTHCHECK"))
        .context("the Dockerfile has no HEALTHCHECK")?;
    ensure!(
        healthcheck.contains(r#"["shardgate", "health"]"#),
        "the HEALTHCHECK is not `shardgate health`: {healthcheck}"
    );
    binary.role("health")?;
    ensure!(
        lines
            .iter()
            .any(|l| l.trim() == "USER 1000:1000" || l.trim() == "USER 1000"),
        "the image does not run as uid 1000"
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.trim() == r#"ENTRYPOINT ["shardgate"]"#),
        "the image's entrypoint is not shardgate"
    );
    for var in lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
    {
        let read =
            binary.roles.values().any(|r| r.env.contains(var)) || READ_BESIDES_FLAGS.contains(&var);
        ensure!(
            read,
            "the Dockerfile sets {var}, which shardgate does not read"
        );
    }
    Ok(())
}

/// The Jenkinsfile's stages are the workflows' jobs, by the same names.
fn check_pipelines() -> anyhow::Result<()> {
    let jenkins = std::fs::read_to_string(root().join("Jenkinsfile"))?;
    let stages: BTreeSet<String> = jenkins
        .match_indices("stage('")
        .filter_map(|(at, _)| jenkins[at + 7..].split('\'').next().map(str::to_owned))
        .collect();
    ensure!(!stages.is_empty(), "the Jenkinsfile has no stages");
    let mut jobs = BTreeSet::new();
    for entry in std::fs::read_dir(root().join(".github/workflows"))? {
        let path = entry?.path();
        let workflow: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path)?)?;
        for job in workflow["jobs"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            jobs.insert(job.clone());
        }
    }
    let missing: Vec<&String> = stages.iter().filter(|s| !jobs.contains(*s)).collect();
    ensure!(
        missing.is_empty(),
        "Jenkins stages {missing:?} are no workflow job ({jobs:?})"
    );
    Ok(())
}

fn check_docs(binary: &Binary) -> anyhow::Result<()> {
    let docs = std::fs::read_to_string(root().join("docs/deploy.md"))?;
    let mut missing: Vec<&str> = binary
        .roles
        .values()
        .flat_map(|r| r.env.iter().map(String::as_str))
        .chain(READ_BESIDES_FLAGS.iter().copied())
        .filter(|v| !docs.contains(&format!("`{v}`")))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    ensure!(
        missing.is_empty(),
        "docs/deploy.md does not list {missing:?}"
    );
    Ok(())
}

/// The names the binary reads besides its flags are still in its sources.
fn check_sources_read() -> anyhow::Result<()> {
    let mut sources = String::new();
    let mut dirs = vec![root()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !matches!(name, "target" | "tests" | "fuzz" | ".git" | "node_modules") {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs") {
                sources.push_str(&std::fs::read_to_string(&path)?);
            }
        }
    }
    for var in READ_BESIDES_FLAGS {
        ensure!(
            sources.contains(&format!("\"{var}\"")),
            "the sources no longer read {var}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn t10_the_deployment_files_agree_with_the_binary() -> anyhow::Result<()> {
    let binary = Binary::read()?;
    check_sources_read()?;
    let mut probes = Probes::new();
    let mut k8s_ports = BTreeSet::new();
    for overlay in [
        "deploy/k8s/overlays/staging",
        "deploy/k8s/overlays/production",
    ] {
        check_overlay(overlay, &binary, &mut probes).with_context(|| overlay.to_owned())?;
        let rendered = Rendered {
            name: overlay.into(),
            objects: kustomize(overlay)?,
        };
        for (c, _) in rendered.containers()? {
            for (number, protocol) in c.ports.values() {
                k8s_ports.insert(format!("{number}/{}", protocol.to_lowercase()));
            }
        }
    }
    for file in [
        "deploy/compose/docker-compose.yml",
        "deploy/compose/docker-compose.dev.yml",
    ] {
        let ours = check_compose(file, &binary)?;
        ensure!(ours > 0, "{file} runs no shardgate service");
    }
    check_dockerfile(&binary, &k8s_ports)?;
    check_pipelines()?;
    check_docs(&binary)?;

    // The probe paths, asked of a live gateway and node: each answers 200.
    ensure!(
        probes.iter().any(|(r, _)| r == "gateway") && probes.iter().any(|(r, _)| r == "node"),
        "probes for both roles: {probes:?}"
    );
    // The node runs with the configuration file the manifests ship (its loader refuses unknown
    // keys), so a key the binary no longer knows fails here too.
    let cluster = Cluster::builder()
        .nodes(1)
        .config(root().join("deploy/k8s/base/shardgate.toml"))
        .start()
        .await?;
    let http = shardgate_tests::http().build()?;
    for (role, path) in &probes {
        let base = match role.as_str() {
            "gateway" => cluster.admin.clone(),
            _ => format!("http://{}", cluster.nodes[0].1.admin),
        };
        let status = http.get(format!("{base}{path}")).send().await?.status();
        ensure!(
            status.is_success(),
            "the {role}'s probe {path} answered {status}"
        );
    }
    println!("probes checked live: {probes:?}; container ports {k8s_ports:?}");
    cluster.stop().await?;
    Ok(())
}
