//! Which namespace a `kubernetes:///` target means when it names none.
//!
//! `kubernetes:///api:8080` is written by an application that wants the Service `api` next to
//! itself, the way `http://api:8080` resolves through the pod's DNS search path. The namespace is
//! therefore, in order:
//!
//! 1. the one the target names (`kubernetes:///api.payments:8080`, `kubernetes://payments/api`);
//! 2. the pod's own namespace, from the service-account file Kubernetes mounts into every pod
//!    ([`SERVICE_ACCOUNT_NAMESPACE_FILE`]);
//! 3. `default`, as `kubectl` uses outside a cluster.
//!
//! The namespace of a kubeconfig context is deliberately not used: the same target string would
//! then mean different Services on a laptop and in the cluster. Name the namespace in the target
//! when it matters outside a cluster.

use std::fmt;
use std::path::Path;

/// The file Kubernetes mounts into every pod with the pod's namespace.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace used when neither the target nor the pod says one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where a source's namespace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NamespaceOrigin {
    /// The target named it.
    Target,
    /// The pod's service-account namespace file.
    ServiceAccount,
    /// Neither: [`DEFAULT_NAMESPACE`].
    Default,
}

impl fmt::Display for NamespaceOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamespaceOrigin::Target => "named by the target",
            NamespaceOrigin::ServiceAccount => "the pod's namespace",
            NamespaceOrigin::Default => "the default namespace",
        })
    }
}

/// Resolves the namespace: the target's, else the one in `namespace_file`, else `default`.
///
/// A file that is missing, unreadable, empty or not holding a valid namespace name is passed
/// over (a warning says why, unless the file simply does not exist, as outside a cluster).
pub(crate) fn resolve(target: Option<&str>, namespace_file: &Path) -> (String, NamespaceOrigin) {
    if let Some(namespace) = target {
        return (namespace.to_owned(), NamespaceOrigin::Target);
    }
    match std::fs::read_to_string(namespace_file) {
        Ok(contents) => match from_file_contents(&contents) {
            Some(namespace) => return (namespace.to_owned(), NamespaceOrigin::ServiceAccount),
            None => tracing::warn!(
                target: "waypost::discovery",
                file = %namespace_file.display(),
                contents = %contents.trim(),
                "the namespace file does not hold a namespace name; using `default`"
            ),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(
            target: "waypost::discovery",
            file = %namespace_file.display(),
            error = %error,
            "cannot read the namespace file; using `default`"
        ),
    }
    (DEFAULT_NAMESPACE.to_owned(), NamespaceOrigin::Default)
}

/// The namespace in a service-account namespace file: its trimmed contents, when they are a
/// DNS-1123 label (what Kubernetes allows as a namespace name).
pub(crate) fn from_file_contents(contents: &str) -> Option<&str> {
    let name = contents.trim();
    is_dns1123_label(name).then_some(name)
}

fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_namespace_wins() {
        let (namespace, origin) = resolve(Some("payments"), Path::new("/nonexistent/namespace"));
        assert_eq!(namespace, "payments");
        assert_eq!(origin, NamespaceOrigin::Target);
    }

    #[test]
    fn no_file_means_default() {
        let (namespace, origin) = resolve(None, Path::new("/nonexistent/waypost/namespace"));
        assert_eq!(namespace, "default");
        assert_eq!(origin, NamespaceOrigin::Default);
    }

    #[test]
    fn file_contents_are_trimmed_and_validated() {
        assert_eq!(from_file_contents("team-a\n"), Some("team-a"));
        assert_eq!(from_file_contents("  team-a  "), Some("team-a"));
        assert_eq!(from_file_contents(""), None);
        assert_eq!(from_file_contents("\n"), None);
        assert_eq!(from_file_contents("Team-A"), None);
        assert_eq!(from_file_contents("-team"), None);
        assert_eq!(from_file_contents("team-"), None);
        assert_eq!(from_file_contents("team/a"), None);
        assert_eq!(from_file_contents(&"a".repeat(64)), None);
        assert_eq!(from_file_contents(&"a".repeat(63)), Some(&*"a".repeat(63)));
    }

    #[test]
    fn the_pod_namespace_file_is_read() {
        let dir = std::env::temp_dir().join(format!("waypost-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("namespace");
        std::fs::write(&file, "team-a\n").unwrap();
        assert_eq!(
            resolve(None, &file),
            ("team-a".to_owned(), NamespaceOrigin::ServiceAccount)
        );
        std::fs::write(&file, "Not A Namespace").unwrap();
        assert_eq!(
            resolve(None, &file),
            ("default".to_owned(), NamespaceOrigin::Default)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
