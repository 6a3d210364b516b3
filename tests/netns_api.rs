//! The HTTP endpoint under what a busy or hostile local client does: a flow
//! list larger than an HTTP client's default body limit, a thousand idle
//! connections, and a connection that never finishes its request head.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use sipflow_tests::{
    many_clients,
    netns::{Lab, SERVER_IF, http_get, metric, sipflow_bin},
};

const HEALTHZ: &str = "http://127.0.0.1:9560/healthz";

/// 30 000 flows make a /flows body of about 16 MB: `sipflow flows` reads it whole.
#[test]
fn sipflow_flows_lists_thirty_thousand_flows() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("api-flows");
    let server = lab.server.clone();
    lab.start_agent(SERVER_IF, &["--sweep-interval", "1s"]);
    let flows = 30_000;
    many_clients::send_from_clients(&lab.client.clone(), flows);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = http_get(&server, "http://127.0.0.1:9560/metrics").map(|(_, t)| t).unwrap_or_default();
        let in_map = metric(&text, "sipflow_map_entries", &[("map", "flows")]).unwrap_or(0.0);
        if in_map >= f64::from(flows) {
            break;
        }
        assert!(Instant::now() < deadline, "only {in_map} flows in the map");
        std::thread::sleep(Duration::from_millis(500));
    }
    let sipflow_flows = |json: bool| {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/var/run/netns/{server}")).arg(sipflow_bin()).args(["flows"]);
        if json {
            command.arg("--json");
        }
        command.output().expect("run sipflow flows")
    };
    let table = sipflow_flows(false);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let rows = String::from_utf8_lossy(&table.stdout).lines().count();
    assert_eq!(rows, flows as usize + 1, "a header and a row per flow");
    let json = sipflow_flows(true);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    assert!(json.stdout.len() > 10 << 20, "more than ureq's default limit: {} bytes", json.stdout.len());
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).expect("a JSON array");
    assert_eq!(listed.len(), flows as usize);
    // Or page by page.
    let page = |query: &str| {
        let (_, body) = http_get(&server, &format!("http://127.0.0.1:9560/flows?{query}")).expect("a page");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).expect("a JSON array")
    };
    assert_eq!(page("limit=100").len(), 100);
    let last = page(&format!("offset={}&limit=100", flows - 5));
    assert_eq!(last.len(), 5);
    assert_eq!(last[4]["remote"], listed[flows as usize - 1]["remote"], "the same order as the whole list");
}

/// A thousand connections that send nothing do not stop a scrape; one that
/// never finishes its request head is closed.
#[test]
fn idle_connections_are_survived_and_a_slow_head_is_closed() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("api-idle");
    let server = lab.server.clone();
    lab.start_agent(SERVER_IF, &[]);
    let (idle, mut slow) = Lab::in_namespace(&server, || {
        let idle: Vec<TcpStream> =
            (0..1000).map(|_| TcpStream::connect("127.0.0.1:9560").expect("an idle connection")).collect();
        let mut slow = TcpStream::connect("127.0.0.1:9560").expect("a slow connection");
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: sipflow\r\n").expect("half a head");
        (idle, slow)
    });
    let (status, _) = http_get(&server, HEALTHZ).expect("/healthz with 1000 idle connections open");
    assert_eq!(status, 200);

    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 512];
    let read = slow.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "the agent answered a half head: {:?}",
        read.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    assert!(waited < Duration::from_secs(25), "closed only after {waited:?}");
    let (status, _) = http_get(&server, HEALTHZ).expect("/healthz afterwards");
    assert_eq!(status, 200);
    drop(idle);
}
