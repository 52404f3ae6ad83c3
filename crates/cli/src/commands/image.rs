//! `mayfly image build`: a minimal worker image made from files on this
//! machine, for engines that cannot reach a registry (and for the tests).
//!
//! The image is a root file system assembled into a tar archive and imported
//! through the Docker API (no base image, no Dockerfile): the `mayfly`
//! binary at `/usr/local/bin/mayfly`, every `--include`d file or folder at
//! its own absolute host path (so a function's program resolves the same in
//! a container as on the host), the shared libraries `ldd` lists for every
//! dynamically linked program among them, an `/etc/passwd` and
//! `/etc/group` with the unprivileged user `mayfly` (uid 10001) the image
//! runs as, and an empty `/tmp`.
//!
//! The image carries the label `mayfly-image.fingerprint`: a SHA-256 over
//! every entry's path, size and modification time. Building again with
//! nothing changed finds the same fingerprint on the tag and imports nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mayfly_fleet::{CONTAINER_TMP, DockerProvisioner};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::output::Output;

/// The tag `mayfly image build` gives by default, and the image of a Docker job that names none.
pub const DEFAULT_TAG: &str = mayfly_host::coordinator::placement::DEFAULT_IMAGE;
/// Where the image keeps the `mayfly` binary.
pub const MAYFLY_PATH: &str = mayfly_host::coordinator::placement::MAYFLY_IN_IMAGE;
// Not under `mayfly.`: containers inherit image labels, and `mayfly.` labels are tags.
const FINGERPRINT_LABEL: &str = "mayfly-image.fingerprint";
const USER_ID: u32 = 10001;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a minimal worker image from files on this machine and import it into the local Docker engine.
    #[command(
        after_help = "Examples:\n  mayfly image build --include target/release/code-chart\n  mayfly image build --tag chart-worker:3 --include bin/ --include /opt/models/icd10.bin\n\nA Docker job runs `image` (default mayfly-worker:latest): see README, \"Running a job in Docker\"."
    )]
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image's name and tag.
    #[arg(long, default_value = DEFAULT_TAG)]
    pub tag: String,
    /// A file or folder to put into the image at its absolute path (repeatable):
    /// functions' programs and the data they read.
    #[arg(long = "include", value_name = "PATH")]
    pub include: Vec<PathBuf>,
}

pub async fn run(command: ImageCommand, output: Output) -> Result<()> {
    match command {
        ImageCommand::Build(args) => build(args, output).await,
    }
}

/// One file of the image: where it goes and where its bytes come from.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Absolute path inside the image.
    path: PathBuf,
    /// The host file (symbolic links followed).
    source: PathBuf,
}

async fn build(args: BuildArgs, output: Output) -> Result<()> {
    let mayfly = std::env::current_exe().context("cannot find the mayfly executable")?;
    let mut entries: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    entries.insert(PathBuf::from(MAYFLY_PATH), mayfly.clone());
    for include in &args.include {
        let absolute = std::path::absolute(include).with_context(|| format!("--include {}", include.display()))?;
        if absolute.starts_with(CONTAINER_TMP) {
            bail!(
                "--include {}: it is under {CONTAINER_TMP}, which every Mayfly container replaces with a private, empty scratch folder, so it would not be seen there; move it elsewhere (e.g. under /opt or /var/tmp) and include it from there",
                include.display()
            );
        }
        let metadata =
            std::fs::metadata(&absolute).with_context(|| format!("--include {}: cannot read it", include.display()))?;
        if metadata.is_dir() {
            add_folder(&absolute, &mut entries)?;
        } else {
            entries.insert(absolute.clone(), absolute);
        }
    }
    let programs: Vec<PathBuf> = entries.values().filter(|source| is_elf(source)).cloned().collect();
    for program in &programs {
        for library in shared_libraries(program)? {
            entries.entry(library.clone()).or_insert(library);
        }
    }
    let entries: Vec<Entry> = entries.into_iter().map(|(path, source)| Entry { path, source }).collect();
    let fingerprint = fingerprint(&entries)?;

    let docker = DockerProvisioner::connect().await.context("`mayfly image build` imports the image into Docker")?;
    #[derive(Serialize)]
    struct Built {
        tag: String,
        fingerprint: String,
        files: usize,
        imported: bool,
        image: Option<String>,
    }
    if docker.image_label(&args.tag, FINGERPRINT_LABEL).await?.as_deref() == Some(fingerprint.as_str()) {
        let built = Built { tag: args.tag, fingerprint, files: entries.len(), imported: false, image: None };
        return output.emit(&built, || format!("image {} is up to date ({} files)", built.tag, built.files));
    }
    let tarball = std::env::temp_dir().join(format!("mayfly-image-{}.tar", std::process::id()));
    let written = write_root_filesystem(&tarball, &entries);
    let imported = match written {
        Ok(()) => {
            docker
                .import_root_filesystem(
                    &tarball,
                    &args.tag,
                    vec![
                        format!("USER {USER_ID}:{USER_ID}"),
                        "ENV PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
                        "WORKDIR /tmp".to_owned(),
                        format!("LABEL {FINGERPRINT_LABEL}={fingerprint}"),
                        format!("CMD [\"{MAYFLY_PATH}\", \"--help\"]"),
                    ],
                )
                .await
        }
        Err(error) => {
            std::fs::remove_file(&tarball).ok();
            return Err(error);
        }
    };
    std::fs::remove_file(&tarball).ok();
    let image = imported?;
    let built = Built { tag: args.tag, fingerprint, files: entries.len(), imported: true, image: Some(image) };
    output.emit(&built, || format!("built image {} ({} files)", built.tag, built.files))
}

/// Every file under `folder`, at its own path.
fn add_folder(folder: &Path, entries: &mut BTreeMap<PathBuf, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(folder).with_context(|| format!("cannot list {}", folder.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", folder.display()))?.path();
        let metadata = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.is_dir() {
            add_folder(&path, entries)?;
        } else if metadata.is_file() {
            entries.insert(path.clone(), path);
        }
    }
    Ok(())
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// The shared libraries (and the loader) `ldd` lists for `program`; none for a static one.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let listed = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .context("cannot run `ldd` to find the shared libraries of the image's programs (install libc-bin)")?;
    let text = String::from_utf8_lossy(&listed.stdout);
    if !listed.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&listed.stderr).contains("not a dynamic")
        {
            return Ok(Vec::new());
        }
        bail!("`ldd {}` failed: {}", program.display(), String::from_utf8_lossy(&listed.stderr).trim());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("`ldd {}` cannot find a library it needs: {line}", program.display());
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
        let path = line.split_once("=>").map_or(line, |(_, after)| after.trim());
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// SHA-256 over every entry's path, size and modification time.
fn fingerprint(entries: &[Entry]) -> Result<String> {
    let mut hasher = Sha256::new();
    for entry in entries {
        let metadata =
            std::fs::metadata(&entry.source).with_context(|| format!("cannot read {}", entry.source.display()))?;
        hasher.update(entry.path.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(metadata.len().to_le_bytes());
        hasher.update(metadata.mtime().to_le_bytes());
        hasher.update(metadata.mtime_nsec().to_le_bytes());
    }
    hasher.update(format!("uid {USER_ID}").as_bytes());
    // The archive's own layout: 2 since every folder on the way to a file is in it.
    hasher.update(b"layout 2");
    Ok(hex::encode(hasher.finalize()))
}

/// The image's root file system as a tar archive at `tarball`.
fn write_root_filesystem(tarball: &Path, entries: &[Entry]) -> Result<()> {
    let file = std::fs::File::create(tarball).with_context(|| format!("cannot create {}", tarball.display()))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add_text = |path: &str, mode: u32, text: &str| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        archive.append_data(&mut header, path, text.as_bytes()).with_context(|| format!("cannot add {path}"))
    };
    add_text(
        "etc/passwd",
        0o644,
        &format!(
            "root:x:0:0:root:/root:/sbin/nologin\nmayfly:x:{USER_ID}:{USER_ID}:mayfly worker:/tmp:/sbin/nologin\n"
        ),
    )?;
    add_text("etc/group", 0o644, &format!("root:x:0:\nmayfly:x:{USER_ID}:\n"))?;
    let mut folder = |path: &str, mode: u32| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(mode);
        header.set_cksum();
        archive.append_data(&mut header, path, std::io::empty()).with_context(|| format!("cannot add {path}"))
    };
    folder("tmp/", 0o1777)?;
    // Every folder on the way to a file, readable by all: an engine fills a
    // folder a layer leaves out with mode 0600 (Docker's vfs driver does), so
    // the image's user could not reach the files below it.
    let mut folders: BTreeSet<PathBuf> = ["etc", "usr/local/bin"].into_iter().map(PathBuf::from).collect();
    for entry in entries {
        let inside = entry.path.strip_prefix("/").unwrap_or(&entry.path);
        folders
            .extend(inside.ancestors().skip(1).filter(|folder| !folder.as_os_str().is_empty()).map(Path::to_path_buf));
    }
    let with_parents: BTreeSet<PathBuf> = folders
        .iter()
        .flat_map(|folder| folder.ancestors().filter(|f| !f.as_os_str().is_empty()))
        .map(Path::to_path_buf)
        .collect();
    for path in with_parents.iter().filter(|path| path.as_path() != Path::new("tmp")) {
        folder(&format!("{}/", path.display()), 0o755)?;
    }
    for entry in entries {
        let inside = entry.path.strip_prefix("/").unwrap_or(&entry.path);
        let cannot_add = || format!("cannot add {} to the image", entry.source.display());
        let file = std::fs::File::open(&entry.source).with_context(cannot_add)?;
        let metadata = file.metadata().with_context(cannot_add)?;
        // A plain header: the engine refuses the GNU sparse entries `append_path` makes of sparse files.
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&metadata, tar::HeaderMode::Deterministic);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(metadata.len());
        header.set_cksum();
        archive.append_data(&mut header, inside, file).with_context(cannot_add)?;
    }
    archive
        .into_inner()
        .and_then(|mut writer| std::io::Write::flush(&mut writer))
        .context("cannot finish the image archive")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lists_the_loader_and_libraries_of_a_dynamic_program() {
        let libraries = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libraries:?}");
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libraries:?}");
        assert!(libraries.iter().all(|l| l.is_absolute()));
    }

    #[test]
    fn every_folder_on_the_way_to_a_file_is_in_the_image_readable_by_all() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handler");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let entries = vec![
            Entry { path: PathBuf::from("/opt/lab/bin/handler"), source: file.clone() },
            Entry { path: PathBuf::from("/usr/local/bin/mayfly"), source: file },
        ];
        let tarball = dir.path().join("root.tar");
        write_root_filesystem(&tarball, &entries).unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
        let mut folders = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.header().entry_type() == tar::EntryType::Directory {
                let path = entry.path().unwrap().to_string_lossy().trim_end_matches('/').to_owned();
                folders.insert(path, entry.header().mode().unwrap());
            }
        }
        for folder in ["etc", "opt", "opt/lab", "opt/lab/bin", "usr", "usr/local", "usr/local/bin"] {
            assert_eq!(folders.get(folder), Some(&0o755), "{folder} in {folders:?}");
        }
        assert_eq!(folders.get("tmp"), Some(&0o1777));
    }

    #[test]
    fn the_fingerprint_changes_with_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "one").unwrap();
        let entries = vec![Entry { path: PathBuf::from("/f"), source: file.clone() }];
        let first = fingerprint(&entries).unwrap();
        assert_eq!(first, fingerprint(&entries).unwrap());
        std::fs::write(&file, "longer").unwrap();
        assert_ne!(first, fingerprint(&entries).unwrap());
    }
}
