//! `oxbow storage torture` as a user runs it: simulated power losses and real SIGKILLs of a
//! writer process side by side for a set time, with zero invariant violations. CI runs it for
//! 30 s; the long run (10 minutes) is labelled `ignored`:
//! `cargo nextest run -p oxbow-tools --test storage_torture --run-ignored only`.

use std::process::Command;

fn torture(duration: &str) {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["storage", "torture", "--duration", duration, "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("no violations"), "{stdout}");
    let count = |after: &str| -> u64 {
        let at = stdout
            .find(after)
            .unwrap_or_else(|| panic!("no {after:?} in {stdout}"));
        let digits: String = stdout[at + after.len()..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no count after {after:?} in {stdout}"))
    };
    // Enough of each kind of crash that the run tested something.
    assert!(count("simulated power losses:") >= 100, "{stdout}");
    assert!(count("real SIGKILLs:") >= 10, "{stdout}");
    assert!(count("writers killed,") >= 1_000, "acks: {stdout}");
    // A clean run leaves nothing behind.
    assert!(!data.path().join("oxbow-torture").exists());
}

#[test]
fn thirty_seconds_of_torture_find_no_violation() {
    torture("30s");
}

#[test]
#[ignore = "the long run: 10 minutes"]
fn ten_minutes_of_torture_find_no_violation() {
    torture("10m");
}

#[test]
fn a_bad_duration_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["storage", "torture", "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
}
