//! `darwin-cri-monitor BUNDLE` (or `--wait`, started ahead, the bundle then read from stdin):
//! the per-container monitor (see `runtime::monitor`), as a binary
//! of its own. It links only the monitor's code (no async runtime, gRPC, TLS or argument
//! parser), so each running container pays for a few hundred KiB of pages rather than the
//! server's. `darwin-cri` starts it from its own directory; install the two side by side.

fn main() {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(arg), None) if arg == "--version" => {
            println!(
                "darwin-cri-monitor {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                runtime::monitor::PROTOCOL
            );
        }
        (Some(arg), None) if arg == runtime::monitor::WAIT_ARG => {
            std::process::exit(runtime::monitor::run_waiting())
        }
        (Some(bundle), None) => {
            std::process::exit(runtime::monitor::run(std::path::Path::new(&bundle)))
        }
        _ => {
            eprintln!(
                "usage: darwin-cri-monitor BUNDLE\n\ndarwin-cri starts this for each container; \
                 it is not meant to be run by hand"
            );
            std::process::exit(2);
        }
    }
}
