//! A registration storm (issue 19): 20 000 outbound REGISTERs, each with its own
//! AOR and instance, pipelined over one UDP flow to a registrar that answers
//! every one 200, with sipflow on the server's veth seeing both directions.
//! Every REGISTER answered 200 must become a binding, nothing lost or refused.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get, metric},
    registrar,
};

const COUNT: usize = 20_000;
/// REGISTERs sent before waiting for their answers.
const BURST: usize = 500;

#[test]
fn a_burst_of_20000_registers_over_one_flow_all_bind() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("storm");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, &["--sweep-interval", "200ms"]);

    let stop = Arc::new(AtomicBool::new(false));
    let socket = Lab::in_namespace(&server, || UdpSocket::bind((SERVER_V4, 5060)).expect("bind 5060"));
    let answering = registrar::udp_registrar(socket, 30, stop.clone());
    let to: SocketAddr = format!("{SERVER_V4}:5060").parse().unwrap();
    let salt = u64::from(std::process::id());
    let storm = registrar::one_flow(&client, to, COUNT, BURST, None, |n, local| {
        let instance = registrar::instance(salt, n);
        registrar::register(&format!("u{n}"), local, &registrar::call_id(n, "burst"), Some(&instance))
    });
    let sent_for = Instant::now();
    println!(
        "client: {} REGISTERs over one flow, {} answered 200 ({} retransmissions) in {:.2} s",
        storm.sent, storm.answered, storm.retransmissions, storm.seconds
    );

    let (mut text, mut bound, mut bound_at) = (String::new(), 0.0, None);
    while sent_for.elapsed() < Duration::from_secs(20) {
        if let Some((200, body)) = http_get(&server, "http://127.0.0.1:9560/metrics") {
            text = body;
            bound = metric(&text, "sipflow_registrations", &[("outbound", "true")]).unwrap_or(0.0);
            if bound == storm.answered as f64 {
                bound_at = Some(Instant::now());
                break;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let answers_sent = answering.join().expect("registrar");

    let refused: f64 = ["bindings_full", "pending_full", "cut_head", "too_many_contacts"]
        .iter()
        .map(|reason| metric(&text, "sipflow_registrations_refused_total", &[("reason", reason)]).unwrap_or(0.0))
        .sum();
    let lost = metric(&text, "sipflow_events_lost_total", &[]).unwrap_or(f64::NAN);
    let registers = metric(&text, "sipflow_requests_total", &[("method", "REGISTER")]).unwrap_or(0.0);
    let oks = metric(&text, "sipflow_responses_total", &[("code", "200")]).unwrap_or(0.0);
    println!("registrar: {answers_sent} answers sent");
    println!(
        "sipflow: {registers} REGISTERs and {oks} 200s counted, {bound} outbound bindings, {refused} refused, {lost} events lost"
    );
    match bound_at {
        Some(at) => println!(
            "first REGISTER to the last binding: {:.2} s (to the last answer {:.2} s)",
            at.duration_since(storm.first_sent).as_secs_f64(),
            storm.seconds
        ),
        None => println!("the bindings did not reach the answered REGISTERs within 20 s of the storm"),
    }

    assert_eq!(storm.answered, COUNT, "the lab's registrar answered only some REGISTERs (not sipflow's doing)");
    assert_eq!(bound, storm.answered as f64, "every REGISTER answered 200 on the flow is a binding");
    assert_eq!(lost, 0.0, "sipflow_events_lost_total");
    assert_eq!(refused, 0.0, "sipflow_registrations_refused_total, all reasons");
}
