//! The subcommands: `run` is the agent; `flows` asks a running one; `check`
//! is the preflight; `detach` removes what `run --keep-attached` left.

pub mod check;
pub mod detach;
pub mod flows;
pub mod run;
