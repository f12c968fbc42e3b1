//! deploy/ checked without a cluster: every manifest parses as the
//! Kubernetes API type its `kind` names, with no field that type does not
//! have (a round trip through the typed struct must give the document
//! back unchanged: a misspelt or misplaced field is dropped and named);
//! the pieces agree with each other; the containerd snippets register the
//! runtime the RuntimeClass names.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::node::v1::RuntimeClass;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document of deploy/*.yaml, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/");
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable manifest");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", f.display()));
            docs.push((
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                value,
            ));
        }
    }
    docs
}

/// The first path where `want` has something `got` lacks or differs on.
fn lost(want: &Value, got: &Value, at: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, v)| match g.get(k) {
            Some(gv) => lost(v, gv, &format!("{at}.{k}")),
            None => Some(format!("{at}.{k}")),
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (v, gv))| lost(v, gv, &format!("{at}[{i}]"))),
        _ => (want != got).then(|| at.to_string()),
    }
}

fn typed<T: DeserializeOwned + Serialize>(file: &str, doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {}: {e}", doc["kind"]));
    let back = serde_json::to_value(&t).expect("serializable");
    if let Some(path) = lost(doc, &back, "") {
        panic!(
            "{file}: {} has no field (or a wrong value) at {path}",
            doc["kind"]
        );
    }
    t
}

#[test]
fn manifests_are_the_api_types_they_name() {
    let mut kinds = Vec::new();
    for (file, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "RuntimeClass" => drop(typed::<RuntimeClass>(&file, &doc)),
            "DaemonSet" => drop(typed::<DaemonSet>(&file, &doc)),
            "Namespace" => drop(typed::<Namespace>(&file, &doc)),
            other => panic!("{file}: kind {other:?} is not checked here; add it"),
        }
        kinds.push(format!("{file}:{kind}"));
    }
    println!("checked: {kinds:?}");
    assert!(kinds.len() >= 4, "{kinds:?}");
}

#[test]
fn a_misspelt_field_is_caught() {
    let doc: Value = serde_json::json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "x"}, "handler": "x",
        "overhead": {"podfixed": {"memory": "1Mi"}}
    });
    let caught = std::panic::catch_unwind(|| typed::<RuntimeClass>("inline", &doc));
    assert!(caught.is_err(), "podfixed (for podFixed) went unnoticed");
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .1
}

#[test]
fn the_pieces_agree() {
    let docs = documents();
    let rc: RuntimeClass = typed("runtimeclass.yaml", find(&docs, "RuntimeClass", "hull"));
    assert_eq!(rc.handler, "hull");
    let overhead = rc
        .overhead
        .and_then(|o| o.pod_fixed)
        .expect("a PodOverhead");
    assert!(overhead.contains_key("memory") && overhead.contains_key("cpu"));
    let selector = rc
        .scheduling
        .and_then(|s| s.node_selector)
        .expect("scheduling");
    for name in ["hull-deploy", "hull-cleanup"] {
        let ds: DaemonSet = typed(name, find(&docs, "DaemonSet", name));
        let pod = ds.spec.and_then(|s| s.template.spec).expect("a pod spec");
        assert_eq!(
            pod.node_selector.as_ref(),
            Some(&selector),
            "{name} runs where pods may go"
        );
        assert_eq!(
            pod.host_pid,
            Some(true),
            "{name} reaches the host's containerd"
        );
        let c = &pod.containers[0];
        let env = c.env.clone().unwrap_or_default();
        assert!(env
            .iter()
            .any(|e| e.name == "HULL_RUNTIME_NAME" && e.value.as_deref() == Some(&rc.handler)));
        let cmd = c.command.clone().unwrap_or_default().join(" ");
        assert!(cmd.starts_with("/installer/entrypoint.sh"), "{cmd}");
    }
    let entry =
        std::fs::read_to_string(deploy_dir().join("installer/entrypoint.sh")).expect("entrypoint");
    let image = std::fs::read_to_string(deploy_dir().join("installer/Containerfile"))
        .expect("Containerfile");
    assert!(image.contains("/installer/entrypoint.sh") && entry.contains("hull-node install"));
}

#[test]
fn containerd_snippets_register_the_handler() {
    for (file, version, plugin) in [
        ("hull-1.x.toml", 2, "io.containerd.grpc.v1.cri"),
        ("hull-2.x.toml", 3, "io.containerd.cri.v1.runtime"),
    ] {
        let text = std::fs::read_to_string(deploy_dir().join("containerd").join(file)).expect(file);
        let t: toml::Table = text.parse().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(t["version"].as_integer(), Some(version), "{file}");
        let rt = &t["plugins"][plugin]["containerd"]["runtimes"]["hull"];
        assert_eq!(
            rt["runtime_type"].as_str(),
            Some("io.containerd.hull.v2"),
            "{file}"
        );
        assert!(rt["options"]["ConfigPath"].as_str().is_some(), "{file}");
        let known = [
            "runtime_type",
            "runtime_path",
            "pod_annotations",
            "privileged_without_host_devices",
            "options",
        ];
        for key in rt.as_table().expect("a table").keys() {
            assert!(
                known.contains(&key.as_str()),
                "{file}: unknown runtime key {key}"
            );
        }
    }
}
