//! `sipflow flows`: the running agent's /flows, as a table or as JSON.

use std::time::Duration;

use crate::{
    cli::{FlowStateArg, FlowsArgs},
    failure::Failure,
};

pub fn flows(args: &FlowsArgs) -> Result<(), Failure> {
    let query = match args.state {
        Some(FlowStateArg::Failed) => "?state=failed",
        None => "",
    };
    let url = format!("http://{}/flows{query}", args.agent);
    // Connecting and the answer's start are quick or the agent is not there;
    // the body of a registrar's flows is hundreds of MB and takes its time,
    // so it has no size limit and a generous time.
    let config = ureq::config::Config::builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build();
    let body = ureq::Agent::new_with_config(config)
        .get(&url)
        .call()
        .and_then(|mut r| r.body_mut().with_config().limit(u64::MAX).read_to_string())
        .map_err(|e| {
            Failure::Runtime(format!(
                "cannot reach the agent at {}: {e}; is `sipflow run` running there (see its --listen, and --agent here)?",
                args.agent
            ))
        })?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let flows: Vec<serde_json::Value> = serde_json::from_str(&body)
        .map_err(|e| Failure::Runtime(format!("the agent's answer is not a flow list: {e}")))?;
    print!("{}", table(&flows));
    Ok(())
}

/// A fixed-width table, a row per flow.
pub fn table(flows: &[serde_json::Value]) -> String {
    let header = ["IFACE", "TRANSPORT", "CLIENT", "PEER", "SERVER", "STATE", "REASON", "IDLE", "TIMER", "AOR", "430"];
    let text = |v: &serde_json::Value, k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        serde_json::Value::Bool(b) => {
            if *b {
                "yes".into()
            } else {
                "no".into()
            }
        }
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for f in flows {
        let idle = f["seconds_since_last_keepalive"].as_f64().or(f["seconds_since_last_packet"].as_f64());
        rows.push(vec![
            text(f, "iface"),
            text(f, "transport"),
            text(f, "remote"),
            text(f, "peer"),
            text(f, "local"),
            text(f, "state"),
            text(f, "reason"),
            idle.map_or("-".into(), |s| format!("{s:.0}s")),
            timer(f),
            text(f, "aor"),
            text(f, "would_430"),
        ]);
    }
    let widths: Vec<usize> = (0..header.len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if flows.is_empty() {
        out.push_str("(no flows)\n");
    }
    out
}

/// The keepalive interval silence is judged by: the client's own cadence where
/// it is slower than the Flow-Timer (`keepalive_interval`); the Flow-Timer in
/// force from an agent that does not say.
fn timer(flow: &serde_json::Value) -> String {
    let seconds = flow["keepalive_interval"].as_u64().or(flow["flow_timer"].as_u64());
    seconds.map_or("-".into(), |s| format!("{s}s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_flow_with_aligned_columns() {
        let flows: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"iface":"eth0","transport":"tcp","remote":"192.0.2.1:40000","peer":"carrier-a","local":"192.0.2.2:5060",
                "state":"failed","reason":"keepalive_timeout","seconds_since_last_keepalive":41.2,
                "seconds_since_last_packet":41.2,"flow_timer":25,"aor":"sip:alice@example.com","would_430":true}]"#,
        )
        .unwrap();
        let t = table(&flows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("IFACE"));
        assert!(lines[1].contains("keepalive_timeout") && lines[1].contains("41s") && lines[1].ends_with("yes"));
        assert_eq!(lines[0].find("STATE"), lines[1].find("failed"));
        assert_eq!(lines[0].find("PEER"), lines[1].find("carrier-a"));
        assert!(table(&[]).contains("(no flows)"));
    }

    /// baresip: Flow-Timer 3, but it pings every 19 s; verdicts wait for its cadence.
    #[test]
    fn the_timer_is_the_interval_verdicts_use() {
        let timer_at = |json: &str| {
            let t = table(&[serde_json::from_str(json).unwrap()]);
            let (header, row) = (t.lines().next().unwrap(), t.lines().nth(1).unwrap());
            row[header.find("TIMER").unwrap()..].split_whitespace().next().unwrap().to_string()
        };
        assert_eq!(timer_at(r#"{"state":"alive","flow_timer":3,"keepalive_interval":23}"#), "23s");
        assert_eq!(timer_at(r#"{"state":"alive","flow_timer":3}"#), "3s", "an agent without keepalive_interval");
        assert_eq!(timer_at(r#"{"state":"alive","aor":"sip:a@b"}"#), "-");
    }
}
