//! A Dockerfile read into its stages and instructions, for checking the images without
//! building them (`e2e/tests/tooling.rs`).

/// One instruction: its keyword in capitals and the rest of it, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// A build stage: `FROM image [AS name]` and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub image: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Reads `text`; comment lines (also inside continued instructions) are left out.
    pub fn parse(text: &str) -> Self {
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part.trim());
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    instructions.push(std::mem::take(&mut current));
                }
            }
        }
        if !current.trim().is_empty() {
            instructions.push(current);
        }
        let mut stages: Vec<Stage> = Vec::new();
        for text in instructions {
            let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((&text, ""));
            let instruction = Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
            };
            if instruction.keyword == "FROM" {
                let words: Vec<&str> = instruction
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                stages.push(Stage {
                    image: words.first().unwrap_or(&"").to_string(),
                    name,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(instruction);
            }
        }
        Self { stages }
    }

    /// The stage the image is made of.
    pub fn final_stage(&self) -> Option<&Stage> {
        self.stages.last()
    }

    /// Every instruction of every stage.
    pub fn instructions(&self) -> impl Iterator<Item = &Instruction> {
        self.stages.iter().flat_map(|s| s.instructions.iter())
    }
}

impl Stage {
    /// The arguments of each instruction with this keyword, in order.
    pub fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    /// The user the image runs as: the last USER.
    pub fn user(&self) -> Option<&str> {
        self.all("USER").last().copied()
    }

    /// The last ENTRYPOINT, in exec (JSON array) form; None when absent or in shell form.
    pub fn entrypoint(&self) -> Option<Vec<String>> {
        serde_json::from_str(self.all("ENTRYPOINT").last()?).ok()
    }

    /// The last CMD, in exec form.
    pub fn cmd(&self) -> Option<Vec<String>> {
        serde_json::from_str(self.all("CMD").last()?).ok()
    }
}

/// The numeric user and group of `USER uid[:gid]`; None when either is a name.
pub fn numeric_user(user: &str) -> Option<(i64, Option<i64>)> {
    match user.split_once(':') {
        Some((uid, gid)) => Some((uid.parse().ok()?, Some(gid.parse().ok()?))),
        None => Some((user.parse().ok()?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
RUN --mount=type=cache,target=/x \
    # a comment inside
    cargo build --release \
 && cp a /out/

FROM --platform=linux/amd64 gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
user 65532:65532
ENTRYPOINT ["/usr/local/bin/tool"]
CMD ["run"]
"#;

    #[test]
    fn stages_instructions_and_continuations_are_read() {
        let file = Dockerfile::parse(TEXT);
        assert_eq!(file.stages.len(), 2);
        assert_eq!(file.stages[0].image, "rust:1.95-bookworm");
        assert_eq!(file.stages[0].name.as_deref(), Some("build"));
        assert_eq!(
            file.stages[0].all("RUN"),
            vec!["--mount=type=cache,target=/x cargo build --release && cp a /out/"]
        );
        let last = file.final_stage().unwrap();
        assert_eq!(last.image, "gcr.io/distroless/cc-debian12:nonroot");
        assert_eq!(last.user(), Some("65532:65532"));
        assert_eq!(last.entrypoint().unwrap(), vec!["/usr/local/bin/tool"]);
        assert_eq!(last.cmd().unwrap(), vec!["run"]);
        assert_eq!(file.instructions().count(), 5);
    }

    #[test]
    fn only_numeric_users_count() {
        assert_eq!(numeric_user("65532:65532"), Some((65532, Some(65532))));
        assert_eq!(numeric_user("65532"), Some((65532, None)));
        assert_eq!(numeric_user("nonroot"), None);
        assert_eq!(numeric_user("65532:nonroot"), None);
    }
}
