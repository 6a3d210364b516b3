//! The `sipflow` binary: parse the command line, run, and turn any failure
//! into one sentence and a non-zero exit.

use clap::Parser;
use sipflow::{
    cli::{Cli, Command, LogFormat},
    failure::Failure,
    flows_command, run,
};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Flows(args) => flows_command::flows(&args),
        Command::Run(args) => {
            init_logging(args.log_format);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))
                .and_then(|rt| rt.block_on(run::run(args)))
        }
    };
    if let Err(failure) = result {
        eprintln!("sipflow: {failure}");
        std::process::exit(failure.exit_code());
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
