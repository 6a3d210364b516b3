//! What can go wrong loading the kernel programs, attaching them and taking
//! their maps, with every cause kept as a source. `Failure` turns it into the
//! one sentence the CLI prints; the causes' text is part of that sentence,
//! since the operator sees nothing else.

use aya::programs::ProgramError;
use monitor_common::maps::MAX_SIP_PORTS;

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this sipflow binary was built without its kernel programs (AYA_BUILD_SKIP); rebuild it with `cargo build`"
    )]
    NoKernelObject,
    #[error("{kind} {name} is missing from the kernel object")]
    Missing { kind: &'static str, name: String },
    #[error("program {0} has an unexpected type")]
    UnexpectedType(String),
    #[error("at most {MAX_SIP_PORTS} SIP ports can be monitored")]
    TooManyPorts,
    /// The verifier refused a program: the last lines of its log say why
    /// (the whole log is logged at debug level).
    #[error("{program}: {}", verifier_reason(source))]
    Verifier {
        program: String,
        #[source]
        source: Box<ProgramError>,
    },
    /// A step failed: what was being done, and why.
    #[error("{step}: {}", error_chain(source.as_ref()))]
    Step {
        step: String,
        #[source]
        source: Cause,
    },
}

impl KernelError {
    pub fn missing_program(name: &str) -> Self {
        Self::Missing { kind: "program", name: name.to_string() }
    }

    pub fn missing_map(name: &str) -> Self {
        Self::Missing { kind: "map", name: name.to_string() }
    }

    /// The verifier's refusal of `program`, its whole log at debug level.
    pub fn verifier(program: &str) -> impl FnOnce(ProgramError) -> Self {
        let program = program.to_string();
        move |source| {
            tracing::debug!(log = %error_chain(&source), "the verifier's full answer");
            Self::Verifier { program, source: Box::new(source) }
        }
    }
}

/// `map_err(at("what was being done"))`: the error as the cause of a step.
pub fn at<E: std::error::Error + Send + Sync + 'static>(step: impl Into<String>) -> impl FnOnce(E) -> KernelError {
    let step = step.into();
    move |source| KernelError::Step { step, source: Box::new(source) }
}

/// The last lines of a verifier log: where it gave up and why.
fn verifier_reason(error: &ProgramError) -> String {
    let text = error_chain(error);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" ")
}

/// An error and its causes, as one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
