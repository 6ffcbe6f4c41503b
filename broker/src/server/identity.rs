//! Which broker a data directory belongs to, and its incarnation: a value made when the
//! directory is first used. A broker whose incarnation changed lost its data, and the
//! controller treats it as out of sync everywhere.

use std::path::Path;

use super::BrokerError;
use crate::log::write_atomically;

const FILE: &str = "meta.properties";

/// The data directory's incarnation, made (and recorded) on first use. Refuses a directory
/// that belongs to another broker id.
pub fn incarnation(data_dir: &Path, broker_id: i32) -> Result<String, BrokerError> {
    let path = data_dir.join(FILE);
    let io = |what: &str| {
        let what = format!("{}: {what}", path.display());
        move |source| BrokerError::Io { what, source }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
            };
            let owner: Option<i32> = field("broker.id=").and_then(|v| v.parse().ok());
            if owner != Some(broker_id) {
                return Err(BrokerError::Config(format!(
                    "data directory {} belongs to broker {}, not broker {broker_id}; give each broker its own --data-dir",
                    data_dir.display(),
                    owner.map_or("?".to_string(), |o| o.to_string())
                )));
            }
            field("incarnation=")
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    BrokerError::Config(format!(
                        "{} has no incarnation line; remove the file to start fresh",
                        path.display()
                    ))
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let incarnation = uuid::Uuid::new_v4().to_string();
            write_atomically(
                &path,
                format!("broker.id={broker_id}\nincarnation={incarnation}\n").as_bytes(),
            )
            .map_err(io("cannot write it"))?;
            Ok(incarnation)
        }
        Err(e) => Err(io("cannot read it")(e)),
    }
}

/// Records that `data_dir` holds the logs of cluster `cluster_id`, the first time a
/// controller names it; refuses a controller of another cluster, whose metadata would
/// delete every log here as belonging to topics that no longer exist (a Cluster deleted
/// and created again under the same name, its volumes kept). An empty id (metadata from
/// before cluster ids) is not checked.
pub fn claim_cluster(data_dir: &Path, cluster_id: &str) -> Result<(), BrokerError> {
    if cluster_id.is_empty() {
        return Ok(());
    }
    let path = data_dir.join(FILE);
    let io = |what: &str| {
        let what = format!("{}: {what}", path.display());
        move |source| BrokerError::Io { what, source }
    };
    let text = std::fs::read_to_string(&path).map_err(io("cannot read it"))?;
    let claimed = text
        .lines()
        .find_map(|l| l.strip_prefix("cluster.id="))
        .map(str::trim);
    match claimed {
        Some(id) if id == cluster_id => Ok(()),
        Some(id) => Err(BrokerError::Config(format!(
            "data directory {} holds the logs of cluster {id}, but the controller serves cluster {cluster_id} \
             (a cluster created again under the same name?); nothing in it was touched. Delete the \
             directory (on Kubernetes, the broker's PersistentVolumeClaim) to start this broker \
             empty, or point it at the controller of cluster {id}",
            data_dir.display()
        ))),
        None => {
            let mut text = text;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("cluster.id={cluster_id}\n"));
            write_atomically(&path, text.as_bytes()).map_err(io("cannot write it"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_its_incarnation_and_refuses_another_broker() {
        let dir = tempfile::tempdir().unwrap();
        let first = incarnation(dir.path(), 3).unwrap();
        assert_eq!(incarnation(dir.path(), 3).unwrap(), first);
        let err = incarnation(dir.path(), 4).unwrap_err();
        assert!(
            err.to_string()
                .contains("belongs to broker 3, not broker 4"),
            "{err}"
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(incarnation(other.path(), 3).unwrap(), first);
    }

    #[test]
    fn a_directory_is_claimed_by_the_first_cluster_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let first = incarnation(dir.path(), 1).unwrap();
        claim_cluster(dir.path(), "").unwrap();
        claim_cluster(dir.path(), "c2tVmkJ7Q6GfcZbQvY3k2A").unwrap();
        claim_cluster(dir.path(), "c2tVmkJ7Q6GfcZbQvY3k2A").unwrap();
        let err = claim_cluster(dir.path(), "ZZZZmkJ7Q6GfcZbQvY3k2A").unwrap_err();
        assert!(
            err.to_string().contains(
                "holds the logs of cluster c2tVmkJ7Q6GfcZbQvY3k2A, but the controller serves cluster ZZZZmkJ7Q6GfcZbQvY3k2A"
            ),
            "{err}"
        );
        assert_eq!(
            incarnation(dir.path(), 1).unwrap(),
            first,
            "the claim keeps the broker id and incarnation"
        );
    }
}
