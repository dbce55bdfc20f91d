//! The `waypost` debug command: `resolve TARGET` prints a target's endpoints, `watch TARGET`
//! prints every change. See [`waypost_examples::cli`].
//!
//! ```text
//! cargo run -p waypost-examples --example waypost -- resolve dns:///example.com:443
//! ```

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut out = std::io::stdout();
    match waypost_examples::cli::run(std::env::args_os().skip(1), &mut out).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}
