//! The deployment files in `deploy/`, checked with the real tools that read them.

use crate::common::{prerequisite_missing, repo_root, wsecho};
use std::fs;
use std::process::Command;

/// `deploy/wsecho.service` passes `systemd-analyze verify` (it runs without a running
/// systemd), with only the binary's path changed to the one just built.
#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        prerequisite_missing("systemd-analyze (apt-get install systemd)");
        return;
    }
    let unit = fs::read_to_string(repo_root().join("deploy/wsecho.service")).expect("read unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/wsecho serve"),
        "{unit}"
    );
    for needed in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "Environment=GLIBC_TUNABLES=glibc.malloc.tcache_count=0",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
    let dir = std::env::temp_dir().join(format!("wsecho-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("wsecho.service");
    let bin = fs::canonicalize(wsecho()).expect("wsecho binary");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/wsecho", &bin.to_string_lossy()),
    )
    .expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let _ = fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        !said.contains("wsecho.service"),
        "systemd-analyze has words about the unit:\n{said}"
    );
}
