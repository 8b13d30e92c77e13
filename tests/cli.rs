//! The `weir` command line, run as a user would run it.

mod support;

use support::weir;

#[test]
fn scenarios_lists_one_per_line_with_a_description() {
    let out = weir(&["scenarios"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("broker-crash"))
        .expect("broker-crash is listed");
    assert!(
        line.split_whitespace().count() > 3,
        "with a description: {line}"
    );
}

#[test]
fn sim_json_and_replay_agree_on_the_trace_hash() {
    let out = weir(&[
        "sim",
        "--scenario",
        "broker-crash",
        "--seeds",
        "0..2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in [
        "scenario",
        "seed",
        "passed",
        "violations",
        "trace_hash",
        "sim_ms",
        "wall_ms",
    ] {
        assert!(lines[0].get(key).is_some(), "{key} is reported");
    }
    let seed1 = lines.iter().find(|l| l["seed"] == 1).unwrap();
    let replay = weir(&["replay", "--scenario", "broker-crash", "--seed", "1"]);
    assert!(replay.status.success());
    let text = String::from_utf8(replay.stdout).unwrap();
    let hash = seed1["trace_hash"].as_str().unwrap();
    assert!(
        text.contains(&format!("trace hash {hash}")),
        "replay prints the same hash {hash}:\n{text}"
    );
    assert!(
        text.contains("crash broker") || text.contains("partition") || text.contains("latency"),
        "the timeline shows faults"
    );
}

#[test]
fn a_failing_seed_exits_1_with_its_replay_line() {
    let out = weir(&[
        "sim",
        "--scenario",
        "broker-crash",
        "--seeds",
        "0..1",
        "--mutant",
        "page-cache-acks",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("weir replay --scenario broker-crash --seed 0 --mutant page-cache-acks"),
        "{err}"
    );
}

#[test]
fn unknown_names_are_usage_errors() {
    assert_eq!(
        weir(&["sim", "--scenario", "no-such"]).status.code(),
        Some(2)
    );
    assert_eq!(
        weir(&["sim", "--scenario", "broker-crash", "--mutant", "no-such"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        weir(&["sim", "--scenario", "broker-crash", "--seeds", "5..2"])
            .status
            .code(),
        Some(2)
    );
}
