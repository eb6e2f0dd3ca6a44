//! Reads a service's log (JSON lines, `LOG_FORMAT=json`) and groups its WARN and ERROR
//! lines by level, target and message (digits folded, so one message with varying
//! numbers is one group). Lines that are not JSON (a panic's text on stderr) count as
//! ERROR.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// Most characters kept of an example line.
const MAX_EXAMPLE_CHARS: usize = 400;

/// One group of like lines.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogFinding {
    pub level: String,
    pub target: String,
    /// The message with digit runs replaced by `#`.
    pub message: String,
    pub count: u64,
    /// The first such line as written.
    pub example: String,
}

/// What one log file held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogScan {
    pub lines: u64,
    pub bytes: u64,
    pub lines_by_level: BTreeMap<String, u64>,
    /// WARN and ERROR groups, most frequent first.
    pub findings: Vec<LogFinding>,
}

impl LogScan {
    pub fn read(path: &Path) -> LogScan {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        LogScan::scan(&text)
    }

    pub fn scan(text: &str) -> LogScan {
        let mut scan = LogScan {
            bytes: text.len() as u64,
            ..LogScan::default()
        };
        let mut groups: BTreeMap<(String, String, String), LogFinding> = BTreeMap::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            scan.lines += 1;
            let (level, target, message) = match serde_json::from_str::<Value>(line) {
                Ok(value) => {
                    let message = value["message"]
                        .as_str()
                        .or_else(|| value["fields"]["message"].as_str())
                        .unwrap_or_default();
                    (
                        value["level"].as_str().unwrap_or("?").to_uppercase(),
                        value["target"].as_str().unwrap_or_default().to_owned(),
                        message.to_owned(),
                    )
                }
                Err(_) => ("ERROR".to_owned(), "(not JSON)".to_owned(), line.to_owned()),
            };
            *scan.lines_by_level.entry(level.clone()).or_default() += 1;
            if level != "WARN" && level != "ERROR" {
                continue;
            }
            let message = fold_digits(&message);
            groups
                .entry((level.clone(), target.clone(), message.clone()))
                .or_insert_with(|| LogFinding {
                    level,
                    target,
                    message,
                    count: 0,
                    example: line.chars().take(MAX_EXAMPLE_CHARS).collect(),
                })
                .count += 1;
        }
        scan.findings = groups.into_values().collect();
        scan.findings
            .sort_by_key(|finding| std::cmp::Reverse(finding.count));
        scan
    }

    /// WARN + ERROR lines.
    pub fn problem_lines(&self) -> u64 {
        self.findings.iter().map(|finding| finding.count).sum()
    }
}

fn fold_digits(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    let mut in_digits = false;
    for character in text.chars() {
        if character.is_ascii_digit() {
            if !in_digits {
                folded.push('#');
            }
            in_digits = true;
        } else {
            folded.push(character);
            in_digits = false;
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_warnings_of_both_services_formats() {
        let log = concat!(
            r#"{"timestamp":"t","level":"INFO","message":"listening","target":"privatehub_app"}"#,
            "\n",
            r#"{"timestamp":"t","level":"WARN","message":"peer 12 dropped","target":"app::chat"}"#,
            "\n",
            r#"{"timestamp":"t","level":"WARN","fields":{"message":"peer 7 dropped"},"target":"app::chat"}"#,
            "\n",
            "thread 'main' panicked at src/main.rs:1:1\n",
        );
        let scan = LogScan::scan(log);
        assert_eq!(scan.lines, 4);
        assert_eq!(scan.lines_by_level["INFO"], 1);
        assert_eq!(scan.problem_lines(), 3);
        assert_eq!(scan.findings[0].message, "peer # dropped");
        assert_eq!(scan.findings[0].count, 2);
        assert!(scan.findings[0].example.contains("peer 12"));
        assert_eq!(scan.findings[1].target, "(not JSON)");
    }
}
