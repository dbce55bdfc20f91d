//! What the benchmarks that run a server in a child process share (`fleet`, `api_server`):
//! starting the child, the line it announces itself with, and a client of the fake API server.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use waypost_discovery::source::kubernetes::kube;

/// The child process: the lines to and from it, and the line it printed first (the fake API
/// server's kubeconfig, or a server's address).
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) channel: Channel,
    pub(crate) announced: String,
}

/// The child's stdin for commands and its stdout for answers, a line each.
pub(crate) struct Channel {
    commands: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Channel {
    /// Sends one command line.
    pub(crate) fn send(&mut self, line: &str) {
        writeln!(self.commands, "{line}").expect("the child reads commands");
    }

    /// The next answer line.
    pub(crate) fn reply(&mut self) -> String {
        self.lines.next().expect("an answer").expect("readable")
    }
}

/// Runs this benchmark's own binary again with `var` set, as the server.
pub(crate) fn start(var: &str) -> ServerProcess {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args().skip(1))
        .env(var, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process starts");
    let commands = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let announced = lines
        .next()
        .expect("the server's first line")
        .expect("readable")
        .replace("\\n", "\n");
    ServerProcess {
        child,
        channel: Channel { commands, lines },
        announced,
    }
}

/// The server's runtime in the child: one worker, so the server keeps to one core.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Prints what the parent needs to reach the server (a kubeconfig, an address) on one line: the
/// child's first output.
pub(crate) fn announce(text: &str) {
    println!("{}", text.replace('\n', "\\n"));
}

/// A client of the server behind `kubeconfig`.
pub(crate) async fn client(kubeconfig: &str) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(kubeconfig).expect("the kubeconfig parses"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kube accepts the kubeconfig");
    kube::Client::try_from(config).expect("a client")
}
