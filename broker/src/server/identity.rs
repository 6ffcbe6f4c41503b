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
}
