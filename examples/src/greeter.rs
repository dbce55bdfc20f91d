//! The greeter: a tonic gRPC service and a client through a waypost channel, to copy into your
//! own service. The `greeter` example runs it from the command line.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use waypost_examples::greeter;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! tokio::spawn(greeter::serve(listener, "server-a".to_owned(), std::future::pending()));
//!
//! let channel = waypost::Builder::new("static:///127.0.0.1:50051")?.tonic_channel()?;
//! let server = greeter::say_hello(channel, "you").await?;
//! assert_eq!(server, "server-a");
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use tonic::{Request, Response, Status};

/// The code generated from `proto/greeter.proto`.
#[allow(missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("greeter.v1");
}

use proto::greeter_client::GreeterClient;
use proto::greeter_server::{Greeter, GreeterServer};
use proto::{HelloReply, HelloRequest};

/// The service: greets the caller and says who answered.
#[derive(Debug, Clone)]
pub struct Hello {
    name: String,
}

impl Hello {
    /// A greeter that answers as `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Hello { name: name.into() }
    }
}

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
            server: self.name.clone(),
        }))
    }
}

/// Serves the greeter and the standard health service (for readiness probes) on `listener`
/// until `shutdown` completes, then drains gracefully: calls in flight finish, clients get a
/// GOAWAY.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<GreeterServer<Hello>>().await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(GreeterServer::new(Hello::new(name)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

/// Calls `SayHello` once through `channel`; returns the name of the server that answered.
pub async fn say_hello(channel: waypost::tonic::Channel, name: &str) -> Result<String, Status> {
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest {
            name: name.to_owned(),
        })
        .await?;
    Ok(reply.into_inner().server)
}

/// The command line of the `greeter` example (and of the kind walkthrough's image).
#[derive(Debug, Parser)]
#[command(name = "greeter", about = "A tonic greeter balanced by waypost")]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The `greeter` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the greeter.
    Server {
        /// The address to listen on.
        #[arg(long, default_value = "0.0.0.0:50051")]
        listen: SocketAddr,
        /// The name to answer with; defaults to $POD_NAME, then the listen address.
        #[arg(long)]
        name: Option<String>,
        /// How long to keep serving after SIGTERM before draining, so that clients see the pod
        /// leave discovery first (Kubernetes' preStop delay does the same).
        #[arg(long, default_value = "0")]
        drain_delay_secs: u64,
    },
    /// Call the greeter through a waypost channel.
    Client {
        /// Where the servers are: dns:///host:port, kubernetes:///service.namespace:port, ...
        #[arg(long)]
        target: String,
        /// Calls to make (0: until interrupted).
        #[arg(long, default_value = "0")]
        count: u64,
        /// Concurrent callers.
        #[arg(long, default_value = "4")]
        concurrency: usize,
        /// Pause between a caller's calls, in milliseconds.
        #[arg(long, default_value = "10")]
        interval_ms: u64,
        /// Print the distribution this often, in seconds.
        #[arg(long, default_value = "5")]
        report_secs: u64,
    },
}
