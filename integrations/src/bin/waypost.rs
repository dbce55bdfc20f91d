//! The `waypost` command: `resolve TARGET`, `watch TARGET`, `status URL`. See
//! the `waypost::cli` module; install it from a clone with
//! `cargo install --path integrations --features cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut out = std::io::stdout();
    match waypost::cli::run(std::env::args_os().skip(1), &mut out).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}
