//! The monitoring files of deploy/ against the code: every metric and label the Prometheus rules
//! and the Grafana operations board name is one the binary exports; the rules pass promtool's
//! checks and their unit tests (deploy/prometheus/rules_test.yml); every PromQL expression of the
//! board parses; the boards are well-formed and use the provisioned data sources. The desk
//! board's SQL runs against ClickHouse in `tests/clickhouse.rs` (and on a current release in
//! deploy/clickhouse/check_current.py).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use harbour::metrics::{FigureLabel, Metrics};
use harbour_sources::kafka::Partition;
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

fn board(name: &str) -> Value {
    serde_json::from_str(&read(&format!("grafana/dashboards/{name}"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The PromQL expressions of a board's Prometheus panels, with Grafana's variables set.
fn board_promql(b: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in b["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            if t["datasource"]["type"] == "prometheus" {
                let expr = t["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$instance", ".*");
                out.push((p["title"].as_str().unwrap().to_owned(), expr));
            }
        }
    }
    out
}

/// Sample names and label names the binary exports (every family given a child).
fn exported() -> (BTreeSet<String>, BTreeSet<String>) {
    let m = Metrics::default();
    m.event("fill");
    m.dead_letter("off_tick");
    let p = Partition { topic: "harbour.fills".into(), partition: 0 };
    m.kafka_lag(&p, 1);
    m.kafka_committed(&p, 1);
    m.desk_risk.get_or_create(&FigureLabel { figure: "gross" }).set(1.0);
    m.sink("clickhouse", Some(Arc::new(AtomicU64::new(0))));
    m.omdc_feed(&harbour_sources::hkex::feed::FeedStats::default(), 0);
    let text = m.render();
    let mut names = BTreeSet::new();
    let mut labels: BTreeSet<String> = ["instance", "job"].into_iter().map(String::from).collect();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        names.insert(name.to_owned());
        if let Some(set) = line.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(s, _)| s) {
            for pair in set.split(',') {
                labels.insert(pair.split('=').next().unwrap().to_owned());
            }
        }
    }
    (names, labels)
}

/// `harbour_…` metric names and the label names of `by (…)`, `without (…)`, `on (…)` and
/// `{label…}` in an expression.
fn referenced(expr: &str) -> (Vec<String>, Vec<String>) {
    let bytes = expr.as_bytes();
    let word = |i: usize| {
        let end = expr[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |n| i + n);
        &expr[i..end]
    };
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(n) = expr[i..].find("harbour_") {
        let at = i + n;
        let boundary =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':');
        if boundary {
            names.push(word(at).to_owned());
        }
        i = at + "harbour_".len();
    }
    let mut labels = Vec::new();
    for kw in ["by", "without", "on", "ignoring"] {
        let mut from = 0;
        while let Some(n) = expr[from..].find(&format!("{kw} (")) {
            let open = from + n + kw.len() + 2;
            let close = open + expr[open..].find(')').unwrap();
            labels.extend(expr[open..close].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
            from = close;
        }
    }
    let mut from = 0;
    while let Some(n) = expr[from..].find('{') {
        let open = from + n + 1;
        let close = open + expr[open..].find('}').unwrap();
        // `{{ $labels.x }}` in annotations is not a selector.
        if !expr[open..].starts_with('{') && !expr[open..].starts_with(' ') {
            for m in expr[open..close].split(',') {
                let l = m.split(['=', '!', '~']).next().unwrap().trim();
                if !l.is_empty() {
                    labels.push(l.to_owned());
                }
            }
        }
        from = close;
    }
    (names, labels)
}

/// The `expr:` values of rules.yml (single-line or folded `>` blocks).
fn rule_exprs() -> Vec<String> {
    let text = read("prometheus/rules.yml");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else { continue };
        let rest = rest.trim();
        if rest == ">" || rest == "|" {
            let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() >= indent && !l.trim().is_empty())
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        } else {
            out.push(rest.to_owned());
        }
    }
    out
}

#[test]
fn every_metric_and_label_the_rules_and_the_operations_board_name_is_exported() {
    let (names, labels) = exported();
    // Names a rule or a panel may use besides the exported ones: Prometheus's own, `le` of
    // histogram buckets.
    let mut checked = 0;
    let exprs: Vec<(String, String)> = rule_exprs()
        .into_iter()
        .map(|e| ("rules.yml".to_owned(), e))
        .chain(board_promql(&board("harbour-operations.json")))
        .collect();
    assert!(exprs.len() >= 25, "{} expressions", exprs.len());
    for (whence, expr) in &exprs {
        let (metrics, used) = referenced(expr);
        for m in metrics {
            assert!(names.contains(&m), "{whence}: {m} is not exported by the binary (in `{expr}`)");
            checked += 1;
        }
        for l in used {
            assert!(labels.contains(&l) || l == "le", "{whence}: label {l} is not exported (in `{expr}`)");
        }
    }
    assert!(checked >= 30, "{checked} metric references");
    // Every metric the binary exports is on the board or in a rule (an operator sees it); a
    // histogram counts as used when one of its series is.
    let used: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| referenced(e).0).collect();
    let parts = ["_bucket", "_count", "_sum"];
    for n in &names {
        let histogram_used = parts
            .iter()
            .filter_map(|p| n.strip_suffix(p))
            .any(|base| parts.iter().any(|p| used.contains(&format!("{base}{p}"))));
        assert!(used.contains(n) || histogram_used, "{n} is on no panel and in no rule");
    }
}

#[test]
fn prometheus_parses_what_the_binary_serves() {
    // promtool reads the exposition as Prometheus's classic text parser does; a parse error (an
    // OpenMetrics-only type such as `info`) would make every scrape fail. Its only remark may be
    // that OpenMetrics counters' `_total` series carry their help under the family's name.
    let m = Metrics::default();
    m.event("fill");
    m.dead_letter("off_tick");
    m.kafka_lag(&Partition { topic: "harbour.fills".into(), partition: 0 }, 1);
    m.desk_risk.get_or_create(&FigureLabel { figure: "gross" }).set(1.0);
    m.sink("clickhouse", Some(Arc::new(AtomicU64::new(2)))).written(5, 10, std::time::Duration::from_millis(4));
    let text = m.render();
    let mut child = Command::new(promtool_path())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}: run `bash deploy/test.sh`, or set HARBOUR_PROMTOOL"));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(1), "promtool could not parse /metrics:\n{said}\n{text}");
    for remark in said.lines().filter(|l| !l.trim().is_empty()) {
        let counter = remark.strip_suffix(" no help text").and_then(|n| n.strip_suffix("_total"));
        assert!(counter.is_some_and(|c| text.contains(&format!("# TYPE {c} counter"))), "promtool: {remark}\n{text}");
    }
}

/// `HARBOUR_PROMTOOL` (set by deploy/test.sh from deploy/promtool.sh), else `promtool` on PATH.
fn promtool_path() -> String {
    std::env::var("HARBOUR_PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

fn promtool() -> Command {
    let mut c = Command::new(promtool_path());
    c.current_dir(deploy("prometheus"));
    c
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| {
        panic!("promtool: {e}: run `bash deploy/test.sh`, or set HARBOUR_PROMTOOL=\"$(bash deploy/promtool.sh)\"")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_rules_pass_promtool_and_their_unit_tests() {
    let mut c = promtool();
    c.args(["check", "rules", "rules.yml"]);
    let checked = run(c, "promtool check rules");
    assert!(checked.contains("SUCCESS"), "{checked}");
    let mut c = promtool();
    c.args(["check", "config", "prometheus.yml"]);
    run(c, "promtool check config");
    let mut c = promtool();
    c.args(["test", "rules", "rules_test.yml"]);
    run(c, "promtool test rules");
    // Every alert has a unit test that expects it to fire.
    let tests = read("prometheus/rules_test.yml");
    for line in read("prometheus/rules.yml").lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            let name = name.trim();
            let fires = tests.split(&format!("alertname: {name}\n")).skip(1).any(|after| {
                after.trim_start().starts_with("exp_alerts:\n") || after.trim_start().starts_with("exp_alerts:\r")
            });
            assert!(fires, "no unit test in rules_test.yml expects {name} to fire");
        }
    }
}

#[test]
fn every_promql_expression_of_the_operations_board_parses() {
    // promtool parses each expression as a unit test's query (no input series: no samples).
    let exprs = board_promql(&board("harbour-operations.json"));
    let dir = std::env::temp_dir().join(format!("harbour-promql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut test = String::from("rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series: []\n    promql_expr_test:\n");
    for (_, e) in &exprs {
        test.push_str(&format!(
            "      - expr: '{}'\n        eval_time: 1m\n        exp_samples: []\n",
            e.replace('\'', "''")
        ));
    }
    std::fs::write(dir.join("board_test.yml"), test).unwrap();
    let mut c = Command::new(promtool_path());
    c.current_dir(&dir).args(["test", "rules", "board_test.yml"]);
    let out = run(c, "promtool test rules (the board's expressions)");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_dashboards_are_well_formed_and_use_the_provisioned_data_sources() {
    let provisioned: BTreeSet<String> = read("grafana/provisioning/datasources/harbour.yaml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("uid:").map(|u| u.trim().to_owned()))
        .collect();
    assert_eq!(provisioned.len(), 2);
    let mut uids = BTreeSet::new();
    for name in ["harbour-desk.json", "harbour-operations.json"] {
        let b = board(name);
        assert!(uids.insert(b["uid"].as_str().unwrap().to_owned()), "{name}: uid used twice");
        assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()));
        let uses = |v: &Value, what: &str| {
            let uid = v["datasource"]["uid"].as_str().unwrap_or_else(|| panic!("{name}: {what} has no data source"));
            assert!(provisioned.contains(uid), "{name}: {what} uses data source {uid}, not provisioned");
        };
        for v in b["templating"]["list"].as_array().unwrap() {
            uses(v, &format!("variable {}", v["name"]));
        }
        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for p in b["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap();
            assert!(ids.insert(p["id"].as_u64().unwrap()), "{name}: panel id {} twice", p["id"]);
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            );
            assert!(x + w <= 24 && w > 0 && h > 0, "{name}: {title} does not fit the grid");
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(cells.insert((cx, cy)), "{name}: {title} overlaps another panel");
                }
            }
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title} has no query");
            let refs: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
            assert_eq!(refs.len(), targets.len(), "{name}: {title}: refIds repeat");
            for t in targets {
                uses(t, title);
                let text = t["rawSql"].as_str().or(t["expr"].as_str());
                assert!(text.is_some_and(|q| !q.trim().is_empty()), "{name}: {title}: empty query");
            }
        }
    }
}

#[test]
fn the_compose_and_kubernetes_configs_load_and_agree_with_their_manifests() {
    for (file, manifest) in [("compose/harbour.toml", "compose.yaml"), ("k8s/harbour.toml", "k8s/deployment.yaml")] {
        let config = harbour::config::load(Some(&deploy(file))).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
        assert!(config.kafka.lease.enabled, "{file}: active/standby needs the lease");
        assert_eq!(config.metrics.listen, "0.0.0.0:9187", "{file}: the port the manifests expose");
        assert!(config.pipeline.state_dir.starts_with("/var/lib/harbour"), "{file}: state on the mounted volume");
        assert_eq!(config.risk.limits_file.as_deref(), Some(Path::new("/etc/harbour/limits.toml")));
        let text = read(manifest);
        assert!(text.contains("9187") && text.contains("/etc/harbour"), "{manifest}");
        // The state folder is on the volume mounted at /var/lib/harbour.
        assert!(
            text.contains("harbour-state:/var/lib/harbour") || text.contains("mountPath: /var/lib/harbour }"),
            "{manifest} mounts no volume at /var/lib/harbour"
        );
    }
    // The ConfigMap's limits are the project's (kustomize reads files only below its folder).
    assert_eq!(read("k8s/limits.toml"), read("limits.toml"), "deploy/k8s/limits.toml is a copy of deploy/limits.toml");
    // Every file compose mounts exists, and Grafana and Prometheus find what they load there.
    let compose = read("compose.yaml");
    let mounts: Vec<&str> =
        compose.lines().filter_map(|l| l.trim().strip_prefix("- ./")).map(|m| m.split(':').next().unwrap()).collect();
    assert!(mounts.len() >= 5, "{mounts:?}");
    for m in mounts {
        assert!(deploy(m).exists(), "compose.yaml mounts deploy/{m}, which does not exist");
    }
    assert!(compose.contains("./grafana/dashboards:/var/lib/grafana/dashboards/harbour"));
    assert!(read("grafana/provisioning/dashboards/harbour.yaml").contains("path: /var/lib/grafana/dashboards/harbour"));
    assert!(read("prometheus/prometheus.yml").contains("- rules.yml"));
    assert!(compose.contains("dockerfile: deploy/Dockerfile") && deploy("Dockerfile").exists());
}
