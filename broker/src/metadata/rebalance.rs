//! A rebalance as the controller persists it and reports it: the partition moves still to
//! make and how far it has come. How a move is carried out is the controller's
//! (`controller/reassignment.rs`).

use serde::{Deserialize, Serialize};

/// One partition's move, as persisted in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub topic: String,
    pub partition: u32,
    /// The replicas before the move, preferred leader first.
    pub original: Vec<i32>,
    /// The replicas after it, preferred leader first.
    pub target: Vec<i32>,
    /// Whether the move has begun (counts against the concurrency limit).
    #[serde(default)]
    pub started: bool,
}

impl Move {
    /// Replicas the move adds: they copy the whole partition.
    pub fn added(&self) -> Vec<i32> {
        self.target
            .iter()
            .copied()
            .filter(|r| !self.original.contains(r))
            .collect()
    }
}

/// A rebalance in progress, as persisted in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Moves not finished yet, in the order they start.
    pub moves: Vec<Move>,
    /// Moves in the plan when it was made.
    pub total: usize,
    /// Moves that finished.
    pub done: usize,
    /// Moves rolled back because a target broker went away.
    #[serde(default)]
    pub rolled_back: usize,
    /// At most this many moves at once.
    pub max_concurrent: usize,
    /// What the new replicas of the moves not done yet still have to copy, from the replica
    /// sizes brokers report; worked out when the plan is asked for, not stored.
    #[serde(default)]
    pub bytes_remaining: u64,
}

impl Plan {
    /// "3 of 8 moves done, 1.2 GiB to copy".
    pub fn progress(&self) -> String {
        format!(
            "{} of {} moves done, {} to copy",
            self.done,
            self.total,
            human_bytes(self.bytes_remaining)
        )
    }
}

/// Bytes for people: "512 B", "3.4 MiB", "1.2 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
        assert_eq!(super::human_bytes(1 << 30), "1.0 GiB");
    }
}
