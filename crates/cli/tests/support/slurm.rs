//! A Slurm cluster of the test's own from `scripts/slurm.sh` (four nodes on
//! this machine), stopped — every daemon, every job — when dropped. Each
//! test file adds the queries it needs in an `impl Cluster` of its own.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    pub dir: PathBuf,
    _parent: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm.sh")
}

impl Cluster {
    /// Start one with `scripts/slurm.sh start` and these of its variables
    /// (`MAYFLY_SLURM_PORT_BASE`, which must differ between test files that
    /// may run at once, `MAYFLY_SLURM_NETNS`, `MAYFLY_SLURM_HIDE`, …).
    pub fn start(settings: &[(&str, &OsStr)]) -> Cluster {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("slurm");
        let status = Command::new("bash")
            .arg(script())
            .args(["start".as_ref(), dir.as_os_str()])
            .envs(settings.iter().copied())
            .status()
            .expect("bash runs scripts/slurm.sh");
        assert!(status.success(), "scripts/slurm.sh start failed (needs root and slurm-wlm; see scripts/test.sh)");
        Cluster { dir, _parent: parent }
    }

    /// Its configuration file, for `SLURM_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    /// A Slurm command's output; it must succeed.
    pub fn command(&self, program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).env("SLURM_CONF", self.conf()).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["stop".as_ref(), self.dir.as_os_str()]).status();
    }
}
