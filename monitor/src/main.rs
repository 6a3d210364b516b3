//! The `sipflow` binary: parse the command line, run, and turn any failure
//! into one sentence and a non-zero exit.

use std::{ffi::OsString, path::PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use sipflow::{
    cli::{Cli, Command, LogFormat},
    commands::{check, detach, flows, run},
    config,
    failure::Failure,
};

fn main() {
    let cli = parse_command_line();
    let result = match cli.command {
        Command::Flows(args) => flows::flows(&args),
        Command::Check(args) => check::check(&args),
        Command::Detach(args) => detach::detach(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sipflow", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpage { command } => manpage(command.as_deref()),
        Command::Run(args) => {
            init_logging(args.log_format);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))
                .and_then(|rt| rt.block_on(run::run(*args)))
        }
    };
    if let Err(failure) = result {
        eprintln!("sipflow: {failure}");
        std::process::exit(failure.exit_code());
    }
}

/// sipflow(1), or sipflow-COMMAND(1) for a subcommand.
fn manpage(command: Option<&str>) -> Result<(), Failure> {
    let top = Cli::command();
    let page = match command {
        None => top,
        Some(name) => {
            let sub = top
                .find_subcommand(name)
                .cloned()
                .ok_or_else(|| Failure::Usage(format!("`{name}` is no sipflow command; see `sipflow --help`")))?;
            // clap names take a `static str; a page name is made once per run.
            sub.name(&*Box::leak(format!("sipflow-{name}").into_boxed_str()))
        }
    };
    clap_mangen::Man::new(page)
        .render(&mut std::io::stdout())
        .map_err(|e| Failure::Runtime(format!("cannot write the man page: {e}")))
}

/// The command line, with the options of `run --config FILE` where the
/// command line has none of its own. Usage errors exit 2, as clap's do.
fn parse_command_line() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().try_get_matches_from(args.clone()).unwrap_or_else(|e| usage_error(e));
    if let Some(("run", run)) = matches.subcommand()
        && let Some(file) = run.get_one::<PathBuf>("config")
    {
        let given = |id: &str| run.value_source(id) == Some(ValueSource::CommandLine);
        match config::merge(file, args, given) {
            Ok(merged) => return Cli::try_parse_from(merged).unwrap_or_else(|e| usage_error(e)),
            Err(sentence) => {
                eprintln!("sipflow: {sentence}");
                std::process::exit(2);
            }
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e))
}

/// Help and version go out as clap writes them; a usage error as one line
/// (clap's first, which names the option and what is wrong), and exit 2.
fn usage_error(error: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let text = error.render().to_string();
    let first = text.lines().next().unwrap_or("invalid command line").trim_start_matches("error: ");
    eprintln!("sipflow: {first}; see `sipflow --help`");
    std::process::exit(2);
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
