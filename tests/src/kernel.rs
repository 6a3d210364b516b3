//! The XDP program loaded from the agent's embedded object and driven with
//! BPF_PROG_TEST_RUN (aya's `TestRun`): no interface, no namespace.

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use monitor_common::maps::{
    DEFAULT_MAX_FLOWS, EVENTS, FLOW_EVENTS, FOLLOW_TC, PASS_PROGRAM, TC_EGRESS_PROGRAM, TC_FOLLOW_PROGRAMS, XDP_PROGRAM,
};
use sipflow::{
    kernel::{
        attach::{self, SipPorts},
        head_events::{self, FlowNews, Head},
        maps::{CounterSnapshot, FlowTable, KernelCounters},
    },
    peers::Peers,
};

use crate::{
    PinDir,
    packets::{SIP_PORT, SIPS_PORT, WS_PORT},
};

pub const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1): "the next program decides, else pass", as BPF_PROG_TEST_RUN reports it.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

fn run_program(program: &Xdp, frame: &[u8], repeat: u32) -> (u32, std::time::Duration) {
    let options = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
    let result = program.test_run(options).expect("BPF_PROG_TEST_RUN");
    (result.return_value, result.duration)
}

pub struct LoadedXdp {
    ebpf: Ebpf,
    /// Where this instance's maps are pinned; removed after the instance (fields drop in order).
    _pins: PinDir,
    counters: KernelCounters,
    pub flows: FlowTable,
    events: RingBuf<MapData>,
    flow_events: RingBuf<MapData>,
}

impl LoadedXdp {
    /// Loads the program with 5060 as a SIP port and 5061 as a TLS one.
    pub fn load() -> Self {
        Self::load_with_max_flows(DEFAULT_MAX_FLOWS)
    }

    /// The same, with the flow map sized to `max_flows`.
    pub fn load_with_max_flows(max_flows: u32) -> Self {
        Self::load_with(max_flows, false, &Peers::default())
    }

    /// The same, as `--ingress-only` loads it (a tap: both directions on ingress).
    pub fn load_ingress_only() -> Self {
        Self::load_with(DEFAULT_MAX_FLOWS, true, &Peers::default())
    }

    /// The same, with the peers `--peer` would name.
    pub fn load_with_peers(peers: &Peers) -> Self {
        Self::load_with(DEFAULT_MAX_FLOWS, false, peers)
    }

    /// Loaded again over the same pins, as a restarted agent loads the
    /// programs, this time with `peers` named.
    pub fn reload_with_peers(self, peers: &Peers) -> Self {
        let Self { ebpf, _pins: pins, .. } = self;
        drop(ebpf);
        Self::load_in(pins, DEFAULT_MAX_FLOWS, (false, false), peers)
    }

    /// The same, handing the agent every SIP message's head (`--transactions`).
    pub fn load_with_transactions() -> Self {
        crate::require_root();
        Self::load_in(PinDir::new("test-run"), DEFAULT_MAX_FLOWS, (false, true), &Peers::default())
    }

    fn load_with(max_flows: u32, ingress_only: bool, peers: &Peers) -> Self {
        crate::require_root();
        Self::load_in(PinDir::new("test-run"), max_flows, (ingress_only, false), peers)
    }

    fn load_in(pins: PinDir, max_flows: u32, watching: (bool, bool), peers: &Peers) -> Self {
        let ports = SipPorts { plain: vec![SIP_PORT], tls: vec![SIPS_PORT], ws: vec![WS_PORT] };
        let mut ebpf = attach::load(&ports, max_flows, &pins.0, watching, Default::default(), peers)
            .expect("the verifier accepts the program");
        let counters = KernelCounters::take_from(&mut ebpf, !peers.is_empty()).expect("counter maps");
        let flows = FlowTable::take_from(&mut ebpf).expect("flow map");
        let events = RingBuf::try_from(ebpf.take_map(EVENTS).expect("EVENTS")).expect("ring buffer");
        let flow_events = RingBuf::try_from(ebpf.take_map(FLOW_EVENTS).expect("FLOW_EVENTS")).expect("ring buffer");
        Self { ebpf, _pins: pins, counters, flows, events, flow_events }
    }

    /// The heads the program sent since the last call.
    pub fn heads(&mut self) -> Vec<Head> {
        head_events::drain(&mut self.events)
    }

    /// The flow events the program sent since the last call.
    pub fn flow_news(&mut self) -> Vec<FlowNews> {
        head_events::drain_with(&mut self.flow_events, FlowNews::decode)
    }

    fn program(&self) -> &Xdp {
        self.ebpf.program(XDP_PROGRAM).expect("program").try_into().expect("xdp")
    }

    /// Runs the program once on `frame` and returns its verdict.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.run_repeat(frame, 1).0
    }

    /// Runs the program on each frame in turn; every one must pass.
    pub fn run_all(&self, frames: &[Vec<u8>]) {
        for frame in frames {
            assert_eq!(self.run(frame), XDP_PASS);
        }
    }

    /// Runs `repeat` times; returns the verdict and the kernel's mean time per run.
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> (u32, std::time::Duration) {
        run_program(self.program(), frame, repeat)
    }

    /// Runs the TC egress program once on `frame` (loaded on first use); returns its verdict.
    pub fn run_tc(&mut self, frame: &[u8]) -> u32 {
        let program: &mut SchedClassifier =
            self.ebpf.program_mut(TC_EGRESS_PROGRAM).expect("tc program").try_into().expect("classifier");
        if program.fd().is_err() {
            program.load().expect("the verifier accepts the TC program");
            attach::install_followers(&mut self.ebpf, TC_FOLLOW_PROGRAMS, FOLLOW_TC)
                .expect("the verifier accepts the TC follower");
        }
        let program: &mut SchedClassifier =
            self.ebpf.program_mut(TC_EGRESS_PROGRAM).expect("tc program").try_into().expect("classifier");
        let options = TestRunOptions { data_in: Some(frame), repeat: 1, ..Default::default() };
        program.test_run(options).expect("BPF_PROG_TEST_RUN").return_value
    }

    /// Instructions the verifier processed for a loaded program (its budget is 1 000 000).
    pub fn verified_instructions(&self, program: &str) -> Option<u32> {
        let program = self.ebpf.program(program)?;
        program.info().ok()?.verified_instruction_count()
    }

    /// The same for the do-nothing XDP program of the same object (loaded on first use).
    pub fn run_pass_repeat(&mut self, frame: &[u8], repeat: u32) -> (u32, std::time::Duration) {
        let program: &mut Xdp = self.ebpf.program_mut(PASS_PROGRAM).expect("pass program").try_into().expect("xdp");
        if program.fd().is_err() {
            program.load().expect("load the pass program");
        }
        run_program(program, frame, repeat)
    }

    /// The do-nothing program again, once `run_pass_repeat` has loaded it.
    pub fn run_pass_once_loaded(&self, frame: &[u8], repeat: u32) -> (u32, std::time::Duration) {
        let program: &Xdp = self.ebpf.program(PASS_PROGRAM).expect("pass program").try_into().expect("xdp");
        run_program(program, frame, repeat)
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.counters.read().expect("read counters")
    }

    /// The same, read slot by slot as aya reads them, not in batches.
    pub fn counters_one_by_one(&self) -> CounterSnapshot {
        self.counters.read_one_by_one().expect("read counters")
    }
}
