//! The XDP program loaded from the agent's embedded object and driven with
//! BPF_PROG_TEST_RUN (aya's `TestRun`): no interface, no namespace.

use aya::{
    Ebpf,
    maps::HashMap,
    programs::{TestRun, TestRunOptions, Xdp},
};
use monitor_common::{
    maps::{SIP_PORTS, XDP_PROGRAM},
    ports::PortKind,
};
use sipflow::{
    ebpf_object::EBPF_OBJECT,
    kernel_maps::{CounterSnapshot, KernelCounters},
};

use crate::packets::{SIP_PORT, SIPS_PORT};

pub const XDP_PASS: u32 = 2;

pub struct LoadedXdp {
    ebpf: Ebpf,
    counters: KernelCounters,
}

impl LoadedXdp {
    /// Loads the program with 5060 as a SIP port and 5061 as a TLS one.
    pub fn load() -> Self {
        crate::require_root();
        let mut ebpf = Ebpf::load(EBPF_OBJECT).expect("load the embedded object");
        {
            let mut ports: HashMap<_, u16, u8> =
                HashMap::try_from(ebpf.map_mut(SIP_PORTS).expect("SIP_PORTS")).expect("hash map");
            ports
                .insert(SIP_PORT, PortKind::Plain as u8, 0)
                .expect("insert");
            ports
                .insert(SIPS_PORT, PortKind::Tls as u8, 0)
                .expect("insert");
        }
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .expect("program")
            .try_into()
            .expect("xdp");
        program.load().expect("the verifier accepts the program");
        let counters = KernelCounters::take_from(&mut ebpf).expect("counter maps");
        Self { ebpf, counters }
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(XDP_PROGRAM)
            .expect("program")
            .try_into()
            .expect("xdp")
    }

    /// Runs the program once on `frame` and returns its verdict.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.run_repeat(frame, 1).0
    }

    /// Runs `repeat` times; returns the verdict and the kernel's mean time per run.
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> (u32, std::time::Duration) {
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let result = self.program().test_run(options).expect("BPF_PROG_TEST_RUN");
        (result.return_value, result.duration)
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.counters.read().expect("read counters")
    }
}
