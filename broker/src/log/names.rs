//! File names inside a partition directory. Every name is made and parsed here.

use std::path::{Path, PathBuf};

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `<dir>/<base offset, 20 digits>.<suffix>`
pub fn segment_file(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// The base offset and suffix of a segment file name, if it is one.
pub fn parse_segment_file(name: &str) -> Option<(i64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_twenty_digits_and_parse_back() {
        let path = segment_file(Path::new("/d"), 42, LOG_SUFFIX);
        assert_eq!(path, Path::new("/d/00000000000000000042.log"));
        assert_eq!(
            parse_segment_file("00000000000000000042.log"),
            Some((42, "log"))
        );
        assert_eq!(
            parse_segment_file("00000000000000000042.timeindex"),
            Some((42, "timeindex"))
        );
        assert_eq!(parse_segment_file("42.log"), None);
        assert_eq!(parse_segment_file("leader-epoch-checkpoint"), None);
    }
}
