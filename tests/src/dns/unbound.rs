//! A real DNS server from Debian for the tests: unbound, started on a loopback port with a
//! static local zone whose records change while it runs.
//!
//! Why unbound: its `unbound-control local_data` / `local_data_remove` commands change records
//! of a running server at once, with the TTLs the test chooses, through a control socket that
//! needs no certificates when it is a Unix socket. (dnsmasq can re-read host files but keeps one
//! TTL for all of them and cannot change SRV records without a restart; knot and bind9 need
//! zone files and reloads.) A `local-zone` of type `static` answers NXDOMAIN for unknown names
//! and NODATA for known names without the asked type, like an authoritative server.
//!
//! [`Unbound::require`] finds the binaries (`unbound` and `unbound-control` on `PATH` or in
//! `/usr/sbin`). When they are missing it panics with what to install: a test that needs a real
//! DNS server fails without one instead of passing as a skip. `.ci/test`, the README's test
//! command, installs unbound first.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The zone the server is authoritative for.
pub const ZONE: &str = "waypost.test.";

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// The two binaries the harness needs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The server.
    pub unbound: PathBuf,
    /// Its control tool.
    pub control: PathBuf,
}

impl Binaries {
    /// Finds `unbound` and `unbound-control`, or says what is missing.
    pub fn find() -> Result<Binaries, String> {
        let unbound = find_binary("unbound")
            .ok_or("`unbound` is not installed (Debian package `unbound`)")?;
        let control = find_binary("unbound-control")
            .ok_or("`unbound-control` is not installed (Debian package `unbound`)")?;
        Ok(Binaries { unbound, control })
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// A running unbound; dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Unbound {
    binaries: Binaries,
    directory: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The records of the zone, by owner name, as zone-file lines; kept so that a restart
    /// serves the same data.
    records: BTreeMap<String, Vec<String>>,
}

impl Unbound {
    /// The binaries, or a panic that names the calling test and what is missing: a test that
    /// needs unbound never passes without it (`.ci/test` installs it).
    pub fn require(test: &str) -> Binaries {
        match Binaries::find() {
            Ok(binaries) => binaries,
            Err(reason) => {
                panic!("{test}: {reason}; `.ci/test` installs it (or `apt-get install unbound`)")
            }
        }
    }

    /// Starts unbound on a free 127.0.0.1 port with the records given as zone-file lines
    /// (`"api.waypost.test. 1 IN A 127.0.0.2"`), and waits until it answers its control socket.
    pub async fn start(binaries: Binaries, records: &[&str]) -> io::Result<Unbound> {
        let directory = std::env::temp_dir().join(format!(
            "waypost-unbound-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&directory)?;
        let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for record in records {
            table
                .entry(owner(record))
                .or_default()
                .push((*record).to_owned());
        }
        let mut unbound = Unbound {
            binaries,
            directory,
            port: 0,
            child: None,
            records: table,
        };
        unbound.launch().await?;
        Ok(unbound)
    }

    /// The address clients send queries to.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Replaces every record of `name` with `records` (zone-file lines for that name; none
    /// makes the name answer NXDOMAIN).
    pub async fn set_records(&mut self, name: &str, records: &[&str]) -> io::Result<()> {
        let name = fqdn(name);
        if self.records.contains_key(&name) {
            self.control(&["local_data_remove", &name], None).await?;
        }
        if records.is_empty() {
            self.records.remove(&name);
            return Ok(());
        }
        let lines: Vec<String> = records.iter().map(|record| (*record).to_owned()).collect();
        let mut input = lines.join("\n");
        input.push('\n');
        self.control(&["local_datas"], Some(&input)).await?;
        self.records.insert(name, lines);
        Ok(())
    }

    /// Kills the server; queries to its port are then refused. The records are kept.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the current records.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await?;
        let mut last_error = None;
        for _ in 0..20 {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    last_error = Some(error);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("unbound did not start again")))
    }

    async fn launch(&mut self) -> io::Result<()> {
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("unbound did not start")))
    }

    fn config_path(&self) -> PathBuf {
        self.directory.join("unbound.conf")
    }

    fn write_config(&self) -> io::Result<()> {
        let mut config = String::new();
        let directory = self.directory.display();
        let port = self.port;
        config.push_str(&format!(
            "server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    username: \"\"
    chroot: \"\"
    directory: \"{directory}\"
    pidfile: \"\"
    use-syslog: no
    logfile: \"\"
    verbosity: 0
    num-threads: 1
    outgoing-range: 32
    so-reuseport: no
    do-ip6: no
    module-config: \"iterator\"
    access-control: 127.0.0.0/8 allow
    local-zone: \"{ZONE}\" static
    local-data: \"{ZONE} 3600 IN SOA ns.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 1\"
"
        ));
        for record in self.records.values().flatten() {
            config.push_str(&format!("    local-data: \"{record}\"\n"));
        }
        config.push_str(&format!(
            "remote-control:
    control-enable: yes
    control-interface: {}
    control-use-cert: no
",
            self.directory.join("control.sock").display()
        ));
        std::fs::write(self.config_path(), config)
    }

    async fn spawn_and_wait(&mut self) -> io::Result<()> {
        self.write_config()?;
        let log = std::fs::File::create(self.directory.join("unbound.log"))?;
        let mut child = Command::new(&self.binaries.unbound)
            .arg("-d")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        for _ in 0..200 {
            if let Some(status) = child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.directory.join("unbound.log")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "unbound exited with {status}: {log}"
                )));
            }
            if self.control(&["status"], None).await.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill().await;
        Err(io::Error::other(
            "unbound did not answer its control socket",
        ))
    }

    async fn control(&self, arguments: &[&str], input: Option<&str>) -> io::Result<String> {
        let mut command = Command::new(&self.binaries.control);
        command
            .arg("-c")
            .arg(self.config_path())
            .args(arguments)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(input.as_bytes()).await?;
            drop(stdin);
        }
        let output = child.wait_with_output().await?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && !stdout.starts_with("error") {
            Ok(stdout)
        } else {
            Err(io::Error::other(format!(
                "unbound-control {}: {}{}",
                arguments.join(" "),
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Where the server keeps its configuration and log.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn owner(record: &str) -> String {
    fqdn(record.split_whitespace().next().unwrap_or_default())
}

fn fqdn(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> io::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no port free for both UDP and TCP"))
}
