//! A topic's configuration overrides as data directories kept them before the node's metadata
//! held them: `<data_dir>/<topic>/.config.toml`, a table of Kafka config names to string values.
//! Read once, when such a directory is adopted. Only the keys a topic overrides are stored, so a change
//! of the broker's defaults reaches every topic that did not override it (Kafka semantics).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a topic's overrides live.
pub fn overrides_path(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join(topic).join(".config.toml")
}

/// Reads a topic's overrides; a topic without the file has none.
pub fn read_overrides(data_dir: &Path, topic: &str) -> Result<BTreeMap<String, String>, String> {
    let path = overrides_path(data_dir, topic);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| format!("{path:?}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{path:?}: {e}")),
    }
}

/// Writes a topic's overrides durably and atomically (temporary file synced, renamed over the
/// old one, directory synced). Values must already be validated: they are written as plain
/// TOML strings.
pub fn write_overrides(
    data_dir: &Path,
    topic: &str,
    overrides: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let path = overrides_path(data_dir, topic);
    let dir = path.parent().expect("a topic directory");
    std::fs::create_dir_all(dir)?;
    let mut text =
        String::from("# Per-topic overrides of the broker's log settings (Kafka names).\n");
    for (name, value) in overrides {
        assert!(
            value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "override {name} = {value:?} was not validated"
        );
        text.push_str(&format!("\"{name}\" = \"{value}\"\n"));
    }
    // Atomically: a crash leaves the old overrides or the new ones, never half a file.
    let tmp = path.with_extension("toml.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}
