//! The kernel programs' rare events (aya-log: a segment's walk cut at its
//! bound), forwarded into the agent's own log under the target
//! `sipflow::kernel`, at the level the kernel gave them. They are debug
//! records: the kernel writes them only when the agent's log would show them
//! (`SIPFLOW_LOG=info,sipflow::kernel=debug`), so that a storm of pipelined
//! REGISTERs does not fill a ring with lines nobody reads; the counters
//! (`sipflow_kernel_*`) count every such event either way.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;
use tracing::warn;

use crate::kernel::error::{KernelError, at};

const TARGET: &str = "sipflow::kernel";

/// The most verbose level the kernel should write (aya-log's numbering,
/// error 1 to trace 5), from what the agent's log shows for `sipflow::kernel`.
pub fn level() -> u8 {
    use tracing::Level;
    [(Level::TRACE, 5), (Level::DEBUG, 4), (Level::INFO, 3), (Level::WARN, 2)]
        .into_iter()
        .find(|(level, _)| enabled(*level))
        .map_or(1, |(_, number)| number)
}

fn enabled(level: tracing::Level) -> bool {
    match level {
        tracing::Level::TRACE => tracing::enabled!(target: TARGET, tracing::Level::TRACE),
        tracing::Level::DEBUG => tracing::enabled!(target: TARGET, tracing::Level::DEBUG),
        tracing::Level::INFO => tracing::enabled!(target: TARGET, tracing::Level::INFO),
        tracing::Level::WARN => tracing::enabled!(target: TARGET, tracing::Level::WARN),
        tracing::Level::ERROR => tracing::enabled!(target: TARGET, tracing::Level::ERROR),
    }
}

/// One interface's kernel log, read as records arrive.
pub struct KernelLog {
    logger: AsyncFd<EbpfLogger<Forward>>,
}

impl KernelLog {
    pub fn take_from(ebpf: &mut Ebpf, iface: &str) -> Result<Self, KernelError> {
        let forward = Forward { iface: iface.to_string() };
        let logger = EbpfLogger::init_with_logger(ebpf, forward).map_err(at("the kernel's log ring"))?;
        // SAFETY: the logger owns its ring's fd and keeps it open while the AsyncFd holds it.
        let logger = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(at("polling the kernel's log ring"))?;
        Ok(Self { logger })
    }

    /// Forwards records until the ring cannot be polled any more.
    pub async fn forward(mut self) {
        loop {
            match self.logger.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    warn!(error = %e, "the kernel's log can no longer be read");
                    return;
                }
            }
        }
    }
}

/// A `log::Log` that hands each kernel record to tracing.
struct Forward {
    iface: String,
}

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let (iface, message) = (&self.iface, record.args());
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, iface, "{message}"),
            log::Level::Warn => tracing::warn!(target: TARGET, iface, "{message}"),
            log::Level::Info => tracing::info!(target: TARGET, iface, "{message}"),
            log::Level::Debug => tracing::debug!(target: TARGET, iface, "{message}"),
            log::Level::Trace => tracing::trace!(target: TARGET, iface, "{message}"),
        }
    }

    fn flush(&self) {}
}
