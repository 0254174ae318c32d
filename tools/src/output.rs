//! How admin commands print what they find: columns for people, or one JSON document for
//! scripts (`--output json`).

use clap::ValueEnum;
use serde::Serialize;

/// How results are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Columns for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Prints `value` with `text`, or as JSON.
pub fn print<T: Serialize>(output: Output, value: &T, text: fn(&T)) -> Result<(), String> {
    match output {
        Output::Text => text(value),
        Output::Json => println!(
            "{}",
            serde_json::to_string(value).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

/// [`print`] where the caller cannot return its error (JSON of plain data does not fail; if
/// it did, it says so on standard error).
pub fn show<T: Serialize>(output: Output, value: &T, text: fn(&T)) {
    if let Err(e) = print(output, value, text) {
        eprintln!("oxbow: printing the result: {e}");
    }
}
